//! The scrub: checks the CRC of every batch of every segment, a bounded number of bytes
//! per call, and records the damage it finds.
//!
//! [`open`](super::PartitionLog::open) reads only the last two segments whole (and the
//! first and last batches of the others), and a read checks only the batches it returns:
//! the scrub is what finds damage in batches nobody reads. It never sleeps and keeps no
//! thread: the caller paces it (a step of about 1 MiB every few hundred milliseconds, say)
//! and calls it where it may block on the disk. Its reads go through the page cache, so
//! damage on the disk under a cached page is found once the page is evicted.

use super::damage::DamagedRange;
use super::segment::{self, HEADER_LEN};
use super::{LogError, PartitionLog};

/// Where the scrub goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cursor {
    /// The base offset of the segment being checked.
    base: u64,
    /// The byte position of the next batch to check in it.
    pos: u64,
    /// The offset that batch must start at.
    expected: u64,
}

impl Cursor {
    /// The start of the segment whose base offset is `base`.
    fn at(base: u64) -> Cursor {
        Cursor {
            base,
            pos: HEADER_LEN,
            expected: base,
        }
    }
}

/// What one [`PartitionLog::scrub_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubProgress {
    /// Bytes of batches (headers included) checked in this step; damaged bytes count too.
    pub bytes_checked: u64,
    /// Damaged ranges this step found and recorded (see [`PartitionLog::damage`]).
    pub found: usize,
    /// The offset the pass has checked up to (the next one to check).
    pub next_offset: u64,
    /// The pass reached the log end; the next step starts a new pass at the log start.
    pub pass_complete: bool,
}

impl PartitionLog {
    /// Checks the next batches of the current scrub pass, stopping once at least
    /// `budget_bytes` were read (at least one batch is read, so a huge batch still makes
    /// progress) or the pass reaches the log end.
    ///
    /// Every batch's header, CRC and base offset are checked, in every segment (the
    /// active one included), from the log start to the log end, skipping ranges already
    /// recorded. A batch that fails is recorded as a [`DamagedRange`] up to the next good
    /// batch (or to the end of its segment), reported with `tracing::error!`, and reads of
    /// its offsets then fail with [`LogError::Damaged`]. A pass restarts from the log start
    /// after a truncation, a reset or a repair; retention only moves it on. Errors are I/O
    /// errors reading the segments; they do not poison the log.
    pub fn scrub_step(&mut self, budget_bytes: u64) -> Result<ScrubProgress, LogError> {
        let mut cursor = self
            .scrub
            .take()
            .unwrap_or(Cursor::at(self.segments[0].base));
        let mut k = match self.segments.iter().position(|s| s.base == cursor.base) {
            Some(k) => k,
            // Deleted by retention: go on with the oldest segment left.
            None => {
                cursor = Cursor::at(self.segments[0].base);
                0
            }
        };
        let mut progress = ScrubProgress {
            bytes_checked: 0,
            found: 0,
            next_offset: cursor.expected,
            pass_complete: false,
        };
        loop {
            let segment = &self.segments[k];
            // A range empty of bytes (offsets lost at a segment's end, recovery's "holds no
            // batch but is not the last segment") moves only the offset: step over it once.
            if let Some(range) = segment
                .range_at(&self.damage, cursor.pos)
                .filter(|r| (r.end_position, r.end_offset) != (cursor.pos, cursor.expected))
            {
                (cursor.pos, cursor.expected) = (range.end_position, range.end_offset);
                continue;
            }
            if cursor.pos >= segment.size {
                if k + 1 == self.segments.len() {
                    progress.pass_complete = true;
                    progress.next_offset = self.log_end;
                    return Ok(progress);
                }
                k += 1;
                cursor = Cursor::at(self.segments[k].base);
                continue;
            }
            if progress.bytes_checked > 0 && progress.bytes_checked >= budget_bytes {
                break;
            }
            let (file, path, size) = (&segment.file, &segment.path, segment.size);
            match segment::verify_batch_at(file, path, cursor.pos, size, cursor.expected)? {
                Ok(header) => {
                    progress.bytes_checked += header.frame_len();
                    cursor.pos += header.frame_len();
                    cursor.expected = header.next_offset();
                }
                Err(detail) => {
                    let next = segment::find_next_batch(
                        file,
                        path,
                        size,
                        cursor.pos + 1,
                        cursor.expected + 1,
                        segment.bounds(),
                    )?;
                    let (end_position, end_offset) = next
                        .map_or((size, segment.next_offset), |(pos, header)| {
                            (pos, header.base_offset)
                        });
                    if end_offset <= cursor.expected {
                        return Err(LogError::Corrupt {
                            path: path.clone(),
                            detail: format!(
                                "{detail}, and the segment ends before offset {end_offset}"
                            ),
                        });
                    }
                    let range = DamagedRange {
                        path: path.clone(),
                        segment_base: segment.base,
                        position: cursor.pos,
                        end_position,
                        first_offset: cursor.expected,
                        end_offset,
                        detail,
                    };
                    range.report("the scrub");
                    progress.bytes_checked += end_position - cursor.pos;
                    progress.found += 1;
                    (cursor.pos, cursor.expected) = (end_position, end_offset);
                    self.record_damage(range);
                }
            }
        }
        progress.next_offset = cursor.expected;
        self.scrub = Some(cursor);
        Ok(progress)
    }
}
