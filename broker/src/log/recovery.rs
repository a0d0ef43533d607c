//! Opening a partition directory: listing it, checking and repairing its segments and
//! indexes, and recovering the leader epochs.
//!
//! The rules are in the [module documentation](super#recovery).

use super::epochs::{self, Epochs, Loaded};
use super::index::{self, IndexEntry};
use super::reset;
use super::segment::{self, Bounds, Segment, Stretch, HEADER_LEN};
use super::{
    clamp_epochs, fsync_dir, io_err, parse_name, remove, DamagedRange, LogConfig, LogError,
    PartitionLog, Producers, Recovery,
};
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

/// The segments of a directory, sorted by base offset. Removes `*.tmp` leftovers and
/// index files whose segment is gone.
pub(super) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut segments = Vec::new();
    let mut indexes = Vec::new();
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".tmp") {
            if parse_name(stem, ".log").is_some()
                || parse_name(stem, ".index").is_some()
                || stem == epochs::FILE_NAME
                || stem == reset::FILE_NAME
            {
                remove(&entry.path())?;
                removed = true;
            }
        } else if let Some(base) = parse_name(&name, ".log") {
            segments.push((base, entry.path()));
        } else if let Some(base) = parse_name(&name, ".index") {
            indexes.push((base, entry.path()));
        }
    }
    // Indexes whose segment is gone (retention or truncation stopped in between).
    let bases: BTreeSet<u64> = segments.iter().map(|(base, _)| *base).collect();
    for (base, path) in indexes {
        if !bases.contains(&base) {
            remove(&path)?;
            removed = true;
        }
    }
    if removed {
        fsync_dir(dir)?;
    }
    segments.sort_unstable();
    Ok(segments)
}

/// What checking one segment found.
struct Checked {
    /// Bytes up to the end of the last good batch.
    valid_len: u64,
    /// The offset after the last good batch.
    next_offset: u64,
    /// Good batches found by a full scan (for a quick check: at least 1).
    batches: u64,
    /// `max_timestamp_ms` of the last good batch.
    last_timestamp_ms: Option<u64>,
    /// Why the segment has to be cut at `valid_len`, if it does (nothing good after it).
    cut: Option<String>,
    /// Damaged stretches with good batches after them in the segment.
    stretches: Vec<Stretch>,
    /// The index, rebuilt or loaded (and completed).
    index: Vec<IndexEntry>,
    /// Whether `index` differs from the index file.
    index_changed: bool,
    /// Full scans only: `(epoch, base offset)` of each batch whose epoch differs from the
    /// previous batch's (the first batch included).
    epochs: Option<Epochs>,
    /// Full scans only: the last good batch of each producer.
    producers: Option<Producers>,
}

/// Reads a whole segment, checking every batch, and rebuilds its index.
fn full_scan(
    file: &File,
    path: &Path,
    file_len: u64,
    bounds: Bounds,
    interval: u32,
) -> Result<Checked, LogError> {
    let base = bounds.base;
    let mut index = Vec::new();
    let mut epochs: Epochs = Vec::new();
    let mut producers = Producers::new();
    let mut last_timestamp_ms = None;
    let end = segment::scan(
        file,
        path,
        file_len,
        HEADER_LEN,
        base,
        bounds,
        |pos, header| {
            index::maybe_add(&mut index, interval, base, pos, header.base_offset);
            if epochs.last().map(|&(epoch, _)| epoch) != Some(header.leader_epoch) {
                epochs.push((header.leader_epoch, header.base_offset));
            }
            segment::note_producer(&mut producers, header);
            last_timestamp_ms = Some(header.max_timestamp_ms);
        },
    )?;
    Ok(Checked {
        valid_len: end.valid_len,
        next_offset: end.next_offset,
        batches: end.batches,
        last_timestamp_ms,
        cut: end.cut,
        stretches: end.stretches,
        index,
        index_changed: true,
        epochs: Some(epochs),
        producers: Some(producers),
    })
}

