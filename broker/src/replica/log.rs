//! The log a [`PartitionReplica`](super::PartitionReplica) keeps its records in.

use crate::log::{AppendInfo, BatchMeta, LogError, PartitionLog, ProducerEntry};

/// What the replica machine asks of its log. [`PartitionLog`] is the real one (on disk);
/// every call is synchronous and, for an append, writes to the page cache only (making it
/// durable is the flusher's job, on a blocking thread).
pub trait ReplicaLog {
    /// The first offset held.
    fn log_start_offset(&self) -> u64;
    /// The offset the next record gets.
    fn log_end_offset(&self) -> u64;
    /// Appends one batch (see [`PartitionLog::append_batch`]).
    fn append_batch(&mut self, batch: &[u8], meta: &BatchMeta) -> Result<AppendInfo, LogError>;
    /// A producer's stored batch starting at `base_sequence`, if it is in its window.
    fn producer_batch(&self, producer_id: u64, base_sequence: u32) -> Option<ProducerEntry>;
    /// A producer's last stored batch.
    fn last_producer_batch(&self, producer_id: u64) -> Option<ProducerEntry>;
    /// The largest epoch `<= epoch` and the offset where it ends (Kafka's
    /// OffsetsForLeaderEpoch).
    fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, u64)>;
    /// The epoch of the last batch.
    fn last_epoch(&self) -> Option<u32>;
    /// `(epoch, start offset)` of every epoch in the log.
    fn epoch_start_offsets(&self) -> Vec<(u32, u64)>;
    /// `(first, end)` offsets of each recorded damaged range, in order.
    fn damaged_offsets(&self) -> Vec<(u64, u64)>;
    /// Cuts the log so that it ends at `offset` (a batch boundary).
    fn truncate_to(&mut self, offset: u64) -> Result<(), LogError>;
    /// Empties the log and makes it start at `start_offset`.
    fn reset_to(&mut self, start_offset: u64) -> Result<(), LogError>;
}

impl ReplicaLog for PartitionLog {
    fn log_start_offset(&self) -> u64 {
        PartitionLog::log_start_offset(self)
    }
    fn log_end_offset(&self) -> u64 {
        PartitionLog::log_end_offset(self)
    }
    fn append_batch(&mut self, batch: &[u8], meta: &BatchMeta) -> Result<AppendInfo, LogError> {
        PartitionLog::append_batch(self, batch, meta)
    }
    fn producer_batch(&self, producer_id: u64, base_sequence: u32) -> Option<ProducerEntry> {
        PartitionLog::producer_batch(self, producer_id, base_sequence)
    }
    fn last_producer_batch(&self, producer_id: u64) -> Option<ProducerEntry> {
        PartitionLog::last_producer_batch(self, producer_id)
    }
    fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, u64)> {
        PartitionLog::end_offset_for_epoch(self, epoch)
    }
    fn last_epoch(&self) -> Option<u32> {
        PartitionLog::last_epoch(self)
    }
    fn epoch_start_offsets(&self) -> Vec<(u32, u64)> {
        PartitionLog::epoch_start_offsets(self)
    }
    fn damaged_offsets(&self) -> Vec<(u64, u64)> {
        self.damage()
            .iter()
            .map(|r| (r.first_offset, r.end_offset))
            .collect()
    }
    fn truncate_to(&mut self, offset: u64) -> Result<(), LogError> {
        PartitionLog::truncate_to(self, offset)
    }
    fn reset_to(&mut self, start_offset: u64) -> Result<(), LogError> {
        PartitionLog::reset_to(self, start_offset)
    }
}
