//! Recorded damage: byte ranges of segments that hold no good batch while good batches
//! follow them, so they are kept (not cut) until a repair replaces them.
//!
//! The rules are in the [module documentation](super#damage).

use super::{LogError, PartitionLog};
use std::path::PathBuf;

/// A damaged range of a partition log: the bytes `position..end_position` of one segment
/// hold no good batch (a batch there is torn or fails its CRC check), while a good batch
/// starts at `end_position`. The offsets `first_offset..end_offset` are lost on this
/// replica until [`PartitionLog::repair`] replaces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// The segment file.
    pub path: PathBuf,
    /// The base offset of that segment.
    pub segment_base: u64,
    /// The byte position of the first damaged batch.
    pub position: u64,
    /// The byte position where the next good batch starts (the end of the file when the
    /// damage runs to the end of the segment).
    pub end_position: u64,
    /// The first offset whose batch is damaged.
    pub first_offset: u64,
    /// The offset after the damaged ones: the base offset of the next good batch.
    pub end_offset: u64,
    /// What is wrong with the first damaged batch.
    pub detail: String,
}

impl DamagedRange {
    /// Whether `offset` lies in the range.
    pub fn contains(&self, offset: u64) -> bool {
        self.first_offset <= offset && offset < self.end_offset
    }

    /// The error for a read or truncation that needs the range.
    pub(super) fn error(&self) -> LogError {
        LogError::Damaged {
            path: self.path.clone(),
            position: self.position,
            first_offset: self.first_offset,
            end_offset: Some(self.end_offset),
            detail: self.detail.clone(),
        }
    }

    /// Says loudly that the range was found.
    pub(super) fn report(&self, found_by: &str) {
        tracing::error!(
            path = %self.path.display(),
            position = self.position,
            first_offset = self.first_offset,
            end_offset = self.end_offset,
            "{found_by} found the partition log damaged: bytes {} to {} of {} hold no good batch \
             ({}), so offsets {} to {} are lost on this replica; the good batches after them are \
             kept, reads of these offsets fail, and a repair from a healthy replica must replace \
             them",
            self.position,
            self.end_position,
            self.path.display(),
            self.detail,
            self.first_offset,
            self.end_offset - 1,
        );
    }
}

impl PartitionLog {
    /// The damaged ranges of the log, in offset order; empty when none is known.
    ///
    /// [`open`](PartitionLog::open) records damage it finds in the segments it scans,
    /// [`scrub_step`](PartitionLog::scrub_step) what it finds in all of them. A range
    /// disappears when [`repair`](PartitionLog::repair) replaces it, or when
    /// [`truncate_to`](PartitionLog::truncate_to), retention or
    /// [`reset_to`](PartitionLog::reset_to) removes its offsets. See
    /// [Damage](super#damage).
    pub fn damage(&self) -> &[DamagedRange] {
        &self.damage
    }

    /// The recorded range holding `offset`, if any.
    pub(super) fn damaged_at(&self, offset: u64) -> Option<&DamagedRange> {
        self.damage.iter().find(|r| r.contains(offset))
    }

    /// Records a range found after open, keeping the list in offset order.
    pub(super) fn record_damage(&mut self, range: DamagedRange) {
        let at = self
            .damage
            .partition_point(|r| r.first_offset < range.first_offset);
        self.damage.insert(at, range);
    }
}