/// Checks an earlier segment through its index file (see the module documentation, rule 3).
/// `None` when anything is not as it should be: the caller then scans the segment fully,
/// which decides between a bad index and a damaged segment.
fn quick_check(
    file: &File,
    path: &Path,
    file_len: u64,
    bounds: Bounds,
    interval: u32,
) -> Result<Option<Checked>, LogError> {
    let base = bounds.base;
    if file_len == HEADER_LEN {
        return Ok(None);
    }
    let index_path = path.with_file_name(index::file_name(base));
    let Some(mut index) = index::load(&index_path, file_len) else {
        return Ok(None);
    };
    let loaded = index.len();
    if let Err(why) = segment::verify_batch_at(file, path, HEADER_LEN, file_len, base)? {
        tracing::warn!(path = %path.display(), "{why}; scanning the whole segment");
        return Ok(None);
    }
    let (start, expected) = match index.last() {
        Some(entry) => {
            let (pos, entry_base) = (
                u64::from(entry.position),
                base + u64::from(entry.rel_offset),
            );
            if let Err(why) = segment::verify_batch_at(file, path, pos, file_len, entry_base)? {
                tracing::warn!(
                    path = %index_path.display(),
                    "the last index entry is wrong ({why}); rebuilding the index"
                );
                return Ok(None);
            }
            (pos, entry_base)
        }
        None => (HEADER_LEN, base),
    };
    let mut last_timestamp_ms = None;
    let end = segment::scan(
        file,
        path,
        file_len,
        start,
        expected,
        bounds,
        |pos, header| {
            index::maybe_add(&mut index, interval, base, pos, header.base_offset);
            last_timestamp_ms = Some(header.max_timestamp_ms);
        },
    )?;
    if end.cut.is_some() || !end.stretches.is_empty() || end.batches == 0 {
        return Ok(None);
    }
    Ok(Some(Checked {
        valid_len: end.valid_len,
        next_offset: end.next_offset,
        batches: end.batches,
        last_timestamp_ms,
        cut: None,
        stretches: Vec::new(),
        index_changed: index.len() != loaded,
        index,
        epochs: None,
        producers: None,
    }))
}

