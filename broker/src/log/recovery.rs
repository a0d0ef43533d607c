//! Opening a partition directory: listing it, checking and repairing its segments and
//! indexes, and recovering the leader epochs.
//!
//! The rules are in the [module documentation](super#recovery).

use super::epochs::{self, Epochs, Loaded};
use super::index::{self, IndexEntry, INDEXES};
use super::reset;
use super::segment::{self, Bounds, Segment, Stretch, HEADER_LEN, SEGMENTS};
use super::{
    clamp_epochs, io_err, DamagedRange, LogConfig, LogError, PartitionLog, Producers, Recovery,
};
use pehra_storage::{Plan, Poison};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// The segment files of `dir`, sorted by base offset.
pub(super) fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    Ok(pehra_storage::list(dir, &[SEGMENTS], &[])?.numbered(SEGMENTS))
}

/// What a partition directory holds, as read: nothing is changed while it is made.
struct Survey {
    /// Every segment, by base offset, checked.
    segments: Vec<Surveyed>,
    /// Index files whose segment is gone (retention or truncation stopped in between),
    /// and `*.tmp` leftovers of an interrupted creation.
    strays: Vec<PathBuf>,
    /// The leader-epoch checkpoint.
    stored_epochs: Loaded,
}

/// One segment as read.
struct Surveyed {
    /// Its base offset (from its name).
    base: u64,
    /// The file.
    path: PathBuf,
    /// Open for reading and writing.
    file: File,
    /// Its length.
    file_len: u64,
    /// What checking it found.
    checked: Checked,
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

/// Reads `dir`: lists it and checks every segment (the earlier ones through their index
/// when it agrees, the last two whole: rule 3 of the module documentation).
fn survey(dir: &Path, interval: u32) -> Result<Survey, LogError> {
    let singles = [epochs::FILE_NAME, reset::FILE_NAME];
    let listing = pehra_storage::list(dir, &[SEGMENTS, INDEXES], &singles)?;
    let files = listing.numbered(SEGMENTS);
    let bases: BTreeSet<u64> = files.iter().map(|(base, _)| *base).collect();
    let mut strays = listing.leftovers.clone();
    strays.extend(
        listing
            .numbered(INDEXES)
            .into_iter()
            .filter(|(base, _)| !bases.contains(base))
            .map(|(_, path)| path),
    );
    let mut segments = Vec::with_capacity(files.len());
    for (i, (base, path)) in files.iter().enumerate() {
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
        let later = &files[i + 1..];
        let bounds = Bounds {
            base: *base,
            offset_limit: later.first().map_or(u64::MAX, |&(next, _)| next),
        };
        // The last two segments are scanned fully: the producer state comes from them.
        let quick = if later.len() < 2 {
            None
        } else {
            quick_check(&file, path, file_len, bounds, interval)?
        };
        let checked = match quick {
            Some(checked) => checked,
            None => {
                let mut checked = full_scan(&file, path, file_len, bounds, interval)?;
                if !later.is_empty() {
                    let index_path = path.with_file_name(index::file_name(*base));
                    checked.index_changed = !index::file_holds(&index_path, &checked.index);
                }
                checked
            }
        };
        segments.push(Surveyed {
            base: *base,
            path: path.clone(),
            file,
            file_len,
            checked,
        });
    }
    Ok(Survey {
        segments,
        strays,
        stored_epochs: epochs::load(dir)?,
    })
}

/// What recovery decided about the segments.
struct Planned {
    /// The changes to make: strays and the empty segments after a torn tail deleted, the
    /// torn tail cut (or the last segment's data synced).
    plan: Plan,
    /// The segments kept, in order.
    segments: Vec<Segment>,
    /// For each kept segment, the last batch of each producer, if it was scanned whole.
    scanned_producers: Vec<Option<Producers>>,
    /// The epoch changes the full scan of the last kept segment saw.
    last_epochs: Epochs,
    /// The damaged ranges the log keeps (in log order).
    damage: Vec<DamagedRange>,
    /// The kept segments whose index file must be written again.
    index_writes: Vec<usize>,
    /// Bytes the plan cuts from the tail.
    truncated_bytes: u64,
}

/// Decides what recovery keeps and changes from what [`survey`] read (rules 1 to 4 of the
/// module documentation): no I/O.
fn plan_segments(survey: Vec<Surveyed>, strays: Vec<PathBuf>) -> Result<Planned, LogError> {
    let mut planned = Planned {
        plan: Plan::new(),
        segments: Vec::with_capacity(survey.len()),
        scanned_producers: Vec::with_capacity(survey.len()),
        last_epochs: Vec::new(),
        damage: Vec::new(),
        index_writes: Vec::new(),
        truncated_bytes: 0,
    };
    planned.plan.remove_all(strays);
    let facts: Vec<(u64, PathBuf, u64)> = survey
        .iter()
        .map(|s| (s.base, s.path.clone(), s.file_len))
        .collect();
    let mut truncate: Option<u64> = None;
    let mut delete: &[(u64, PathBuf, u64)] = &[];
    for (i, surveyed) in survey.into_iter().enumerate() {
        let Surveyed {
            base,
            path,
            file,
            file_len,
            mut checked,
        } = surveyed;
        if let Some(prev) = planned.segments.last() {
            if prev.next_offset != base {
                return Err(LogError::Corrupt {
                    path,
                    detail: format!(
                        "it starts at offset {base}, but the previous segment {} ends before \
                         offset {}: offsets must be contiguous",
                        prev.path.display(),
                        prev.next_offset
                    ),
                });
            }
        }
        let later = &facts[i + 1..];
        for stretch in checked.stretches.drain(..) {
            planned.damage.push(damaged_range(&path, base, stretch));
        }
        let tail_damage = checked.cut.clone().or_else(|| {
            (!later.is_empty() && checked.batches == 0)
                .then(|| "it holds no batch but is not the last segment".to_owned())
        });
        let mut is_last = later.is_empty();
        if let Some(why) = tail_damage {
            // The first later segment that holds a batch (by its length).
            match later.iter().find(|(_, _, len)| *len > HEADER_LEN) {
                // Good batches follow in a later segment: the damage runs to the end of this
                // one, and is kept.
                Some((_, later_path, _)) => {
                    let next_base = later[0].0;
                    if next_base <= checked.next_offset {
                        return Err(LogError::Corrupt {
                            path,
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
                    planned.damage.push(DamagedRange {
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
                        planned.truncated_bytes = file_len - checked.valid_len;
                        tracing::warn!(
                            path = %path.display(),
                            "cutting {} bytes from the log tail: {why} (a write torn by a \
                             crash: no good batch follows it)",
                            planned.truncated_bytes
                        );
                        truncate = Some(checked.valid_len);
                    }
                }
            }
        }
        if is_last {
            planned.last_epochs = checked
                .epochs
                .take()
                .expect("the last segment is scanned fully");
        } else if checked.index_changed {
            planned.index_writes.push(i);
        }
        planned.scanned_producers.push(checked.producers);
        planned.segments.push(Segment {
            base,
            path,
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

    // The empty segments after a torn tail go newest first, with their indexes.
    planned.plan.remove_all(
        delete.iter().rev().flat_map(|(base, path, _)| {
            [path.clone(), path.with_file_name(index::file_name(*base))]
        }),
    );
    let last = planned.segments.last().expect("at least one segment");
    match truncate {
        Some(len) => planned.plan.truncate(last.path.clone(), len),
        // A process crash leaves written batches in the page cache only: make them durable.
        None => planned.plan.sync_data(last.path.clone()),
    }
    Ok(planned)
}

/// Creates `dir` if needed (making its entry durable) and recovers the log in it: finishes
/// an interrupted reset, reads the directory ([`survey`]), decides ([`plan_segments`]), reads
/// the producer state and the leader epochs the decision needs, and only then changes
/// files, so a refusal leaves the directory as it was.
pub(super) fn open(dir: &Path, config: LogConfig) -> Result<(PartitionLog, Recovery), LogError> {
    config.validate(dir)?;
    pehra_storage::create_dir_durably(dir, "create the partition directory")?;
    if let Some(start_offset) = reset::load(dir)? {
        tracing::warn!(
            dir = %dir.display(),
            "finishing an interrupted reset of the log to offset {start_offset}"
        );
        reset::finish(dir, start_offset, segment_files(dir)?)?;
    }
    if segment_files(dir)?.is_empty() {
        Segment::create(dir, 0)?;
    }
    let interval = config.index_interval_bytes;
    let Survey {
        segments,
        strays,
        stored_epochs,
    } = survey(dir, interval)?;
    let Planned {
        mut plan,
        segments,
        mut scanned_producers,
        last_epochs,
        mut damage,
        index_writes,
        truncated_bytes,
    } = plan_segments(segments, strays)?;

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

    let epochs = recover_epochs(
        dir,
        &stored_epochs,
        &segments,
        &last_epochs,
        &mut damage,
        interval,
    )?;
    let unchanged = match &stored_epochs {
        Loaded::Valid(stored) => *stored == epochs,
        Loaded::Missing => epochs.is_empty(),
        Loaded::Damaged => false,
    };
    if !unchanged {
        plan.replace(epochs::FILE_NAME, epochs::encode(&epochs));
    }

    // Only now change files: a refusal above leaves the directory as it was.
    plan.apply(dir)?;
    for i in index_writes {
        let segment = &segments[i];
        if let Err(e) = index::write(dir, segment.base, &segment.index) {
            tracing::warn!("{e} (the index stays in memory and is rebuilt at the next open)");
        }
    }

    let last = segments.last().expect("at least one segment");
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
        poison: Poison::default(),
        damage,
        scrub: None,
    };
    Ok((log, recovery))
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

#[cfg(test)]
mod tests {
    //! The decisions alone, on a survey made by hand (the files behind it are `/dev/null`:
    //! a planner that read or wrote them would see nothing). `log::tests` opens real
    //! directories through the whole of `open`.

    use super::*;
    use pehra_storage::Change;

    /// Segment `base` as read: `batches` good batches ending at byte `valid_len` of
    /// `file_len`, then damage if `cut`.
    fn surveyed(base: u64, batches: u64, valid_len: u64, file_len: u64, cut: bool) -> Surveyed {
        Surveyed {
            base,
            path: PathBuf::from(format!("/p/{}", segment::file_name(base))),
            file: File::open("/dev/null").unwrap(),
            file_len,
            checked: Checked {
                valid_len,
                next_offset: base + batches,
                batches,
                last_timestamp_ms: None,
                cut: cut.then(|| "torn".to_owned()),
                stretches: Vec::new(),
                index: Vec::new(),
                index_changed: false,
                epochs: Some(vec![(1, base)]),
                producers: Some(Producers::new()),
            },
        }
    }

    #[test]
    fn a_torn_tail_with_empty_segments_after_it_is_cut_and_they_go_newest_first() {
        let survey = vec![
            surveyed(0, 5, 500, 520, true),
            surveyed(5, 0, HEADER_LEN, HEADER_LEN, false),
            surveyed(5, 0, HEADER_LEN, HEADER_LEN, false),
        ];
        // (Two empty segments with one base cannot be listed; the planner does not care.)
        let strays = vec![PathBuf::from("/p/00000000000000000009.index")];
        let planned = plan_segments(survey, strays).unwrap();
        assert_eq!(planned.segments.len(), 1);
        assert_eq!(planned.truncated_bytes, 20);
        assert_eq!(planned.last_epochs, [(1, 0)]);
        let seg = |base| PathBuf::from(format!("/p/{}", segment::file_name(base)));
        let idx = |base| PathBuf::from(format!("/p/{}", index::file_name(base)));
        assert_eq!(
            planned.plan.changes(),
            [
                Change::Remove(idx(9)),
                Change::SyncDir,
                Change::Remove(seg(5)),
                Change::Remove(idx(5)),
                Change::Remove(seg(5)),
                Change::Remove(idx(5)),
                Change::SyncDir,
                Change::Truncate {
                    path: seg(0),
                    len: 500
                },
            ]
        );
    }

    #[test]
    fn damage_with_batches_after_it_is_kept_and_nothing_is_cut() {
        let survey = vec![
            surveyed(0, 5, 500, 520, true),
            surveyed(8, 2, 300, 300, false),
        ];
        let planned = plan_segments(survey, Vec::new()).unwrap();
        assert_eq!(planned.segments.len(), 2);
        assert_eq!(planned.truncated_bytes, 0);
        let range = &planned.damage[0];
        assert_eq!((range.position, range.end_position), (500, 520));
        assert_eq!((range.first_offset, range.end_offset), (5, 8));
        assert_eq!(
            planned.plan.changes(),
            [Change::SyncData(PathBuf::from(format!(
                "/p/{}",
                segment::file_name(8)
            )))]
        );
        // A later segment that starts inside the earlier one's offsets is refused.
        let overlapping = vec![
            surveyed(0, 5, 500, 520, true),
            surveyed(4, 2, 300, 300, false),
        ];
        let refused = plan_segments(overlapping, Vec::new()).err().unwrap();
        assert!(
            refused.to_string().contains("the offsets do not fit"),
            "{refused}"
        );
    }
}
