//! Healing a damaged range with batches from a healthy replica.

use super::damage::DamagedRange;
use super::recovery::extend_epochs;
use super::segment::{self, BatchHeader, Segment, NO_PRODUCER_ID};
use super::{
    epochs, fsync_dir, index, io_err, producers_of, FetchedBatch, LogError, PartitionLog,
    MAX_BATCH_BYTES,
};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

impl PartitionLog {
    /// Replaces the recorded damaged range that starts at `first_offset` with `batches`,
    /// fetched from a healthy replica, and forgets the damage.
    ///
    /// `batches` must hold exactly the offsets of the range, contiguous from its
    /// [`first_offset`](DamagedRange::first_offset) to its
    /// [`end_offset`](DamagedRange::end_offset) (they may be framed differently from the
    /// batches they replace), each of at least one record and at most [`MAX_BATCH_BYTES`],
    /// without the reserved producer id, with leader epochs that do not go down and fit
    /// between the epochs of the batches around the range. Anything else is
    /// [`LogError::InvalidBatch`] and changes nothing.
    ///
    /// The log is flushed first; then the segment is rewritten whole (its bytes before the
    /// range, the new batches, its bytes after: a temporary file, fsynced and renamed over
    /// the segment, then the directory fsynced), so a crash leaves the damaged segment or the
    /// repaired one. Its index, the leader epochs (checkpoint rewritten if they change) and
    /// the producer state are then brought up to date. A failure after the flush poisons
    /// the log.
    pub fn repair(&mut self, first_offset: u64, batches: &[FetchedBatch]) -> Result<(), LogError> {
        self.check_usable()?;
        let invalid = |reason: String| LogError::InvalidBatch {
            dir: self.dir.clone(),
            reason: format!("cannot repair: {reason}"),
        };
        let Some(at) = self
            .damage
            .iter()
            .position(|r| r.first_offset == first_offset)
        else {
            return Err(invalid(format!(
                "no damaged range starts at offset {first_offset}"
            )));
        };
        let range = self.damage[at].clone();
        let mut expected = range.first_offset;
        for batch in batches {
            if batch.base_offset != expected {
                return Err(invalid(format!(
                    "a batch starts at offset {} where offset {expected} must come next",
                    batch.base_offset
                )));
            }
            if batch.record_count == 0 || batch.bytes.len() > MAX_BATCH_BYTES as usize {
                return Err(invalid(format!(
                    "the batch at offset {expected} has {} records and {} bytes",
                    batch.record_count,
                    batch.bytes.len()
                )));
            }
            if batch
                .producer
                .is_some_and(|p| p.producer_id == NO_PRODUCER_ID)
            {
                return Err(invalid(format!(
                    "the batch at offset {expected} has the reserved producer id"
                )));
            }
            expected = expected.saturating_add(u64::from(batch.record_count));
        }
        if expected != range.end_offset {
            return Err(invalid(format!(
                "the batches end before offset {expected}, the damaged range before offset {}",
                range.end_offset
            )));
        }
        let epochs = self.epochs_after_repair(&range, batches).ok_or_else(|| {
            invalid("their leader epochs do not fit between the batches around them".to_owned())
        })?;
        let mut frames = Vec::new();
        for batch in batches {
            let header = BatchHeader {
                payload_len: 0,
                crc: 0,
                base_offset: batch.base_offset,
                record_count: batch.record_count,
                leader_epoch: batch.leader_epoch,
                max_timestamp_ms: batch.max_timestamp_ms,
                producer: batch.producer,
            };
            segment::encode_batch(&mut frames, &header, &batch.bytes);
        }
        let k = self
            .segments
            .iter()
            .position(|s| s.base == range.segment_base)
            .expect("a recorded range lies in a segment of the log");
        let old_size = self.segments[k].size;
        let new_size = old_size - (range.end_position - range.position) + frames.len() as u64;
        if new_size > u64::from(u32::MAX) {
            return Err(invalid(format!(
                "the segment would grow to {new_size} bytes"
            )));
        }

        self.flush()?;
        let rewritten = rewrite(&self.segments[k], &range, &frames);
        let file = self.poison_on_error(rewritten)?;
        let updated = self.take_repaired(k, at, file, new_size, batches, epochs);
        self.poison_on_error(updated)?;
        tracing::info!(
            path = %range.path.display(),
            "repaired the damaged offsets {} to {} with {} batches from a healthy replica",
            range.first_offset,
            range.end_offset - 1,
            batches.len()
        );
        Ok(())
    }