/// Creates `dir` if needed (making its entry durable) and recovers the log in it.
pub(super) fn open(dir: &Path, config: LogConfig) -> Result<(PartitionLog, Recovery), LogError> {
    config.validate(dir)?;
    pehra_shared::durable::create_dir_durably(dir, "create the partition directory")?;
    if let Some(start_offset) = reset::load(dir)? {
        tracing::warn!(
            dir = %dir.display(),
            "finishing an interrupted reset of the log to offset {start_offset}"
        );
        reset::finish(dir, start_offset, list(dir)?)?;
    }
    let mut listing = list(dir)?;
    if listing.is_empty() {
        let fresh = Segment::create(dir, 0)?;
        listing.push((fresh.base, fresh.path));
    }
    let interval = config.index_interval_bytes;

    let mut segments: Vec<Segment> = Vec::with_capacity(listing.len());
    // Planned changes, made only once every check passed.
    let mut truncate: Option<(usize, u64)> = None;
    let mut delete: &[(u64, PathBuf)] = &[];
    let mut index_writes: Vec<usize> = Vec::new();
    let mut truncated_bytes = 0;
    let mut last_epochs: Epochs = Vec::new();
    let mut damage: Vec<DamagedRange> = Vec::new();
    // The producers of each segment that was scanned fully.
    let mut scanned_producers: Vec<Option<Producers>> = Vec::with_capacity(listing.len());

    for (i, (base, path)) in listing.iter().enumerate() {
        let base = *base;
        if let Some(prev) = segments.last() {
            if prev.next_offset != base {
                return Err(LogError::Corrupt {
                    path: path.clone(),
                    detail: format!(
                        "it starts at offset {base}, but the previous segment {} ends before \
                         offset {}: offsets must be contiguous",
                        prev.path.display(),
                        prev.next_offset
                    ),
                });
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err("open", path))?;
        let file_len = segment::check_header(&file, path)?;
        if file_len > u64::from(u32::MAX) {
            return Err(LogError::Corrupt {
                path: path.clone(),
                detail: format!("it is {file_len} bytes long, more than a segment can be"),
            });
        }
        let later = &listing[i + 1..];
        let bounds = Bounds {
            base,
            offset_limit: later.first().map_or(u64::MAX, |&(next, _)| next),
        };
        // The last two segments are scanned fully: the producer state comes from them.
        let quick = if later.len() < 2 {
            None
        } else {
            quick_check(&file, path, file_len, bounds, interval)?
        };
        let fully_scanned = quick.is_none();
        let mut checked = match quick {
            Some(checked) => checked,
            None => full_scan(&file, path, file_len, bounds, interval)?,
        };
        if fully_scanned && !later.is_empty() {
            let index_path = path.with_file_name(index::file_name(base));
            checked.index_changed = !index::file_holds(&index_path, &checked.index);
        }
        for stretch in checked.stretches.drain(..) {
            damage.push(damaged_range(path, base, stretch));
        }
        let tail_damage = checked.cut.clone().or_else(|| {
            (!later.is_empty() && checked.batches == 0)
                .then(|| "it holds no batch but is not the last segment".to_owned())
        });
        let mut is_last = later.is_empty();
        if let Some(why) = tail_damage {
            match first_with_batches(later)? {
                // Good batches follow in a later segment: the damage runs to the end of this
                // one, and is kept.
                Some(later_path) => {
                    let (next_base, _) = later[0];
                    if next_base <= checked.next_offset {
                        return Err(LogError::Corrupt {
                            path: path.clone(),
                            detail: format!(
                                "{why}, and the next segment starts at offset {next_base}, not \
                                 after offset {}: the offsets do not fit",
                                checked.next_offset
                            ),
                        });
                    }
                    tracing::debug!(
                        path = %path.display(),
                        "{why}; the later segment {} holds batches",
                        later_path.display()
                    );
                    damage.push(DamagedRange {
                        path: path.clone(),
                        segment_base: base,
                        position: checked.valid_len,
                        end_position: file_len,
                        first_offset: checked.next_offset,
                        end_offset: next_base,
                        detail: why,
                    });
                    checked.valid_len = file_len;
                    checked.next_offset = next_base;
                }
                // Nothing good after it: the log's torn tail.
                None => {
                    if !later.is_empty() {
                        tracing::warn!(
                            path = %path.display(),
                            "{why}; the later segments are empty, so this is the log's tail"
                        );
                        delete = later;
                        is_last = true;
                    }
                    if checked.cut.is_some() {
                        truncated_bytes = file_len - checked.valid_len;
                        tracing::warn!(
                            path = %path.display(),
                            "cutting {truncated_bytes} bytes from the log tail: {why} (a write \
                             torn by a crash: no good batch follows it)"
                        );
                        truncate = Some((i, checked.valid_len));
                    }
                }
            }
        }
        if is_last {
            last_epochs = checked
                .epochs
                .take()
                .expect("the last segment is scanned fully");
        } else if checked.index_changed {
            index_writes.push(i);
        }
        scanned_producers.push(checked.producers);
        segments.push(Segment {
            base,
            path: path.clone(),
            file,
            size: checked.valid_len,
            next_offset: checked.next_offset,
            last_timestamp_ms: checked.last_timestamp_ms,
            index: checked.index,
        });
        if is_last {
            break;
        }
    }

    // The producer state: the last two segments, the last one's batches after the second last's. The
    // second last was scanned fully unless recovery cut the log short of later segments.
    let mut producers = Producers::new();
    let from = segments.len().saturating_sub(2);
    for (segment, scanned) in segments[from..].iter().zip(&mut scanned_producers[from..]) {
        match scanned.take() {
            Some(found) => {
                for (id, window) in found {
                    let merged = producers.entry(id).or_default();
                    for entry in window.0 {
                        merged.push(entry);
                    }
                }
            }
            None => segment.collect_producers(&mut producers, &damage)?,
        }
    }

    let stored_epochs = epochs::load(dir)?;
    let epochs = recover_epochs(
        dir,
        &stored_epochs,
        &segments,
        &last_epochs,
        &mut damage,
        interval,
    )?;

    // Only now change files: a hard error above leaves the directory as it was.
    if !delete.is_empty() {
        for (base, path) in delete.iter().rev() {
            remove(path)?;
            remove(&dir.join(index::file_name(*base)))?;
        }
        fsync_dir(dir)?;
    }
    let last = segments.last().expect("at least one segment");
    match truncate {
        Some((i, len)) => {
            debug_assert_eq!(i, segments.len() - 1);
            last.file
                .set_len(len)
                .and_then(|()| last.file.sync_all())
                .map_err(io_err("truncate", &last.path))?;
        }
        // A process crash leaves written batches in the page cache only: make them durable.
        None => last
            .file
            .sync_data()
            .map_err(io_err("fdatasync", &last.path))?,
    }
    for i in index_writes {
        let segment = &segments[i];
        if let Err(e) = index::write(dir, segment.base, &segment.index) {
            tracing::warn!("{e} (the index stays in memory and is rebuilt at the next open)");
        }
    }
    let unchanged = match &stored_epochs {
        Loaded::Valid(stored) => *stored == epochs,
        Loaded::Missing => epochs.is_empty(),
        Loaded::Damaged => false,
    };
    if !unchanged {
        epochs::store(dir, &epochs)?;
    }

    let log_end = last.next_offset;
    let recovery = Recovery {
        log_start_offset: segments[0].base,
        log_end_offset: log_end,
        truncated_bytes,
        segments: segments.len(),
    };
    for range in &damage {
        range.report("opening the log");
    }
    tracing::debug!(
        dir = %dir.display(),
        "opened partition log: offsets {} to {log_end}, {} segments, {truncated_bytes} bytes cut",
        recovery.log_start_offset,
        recovery.segments
    );
    let log = PartitionLog {
        dir: dir.to_owned(),
        config,
        segments,
        log_end,
        flushed: log_end,
        dirty: false,
        unflushed_batches: 0,
        epochs,
        producers,
        scratch: Vec::new(),
        poisoned: false,
        damage,
        scrub: None,
    };
    Ok((log, recovery))
}

/// The first of `later` segments that holds a batch (by its length).
fn first_with_batches(later: &[(u64, PathBuf)]) -> Result<Option<&Path>, LogError> {
    for (_, path) in later {
        let file = File::open(path).map_err(io_err("open", path))?;
        if segment::check_header(&file, path)? > HEADER_LEN {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Appends `(epoch, start)` changes to `epochs`, skipping repeats of the last epoch. `None`
/// if an epoch would go down.
pub(super) fn extend_epochs(mut epochs: Epochs, changes: &[(u32, u64)]) -> Option<Epochs> {
    for &(epoch, start) in changes {
        match epochs.last() {
            Some(&(last, _)) if last == epoch => {}
            Some(&(last, _)) if last > epoch => return None,
            _ => epochs.push((epoch, start)),
        }
    }
    Some(epochs)
}

/// The leader epochs of the recovered log (rule 5 of the module documentation).
/// `last_epochs` are the epoch changes the full scan of the last segment saw.
///
/// Rebuilding reads every batch header of the earlier segments, whose middles open did
/// not read (rule 3): a header found damaged there is damage like any other. The segment
/// is then scanned whole, its damage recorded in `damage` (kept in log order) and its
/// epochs taken from its good batches. (Found by the `broker_log` fuzz target: a log
/// opened, took an append that rolled a segment, and then refused to open again.)
fn recover_epochs(
    dir: &Path,
    stored: &Loaded,
    segments: &[Segment],
    last_epochs: &[(u32, u64)],
    damage: &mut Vec<DamagedRange>,
    interval: u32,
) -> Result<Epochs, LogError> {
    let log_start = segments[0].base;
    // The epochs that start in a damaged range of the last segment are not in its scan:
    // they come from the checkpoint, when it is usable.
    let mut last_epochs = last_epochs.to_vec();
    if let Loaded::Valid(stored) = stored {
        let last_base = segments.last().expect("at least one segment").base;
        for range in damage.iter().filter(|r| r.segment_base == last_base) {
            last_epochs.extend(stored.iter().filter(|&&(_, start)| range.contains(start)));
        }
        last_epochs.sort_by_key(|&(_, start)| start);
    }
    let last_epochs = &last_epochs[..];
    let last = segments.last().expect("at least one segment");
    let earlier = &segments[..segments.len() - 1];
    let from_checkpoint = if earlier.is_empty() {
        Some(Vec::new())
    } else {
        match stored {
            Loaded::Valid(stored) => {
                let mut stored = stored.clone();
                stored.retain(|&(_, start)| start < last.base);
                clamp_epochs(&mut stored, log_start, last.base);
                // The epoch in force at the log start must be known.
                stored
                    .first()
                    .is_some_and(|&(_, start)| start == log_start)
                    .then_some(stored)
            }
            Loaded::Missing | Loaded::Damaged => None,
        }
    };
    if let Some(epochs) = from_checkpoint.and_then(|stored| extend_epochs(stored, last_epochs)) {
        return Ok(epochs);
    }
    tracing::warn!(
        dir = %dir.display(),
        "the leader-epoch checkpoint does not match the log; rebuilding it from batch headers"
    );
    let mut epochs = Vec::new();
    for (i, segment) in earlier.iter().enumerate() {
        let mut changes = Vec::new();
        let walked = segment.walk_headers(damage, |_, header| {
            changes.push((header.leader_epoch, header.base_offset));
        });
        match walked {
            Ok(()) => {}
            Err(LogError::Corrupt { path, detail }) if path == segment.path => {
                tracing::warn!(path = %path.display(), "{detail}; scanning the whole segment");
                let next_base = segments[i + 1].base;
                changes = scan_for_damage(segment, next_base, interval, damage)?;
            }
            Err(e) => return Err(e),
        }
        let mut down = None;
        for change in changes {
            match extend_epochs(std::mem::take(&mut epochs), &[change]) {
                Some(extended) => epochs = extended,
                None => {
                    down = down.or(Some(change.1));
                    break;
                }
            }
        }
        if let Some(near) = down {
            return Err(epoch_down(&segment.path, near));
        }
    }
    extend_epochs(epochs, last_epochs).ok_or_else(|| epoch_down(&last.path, last.base))
}

/// Scans the earlier segment `segment` (the next one starts at `next_base`) whole,
/// adds the damage it finds to `damage` (in log order), and returns the epoch changes of
/// its good batches.
fn scan_for_damage(
    segment: &Segment,
    next_base: u64,
    interval: u32,
    damage: &mut Vec<DamagedRange>,
) -> Result<Vec<(u32, u64)>, LogError> {
    let bounds = Bounds {
        base: segment.base,
        offset_limit: next_base,
    };
    let checked = full_scan(&segment.file, &segment.path, segment.size, bounds, interval)?;
    let known = |position: u64, damage: &[DamagedRange]| {
        damage
            .iter()
            .any(|r| r.segment_base == segment.base && r.position == position)
    };
    for stretch in checked.stretches {
        if !known(stretch.position, damage) {
            damage.push(damaged_range(&segment.path, segment.base, stretch));
        }
    }
    if let Some(why) = checked.cut {
        // Damage to the end of the segment, with batches after it (in later segments).
        if !known(checked.valid_len, damage) {
            damage.push(DamagedRange {
                path: segment.path.clone(),
                segment_base: segment.base,
                position: checked.valid_len,
                end_position: segment.size,
                first_offset: checked.next_offset,
                end_offset: next_base,
                detail: why,
            });
        }
    }
    damage.sort_by_key(|r| (r.segment_base, r.position));
    Ok(checked.epochs.unwrap_or_default())
}

/// The error for a leader epoch that goes down in the log.
fn epoch_down(path: &Path, near: u64) -> LogError {
    LogError::Corrupt {
        path: path.to_owned(),
        detail: format!("the leader epoch goes down at or after offset {near}"),
    }
}

/// The damaged range a scan of the segment `segment_base` at `path` found.
fn damaged_range(path: &Path, segment_base: u64, stretch: Stretch) -> DamagedRange {
    DamagedRange {
        path: path.to_owned(),
        segment_base,
        position: stretch.position,
        end_position: stretch.end_position,
        first_offset: stretch.first_offset,
        end_offset: stretch.end_offset,
        detail: stretch.detail,
    }
}