    /// The leader epochs once `batches` replace `range`; `None` if an epoch would go down.
    fn epochs_after_repair(
        &self,
        range: &DamagedRange,
        batches: &[FetchedBatch],
    ) -> Option<epochs::Epochs> {
        let before: epochs::Epochs = self
            .epochs
            .iter()
            .copied()
            .filter(|&(_, start)| start < range.first_offset)
            .collect();
        let mut changes: Vec<(u32, u64)> = batches
            .iter()
            .map(|b| (b.leader_epoch, b.base_offset))
            .collect();
        if range.end_offset < self.log_end {
            let in_force = self
                .epochs
                .iter()
                .rev()
                .find(|&&(_, start)| start <= range.end_offset)?;
            changes.push((in_force.0, range.end_offset));
            changes.extend(
                self.epochs
                    .iter()
                    .filter(|&&(_, start)| start > range.end_offset),
            );
        }
        extend_epochs(before, &changes)
    }

    /// Brings the in-memory state up to date once segment `k` was rewritten with the
    /// batches of range `at` repaired.
    fn take_repaired(
        &mut self,
        k: usize,
        at: usize,
        file: File,
        new_size: u64,
        batches: &[FetchedBatch],
        epochs: epochs::Epochs,
    ) -> Result<(), LogError> {
        let range = self.damage.remove(at);
        let delta = new_size as i64 - self.segments[k].size as i64;
        for later in self
            .damage
            .iter_mut()
            .filter(|r| r.segment_base == range.segment_base && r.position >= range.end_position)
        {
            later.position = later.position.wrapping_add_signed(delta);
            later.end_position = later.end_position.wrapping_add_signed(delta);
        }
        let segment = &mut self.segments[k];
        if range.end_position == segment.size {
            segment.last_timestamp_ms = batches.last().map(|b| b.max_timestamp_ms);
        }
        segment.file = file;
        segment.size = new_size;
        let mut rebuilt = Vec::new();
        let interval = self.config.index_interval_bytes;
        segment.walk_headers(&self.damage, |pos, header| {
            index::maybe_add(
                &mut rebuilt,
                interval,
                segment.base,
                pos,
                header.base_offset,
            );
        })?;
        segment.index = rebuilt;
        if k + 1 < self.segments.len() {
            let segment = &self.segments[k];
            if let Err(e) = index::write(&self.dir, segment.base, &segment.index) {
                tracing::warn!("{e} (the index is rebuilt at the next open)");
            }
        }
        if epochs != self.epochs {
            epochs::store(&self.dir, &epochs)?;
            self.epochs = epochs;
        }
        if k + 2 >= self.segments.len() {
            self.producers = producers_of(&self.segments, &self.damage)?;
        }
        self.scrub = None;
        Ok(())
    }
}

/// Writes `segment` with the bytes of `range` replaced by `frames` to a temporary file,
/// makes it durable, renames it over the segment and syncs the directory; returns the new
/// file, open for reading and writing.
fn rewrite(segment: &Segment, range: &DamagedRange, frames: &[u8]) -> Result<File, LogError> {
    let path = &segment.path;
    let dir = path.parent().expect("a segment lives in a directory");
    let tmp = path.with_file_name(format!(
        "{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    let written = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        copy(segment, 0, range.position, &mut out, &tmp)?;
        out.write_all(frames).map_err(io_err("write", &tmp))?;
        copy(segment, range.end_position, segment.size, &mut out, &tmp)?;
        out.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into place", &tmp))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(dir)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))
}

/// Copies bytes `from..to` of `segment` to `out` (the file `tmp`).
fn copy(
    segment: &Segment,
    from: u64,
    to: u64,
    out: &mut File,
    tmp: &std::path::Path,
) -> Result<(), LogError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(buf.len() as u64) as usize;
        segment
            .file
            .read_exact_at(&mut buf[..n], pos)
            .map_err(io_err("read", &segment.path))?;
        out.write_all(&buf[..n]).map_err(io_err("write", tmp))?;
        pos += n as u64;
    }
    Ok(())
}
