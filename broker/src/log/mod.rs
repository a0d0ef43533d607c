//! The log of one partition: an append-only sequence of record batches in segment files,
//! with a sparse offset index, a CRC per batch, recovery of a torn tail, and damage in the
//! middle kept, recorded and repairable (see [Damage](self#damage)).
//!
//! Batches are kept as **opaque bytes**: the producer's CBOR-encoded
//! `pehra_shared::wire::RecordBatch` is stored exactly as it came and served back exactly
//! so. The log never decodes it; it only writes a small binary header of its own in front
//! (offsets, record count, leader epoch, newest timestamp, idempotent producer identity,
//! CRC), which is all it needs.
//!
//! Everything is synchronous std I/O. What waits for the disk, [`PartitionLog::open`],
//! [`flush`](PartitionLog::flush) (fdatasync), retention and scrubbing, belongs on a
//! blocking thread (the broker runs them with `spawn_blocking`). With
//! [`FlushPolicy::Never`] (the broker's setting: its flusher thread makes appends durable
//! at its flush interval)
//! [`append_batch`](PartitionLog::append_batch) only copies into the page cache, and the
//! broker calls it, and [`read`](PartitionLog::read) of recent records, on its async
//! workers through the partition's replica machine: a hop to a blocking thread per
//! produce would cost more than the `write` itself. (A read of old segments that are no
//! longer cached can wait for the disk there; consumers that read far behind are the
//! case to watch.) [`PartitionLog::read`] takes `&self` and uses positional reads.
//!
//! One `PartitionLog` per directory and per process: nothing here stops two from opening
//! the same directory (the broker locks its data directory), and they would corrupt it.
//!
//! # Use
//!
//! [`PartitionLog::open`] creates or recovers the directory.
//! [`append_batch`](PartitionLog::append_batch) (or its short form
//! [`append`](PartitionLog::append), for a batch without a producer) assigns the next
//! offsets to a batch; how soon it is durable depends on [`LogConfig::flush`];
//! [`flushed_offset`](PartitionLog::flushed_offset) says how far the log is known durable.
//! [`read`](PartitionLog::read) returns batches from an offset.
//! [`apply_retention`](PartitionLog::apply_retention) deletes old segments (call it from a
//! timer). For replication: [`last_producer_batch`](PartitionLog::last_producer_batch)
//! recognises a producer's retried batch (see [Producer state](self#producer-state));
//! [`last_epoch`](PartitionLog::last_epoch),
//! [`end_offset_for_epoch`](PartitionLog::end_offset_for_epoch) and
//! [`epoch_start_offsets`](PartitionLog::epoch_start_offsets) find where a follower's log
//! diverges from the leader's; [`truncate_to`](PartitionLog::truncate_to) cuts it there;
//! [`reset_to`](PartitionLog::reset_to) empties a follower that fell behind the leader's
//! log start; a follower passes the leader's base offset in [`BatchMeta::base_offset`].
//!
//! After an I/O error in a method that writes, the log refuses further writes
//! ([`LogError::Poisoned`]): what reached the disk is unknown (a failed fsync may have
//! dropped dirty pages), so the caller must reopen the directory, which recovers. Reads
//! keep working. (Failures in [`apply_retention`](PartitionLog::apply_retention) do not
//! poison: it only deletes whole old segments, and the in-memory state always matches the
//! files that are gone.)
//!
//! # On-disk format
//!
//! A partition directory holds segments, their indexes, the leader-epoch checkpoint and,
//! while a [`reset_to`](PartitionLog::reset_to) is under way, the reset marker; other files
//! are ignored. On open, `*.tmp` leftovers of an interrupted creation and index files whose
//! segment is gone (deletion interrupted between the two files) are removed. Numbers are
//! little endian. Names carry offsets as 20-digit zero-padded decimals, so they sort by
//! name.
//!
//! **Segment** `<base offset>.log`, e.g. `00000000000000000042.log`, where the base offset
//! is the offset of its first batch:
//!
//! ```text
//! header:  magic "PEHRALOG" (8 bytes) | version: u32 = 2
//! batch:   len: u32 | crc: u32 | base_offset: u64 | record_count: u32 | leader_epoch: u32
//!          | max_timestamp_ms: u64 | producer_id: u64 | base_sequence: u32
//!          | payload: len - 36 bytes (the opaque batch)
//! batch:   ...
//! ```
//!
//! `len` counts the bytes after the `crc` field (36 header bytes + the payload; the payload
//! is at most [`MAX_BATCH_BYTES`]); `crc` is the CRC-32 (IEEE) of exactly those `len`
//! bytes. `producer_id` and `base_sequence` are the batch's [`ProducerBatch`]; a batch
//! without a producer has `producer_id = u64::MAX` and `base_sequence = u32::MAX` (so no
//! producer may use the id `u64::MAX`; any other `base_sequence` with that id is an
//! impossible header). A batch holds offsets
//! `base_offset ..= base_offset + record_count - 1`, and the next batch (in this segment or
//! the next) starts at the offset after that: offsets are contiguous. A segment is created atomically (header written to a temporary
//! file, synced, renamed into place, directory synced), so its header is never torn; a
//! segment-named file without the magic is refused ([`LogError::NotOurs`]).
//!
//! Version 1 (until the producer identity was added) had the same segment header and a
//! 32-byte batch header without `producer_id` and `base_sequence`. This build does not read
//! it: a version-1 segment is refused with [`LogError::OldFormat`], and the partition
//! directory must be deleted (the replica then copies the partition again from the
//! leader, if there is another replica) or the older Pehra kept. Any other unknown version
//! is [`LogError::UnsupportedVersion`].
//!
//! A new segment is started ("rolled") when a batch would take the active segment past
//! [`LogConfig::segment_bytes`] (a segment always takes at least one batch, so a batch
//! larger than that gets a segment of its own), or when offsets relative to the segment's
//! base would no longer fit in a `u32`. Before rolling, the old segment is fsynced: only the
//! last segment can ever have an unsynced tail.
//!
//! **Index** `<base offset>.index`: entries of 8 bytes, `relative offset: u32 | position:
//! u32`, saying that the batch with base offset `segment base + relative offset` starts at
//! byte `position`. An entry is added for a batch starting at least
//! [`LogConfig::index_interval_bytes`] after the previous entry (or after the segment
//! header). A read looks up the last entry at or before the offset wanted and walks batch
//! headers from there. The index lives in memory; its file is written (temporary file +
//! rename, *no* fsync) when its segment is rolled, and rebuilt when recovery finds it
//! missing or inconsistent. The active segment's index file is not kept up to date (it is
//! rebuilt from the full scan of the last segment at every open).
//!
//! **Leader-epoch checkpoint** `leader-epochs`:
//!
//! ```text
//! magic "PEHRAEPO" (8) | version: u32 = 1 | count: u32 | count × (epoch: u32 | start_offset: u64) | crc: u32
//! ```
//!
//! `crc` covers `count` and the entries. It lists each leader epoch in the log with the
//! offset of its first batch. It is replaced atomically and durably (temporary file,
//! fsync, rename, fsync of the directory) *before* the first batch of a new epoch is
//! written, and after [`truncate_to`](PartitionLog::truncate_to) removes epochs. Entries
//! below the log start (after retention) are not rewritten: they are clamped when read.
//!
//! **Reset marker** `reset-to`:
//!
//! ```text
//! magic "PEHRARST" (8) | version: u32 = 1 | start_offset: u64 | crc: u32
//! ```
//!
//! `crc` covers `version` and `start_offset`. [`reset_to`](PartitionLog::reset_to) makes it
//! durable (temporary file, fsync, rename, fsync of the directory) before deleting
//! anything, then deletes every segment and index (oldest first) and syncs the directory,
//! creates the empty segment `<start_offset>.log`, writes an empty leader-epoch checkpoint,
//! and deletes the marker. Recovery redoes all of that when it finds the marker (step 0
//! below), so after a crash at any point the directory holds the old log (the marker never
//! became durable) or the new empty one. A marker that cannot be read is
//! [`LogError::Corrupt`]: the offset the reset was going to is unknown.
//!
//! # Recovery
//!
//! 0. A reset marker is acted on first: the reset it records is finished as described
//!    above, and recovery goes on with the directory that leaves.
//! 1. Segments are taken in offset order. Each must start at the offset after the previous
//!    segment's last batch, and each batch at the offset after the previous batch: anything
//!    else is [`LogError::Corrupt`] naming the file.
//! 2. The **last two segments** are scanned fully: every batch's length and CRC is checked
//!    and the index is rebuilt (for the second last, its index file is rewritten only if it
//!    differs). The producer state comes from these scans (see
//!    [Producer state](self#producer-state)). A batch that is truncated, has an impossible
//!    header or fails its CRC is **either a torn tail or damage**, told apart by what comes
//!    after it (the [torn-tail rule](self#torn-tail-or-damage)): only a torn tail of the last
//!    segment is cut (the file is truncated to the end of the last good batch and synced,
//!    and the bytes cut are reported in [`Recovery::truncated_bytes`]); damage is recorded
//!    and nothing is cut ([Damage](self#damage)).
//! 3. An **earlier segment** (before the last two) was fsynced when it was rolled, so its
//!    size is trusted and it is not read whole. If its index file is consistent (whole
//!    entries, increasing, inside the file), recovery checks the first batch (CRC, base
//!    offset = the name) and the batch of the last index entry (CRC, the offset the entry
//!    names), then scans from that entry to the end of the file checking every CRC: so the
//!    last batches of every segment, which give the segment's last offset and newest
//!    timestamp, are verified. Batches between the first and the last index entry are not
//!    read at open; a corrupt one there is found by the read that reaches it
//!    ([`LogError::Damaged`]) or by the scrub ([`scrub_step`](PartitionLog::scrub_step)),
//!    which records it. If the index is missing or fails any of these checks, the segment
//!    is scanned fully like the last one and its index file is rewritten.
//! 4. Damage at the end of an earlier segment (a batch that fails its checks with no good
//!    batch after it in the file, or no batch at all) while a later segment holds batches
//!    is damage in the middle of the log: recorded up to the next segment's base offset,
//!    nothing cut. If no later segment holds a batch, it is the log's torn tail: the
//!    damaged segment is cut as in 2 and the empty later segments are deleted. Good
//!    batches whose offsets do not follow each other (no bit flip does that: the CRC
//!    covers the offsets) stay a hard [`LogError::Corrupt`].
//! 5. The leader epochs come from the checkpoint for the offsets before the last segment
//!    and from the scan of the last segment after it; entries at or past the log end are
//!    dropped (a crash after the checkpoint was written but before the batch was). If the
//!    checkpoint is missing, damaged or disagrees with the log (it does not cover the log
//!    start, or an epoch would go down), the epochs are rebuilt by reading every batch
//!    header (an earlier segment where a header turns out damaged is scanned whole, its
//!    damage recorded as in 4, its epochs taken from its good batches), and the checkpoint
//!    is rewritten.
//! 6. Files are changed only once all checks passed: a hard error leaves the directory as
//!    it was. The last segment is then fdatasynced, so after `open`
//!    [`flushed_offset`](PartitionLog::flushed_offset) equals the log end.
//!
//! A missing or empty directory is a fresh log starting at offset 0.
//!
//! # Torn tail or damage
//!
//! A crash while a batch is written leaves it incomplete: its header cut short, its
//! declared length running past the end of the file, or its bytes partly written so that
//! its CRC fails. Nothing is ever written after a batch being written, so **nothing good
//! follows a torn batch**. When a scan meets a bad batch it therefore looks further: from
//! the next byte on, for a batch whose header parses, whose frame fits in the file, whose
//! CRC checks out and whose offsets fit (after the bad batch's first offset, within the
//! segment's `u32` range, below the next segment's base), and then at the later segments.
//!
//! * **Nothing good follows** (in the file, nor any batch in a later segment): a torn
//!   tail, cut. This includes a last batch that fails its CRC check with nothing after it:
//!   it cannot be told from a torn write. Under [`FlushPolicy::Always`] such a batch was
//!   never acknowledged (it is acknowledged after its fdatasync, and a batch whose write
//!   was torn never got there); under the broker's default (`FlushPolicy::Never` with a
//!   flush every 200 ms, replication being the durability) it may have been acknowledged
//!   to acks=1/all, and the replicas that copied it still hold it. Cutting one batch that
//!   another replica can supply is the lesser evil than refusing every torn write; the cut
//!   is reported in [`Recovery::truncated_bytes`].
//! * **A good batch follows**: damage (a bit flip, a bad sector, a lost write in the
//!   middle), kept and recorded ([Damage](self#damage)). Cutting it would drop every
//!   acknowledged batch after it. This errs towards damage: a batch-shaped byte sequence
//!   inside a torn payload would also be taken for damage; that costs a repair, not data.
//!   After a power loss under a policy that does not fsync every batch, unsynced pages may
//!   reach the disk out of order and leave exactly this pattern inside the unsynced tail;
//!   it is recorded as damage too (the log does not know where the last fsync ended), and
//!   a repair from a replica heals it.
//!
//! # Damage
//!
//! A damaged range ([`DamagedRange`]: segment file, byte positions, offsets
//! `first_offset..end_offset`) is found by [`open`](PartitionLog::open) (segments it scans)
//! or by [`scrub_step`](PartitionLog::scrub_step) (all segments), logged with
//! `tracing::error!` naming the file and offsets, and listed by
//! [`damage`](PartitionLog::damage). Its bytes stay on disk; nothing after it is cut or
//! deleted. While it is recorded:
//!
//! * [`read`](PartitionLog::read) from an offset in it fails with [`LogError::Damaged`]; a
//!   read from before it returns the batches up to it (and the next read, from its first
//!   offset, fails); reads after it work. A read that meets a batch failing its CRC check
//!   that is not recorded yet (in any segment, the active one included) fails the same
//!   way, with the end of the damage not known.
//! * Appends go on at the log end: the damage is not in their way.
//! * [`truncate_to`](PartitionLog::truncate_to) refuses an offset inside the range or at its
//!   end ([`LogError::Damaged`]); truncating at or before its first offset removes it.
//! * The leader epochs inside it come from the epoch checkpoint (when it is usable), and
//!   the producer state from the good batches only.
//!
//! [`repair`](PartitionLog::repair) replaces the range with the same offsets fetched from a
//! healthy replica (the segment is rewritten through a temporary file and a rename, and
//! fsynced) and forgets the damage. A replica with damage must not lead nor count as
//! holding the damaged offsets: that decision is the server's (see docs/replication.md).
//!
//! # Producer state
//!
//! For each producer id, the log keeps the last batch that producer appended
//! ([`last_producer_batch`](PartitionLog::last_producer_batch): its base sequence, base
//! offset, record count and leader epoch), so that a leader, also a new one after a
//! failover or a restart, recognises a retried batch. It is kept in memory and always
//! equals what the batches of the **last two segments** say (later batches winning): it
//! is rebuilt from them at open (rule 2 of [Recovery](self#recovery); if recovery cut the
//! log back to an earlier segment, the new second last one is read for it), updated by
//! every append with a producer, pruned of batches before the second last segment when a
//! segment is rolled and of batches below the log start by retention, rebuilt from the
//! remaining last two segments by [`truncate_to`](PartitionLog::truncate_to) when the cut
//! removes a producer's last batch or segments, and emptied by
//! [`reset_to`](PartitionLog::reset_to). So a retry is recognised only while the
//! producer's last batch is in the last two segments: one older than that (the whole
//! second last segment, up to [`LogConfig::segment_bytes`], was written after it) is not,
//! nor one whose batch was removed by retention or a reset. Nothing is stored for it
//! besides the batch headers.
//!
//! # Retention
//!
//! [`apply_retention`](PartitionLog::apply_retention) deletes whole segments, oldest first,
//! never the active (last) one, and stops at the first segment it keeps, so the log stays
//! contiguous. A segment is deleted when the `max_timestamp_ms` of its last (newest) batch
//! is more than [`LogConfig::retention_ms`] before `now_ms`, or while the segment files
//! together (headers included) take more than [`LogConfig::retention_bytes`]. The log start
//! offset becomes the base offset of the first remaining segment.

#![warn(missing_docs)]

mod damage;
mod epochs;
mod header;
mod index;
mod recovery;
mod repair;
mod reset;
mod scrub;
mod segment;

#[cfg(test)]
mod tests;

pub use damage::DamagedRange;
pub use scrub::ScrubProgress;
pub use segment::MAX_BATCH_BYTES;

use pehra_storage::{IoError, Poison};
use segment::{BatchHeader, Segment, HEADER_LEN, NO_PRODUCER_ID};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The largest [`LogConfig::segment_bytes`] accepted (file positions must fit in a `u32`).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;

/// An error of a partition log. Every variant names the file or directory concerned.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The disk is full: the batch was not stored (its partial bytes were cut), and the
    /// log goes on (reads work; an append works again once space returns).
    #[error("broker storage full: cannot write {path}: {source}")]
    StorageFull {
        /// The segment.
        path: PathBuf,
        /// The underlying error (ENOSPC or EDQUOT).
        #[source]
        source: io::Error,
    },
    /// A file system operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done (e.g. "fdatasync").
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file named like a segment does not start with the segment header.
    #[error(
        "{path} is not a Pehra log segment (bad or missing header); refusing to use this directory"
    )]
    NotOurs {
        /// The file.
        path: PathBuf,
    },
    /// A segment was written in a format version this build does not know.
    #[error("{path} has format version {version}; this build reads only version {supported}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A segment was written in format version 1, by an older Pehra: its batch headers
    /// lack the producer identity, and this build does not convert them.
    #[error(
        "{path} is in segment format version {version}, written by an older Pehra; this build \
         reads only version {supported} and does not convert old logs: delete the partition \
         directory {dir} (this replica then holds none of its batches), or keep using the \
         older Pehra version"
    )]
    OldFormat {
        /// The file.
        path: PathBuf,
        /// The partition directory.
        dir: PathBuf,
        /// The version found.
        version: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The log is damaged in a way that would lose acknowledged batches, or a read met a
    /// damaged batch.
    #[error("corrupt partition log {path}: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// [`PartitionLog::open`] was given an unusable [`LogConfig`].
    #[error("{dir}: invalid log configuration: {reason}")]
    InvalidConfig {
        /// The partition directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An offset outside `log_start ..= log_end` was asked for.
    #[error("{dir}: offset {offset} is out of range (the log holds {log_start} to {log_end}, exclusive)")]
    OffsetOutOfRange {
        /// The partition directory.
        dir: PathBuf,
        /// The offset asked for.
        offset: u64,
        /// The log start offset.
        log_start: u64,
        /// The log end offset.
        log_end: u64,
    },
    /// [`PartitionLog::truncate_to`] was given an offset inside a batch.
    #[error("{dir}: cannot truncate to offset {offset}: it lies inside the batch of offsets {batch_base} to {batch_last}")]
    NotBatchBoundary {
        /// The partition directory.
        dir: PathBuf,
        /// The offset given.
        offset: u64,
        /// The first offset of the batch holding it.
        batch_base: u64,
        /// The last offset of that batch.
        batch_last: u64,
    },
    /// A batch given to [`PartitionLog::append`] is larger than [`MAX_BATCH_BYTES`].
    #[error("{dir}: a batch of {len} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// The partition directory.
        dir: PathBuf,
        /// The batch length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// A batch given to [`PartitionLog::append`] is unusable for another reason.
    #[error("{dir}: cannot append the batch: {reason}")]
    InvalidBatch {
        /// The partition directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// [`PartitionLog::append`] was given a leader epoch older than the log's last one.
    #[error(
        "{dir}: cannot append a batch of leader epoch {epoch}: the log is already at epoch {last}"
    )]
    EpochRegression {
        /// The partition directory.
        dir: PathBuf,
        /// The epoch given.
        epoch: u32,
        /// The epoch of the log's last batch.
        last: u32,
    },
    /// [`PartitionLog::append_batch`] was told the base offset the batch must get
    /// ([`BatchMeta::base_offset`]), and the log does not end there.
    #[error(
        "{dir}: the batch must get base offset {expected}, but the log end offset is {log_end}"
    )]
    OffsetMismatch {
        /// The partition directory.
        dir: PathBuf,
        /// The base offset the batch must get.
        expected: u64,
        /// The log end offset (the offset the batch would get).
        log_end: u64,
    },
    /// A read (or a truncation) needs batches that are damaged on disk: a recorded
    /// [`DamagedRange`] (then `end_offset` is known), or a batch whose CRC check failed as
    /// it was read (then where the damage ends is not known until a scrub or a reopen
    /// records it).
    #[error(
        "damaged partition log {path}: the batches from offset {first_offset}{} at byte \
         {position} are unreadable ({detail}); they must be repaired from a healthy replica",
        end_offset.map_or_else(String::new, |end| format!(" to {}", end.saturating_sub(1)))
    )]
    Damaged {
        /// The segment file.
        path: PathBuf,
        /// The byte position of the first damaged batch.
        position: u64,
        /// The first offset whose batch is damaged.
        first_offset: u64,
        /// The offset of the next good batch, when known.
        end_offset: Option<u64>,
        /// What is wrong.
        detail: String,
    },
    /// An earlier write or sync failed, so the state of the log on disk is unknown.
    #[error("{dir}: partition log unusable after an earlier write or sync failure; reopen it to recover")]
    Poisoned {
        /// The partition directory.
        dir: PathBuf,
    },
}

/// When appended batches are made durable (fdatasync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Before [`PartitionLog::append`] returns.
    Always,
    /// After every this many appended batches (at least 1).
    EveryBatches(u32),
    /// Only when [`PartitionLog::flush`] is called, a segment is rolled, or the OS writes
    /// its dirty pages back.
    Never,
}

/// How a partition log is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A new segment is started when a batch would take the active one past this many
    /// bytes (default 64 MiB; at most [`MAX_SEGMENT_BYTES`]).
    pub segment_bytes: u64,
    /// One sparse index entry per this many bytes of batches (default 4 KiB).
    pub index_interval_bytes: u32,
    /// Delete whole segments whose newest batch is older than this (default 7 days).
    pub retention_ms: Option<u64>,
    /// Keep at most this many bytes of segments, deleting whole old segments (the active
    /// one is always kept; default: no limit).
    pub retention_bytes: Option<u64>,
    /// When appends are made durable (default [`FlushPolicy::Always`]).
    pub flush: FlushPolicy,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            retention_bytes: None,
            flush: FlushPolicy::Always,
        }
    }
}

impl LogConfig {
    /// Refuses settings the log cannot honour.
    fn validate(&self, dir: &Path) -> Result<(), LogError> {
        let invalid = |reason: String| {
            Err(LogError::InvalidConfig {
                dir: dir.to_owned(),
                reason,
            })
        };
        if self.segment_bytes == 0 || self.segment_bytes > MAX_SEGMENT_BYTES {
            return invalid(format!(
                "segment_bytes is {}; it must be 1 to {MAX_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if self.flush == FlushPolicy::EveryBatches(0) {
            return invalid("FlushPolicy::EveryBatches needs at least 1 batch".to_owned());
        }
        Ok(())
    }
}

/// Identity of an idempotent producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerBatch {
    /// The producer. `u64::MAX` is reserved (it means "no producer" on disk).
    pub producer_id: u64,
    /// The sequence number of the batch's first record.
    pub base_sequence: u32,
}

/// Everything about a batch besides its bytes, for [`PartitionLog::append_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    /// Records in the batch (at least 1).
    pub record_count: u32,
    /// The batch's newest record timestamp (used by retention).
    pub max_timestamp_ms: u64,
    /// The leader epoch the batch is written in; not older than the log's last batch's.
    pub leader_epoch: u32,
    /// The idempotent producer's identity of the batch, if it has one.
    pub producer: Option<ProducerBatch>,
    /// For a follower copying the leader: the base offset the batch must get; if the log
    /// end is not exactly this, the append is refused with [`LogError::OffsetMismatch`]
    /// and nothing changes. `None` for a leader (the batch takes the log end).
    pub base_offset: Option<u64>,
}

/// The last batch a producer appended, as [`PartitionLog::last_producer_batch`] knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerEntry {
    /// The sequence number of the batch's first record.
    pub base_sequence: u32,
    /// The offset of the batch's first record.
    pub base_offset: u64,
    /// Records in the batch.
    pub record_count: u32,
    /// The leader epoch the batch was appended in.
    pub leader_epoch: u32,
}

/// How many of a producer's last batches a log remembers: a retry of any of them is
/// recognised (a producer keeps at most this many batches in flight per partition, as
/// Kafka's idempotent producer does).
pub const PRODUCER_WINDOW: usize = 5;

/// A producer's last batches (at most [`PRODUCER_WINDOW`]), oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerWindow(std::collections::VecDeque<ProducerEntry>);

impl ProducerWindow {
    /// Notes a batch appended after the ones held, forgetting the oldest beyond the window.
    pub(crate) fn push(&mut self, entry: ProducerEntry) {
        if self.0.len() == PRODUCER_WINDOW {
            self.0.pop_front();
        }
        self.0.push_back(entry);
    }

    /// The last batch.
    pub(crate) fn last(&self) -> Option<ProducerEntry> {
        self.0.back().copied()
    }

    /// Whether any batch held starts at `offset` or later.
    fn reaches(&self, offset: u64) -> bool {
        self.0.iter().any(|e| e.base_offset >= offset)
    }

    /// Forgets the batches before `offset`; whether any is left.
    fn keep_from(&mut self, offset: u64) -> bool {
        self.0.retain(|e| e.base_offset >= offset);
        !self.0.is_empty()
    }
}

/// The last batches of each producer, by producer id.
type Producers = BTreeMap<u64, ProducerWindow>;

/// Where [`PartitionLog::append`] put a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
    /// The log end offset after the append (`last_offset + 1`).
    pub log_end_offset: u64,
}

/// One batch returned by [`PartitionLog::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedBatch {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Records in the batch.
    pub record_count: u32,
    /// Leader epoch the batch was appended in.
    pub leader_epoch: u32,
    /// The batch's newest record timestamp, as given to `append`.
    pub max_timestamp_ms: u64,
    /// The idempotent producer's identity of the batch, if it has one.
    pub producer: Option<ProducerBatch>,
    /// The opaque batch, byte for byte as appended.
    pub bytes: Vec<u8>,
}

/// What [`PartitionLog::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The first offset in the log.
    pub log_start_offset: u64,
    /// The offset the next append gets.
    pub log_end_offset: u64,
    /// Bytes cut from a torn tail (0 if there was none). Damage with good batches after it
    /// is never cut: see [`PartitionLog::damage`].
    pub truncated_bytes: u64,
    /// Segment files in the log after recovery.
    pub segments: usize,
}

/// The log of one partition, in one directory. See the [module documentation](self).
#[derive(Debug)]
pub struct PartitionLog {
    /// The partition directory.
    dir: PathBuf,
    /// Its configuration.
    config: LogConfig,
    /// The segments in offset order, never empty; the last one is the active one.
    segments: Vec<Segment>,
    /// The offset the next batch gets.
    log_end: u64,
    /// The log end known to be durable.
    flushed: u64,
    /// Whether the active segment holds written but unsynced bytes.
    dirty: bool,
    /// Batches appended since the last sync.
    unflushed_batches: u32,
    /// `(leader epoch, first offset)` for every epoch in the log, each start in
    /// `log_start..log_end`.
    epochs: epochs::Epochs,
    /// The last batch of each producer among the batches of the last two segments.
    producers: Producers,
    /// Reused buffer for framing a batch.
    scratch: Vec<u8>,
    /// Whether an I/O error left the files in an unknown state.
    poison: Poison,
    /// The recorded damaged ranges, in offset order.
    damage: Vec<DamagedRange>,
    /// Where the scrub goes on, `None` at the start of a pass.
    scrub: Option<scrub::Cursor>,
}

impl PartitionLog {
    /// Opens (creating if needed) the partition directory `dir`, recovers it, and is ready
    /// to append after the last good batch.
    ///
    /// See the [module documentation](self) for what recovery checks and repairs, and which
    /// damage is a hard error.
    pub fn open(dir: &Path, config: LogConfig) -> Result<(PartitionLog, Recovery), LogError> {
        recovery::open(dir, config)
    }

    /// Appends one batch of `record_count` records (>= 1); assigns offsets log_end..log_end+count.
    ///
    /// The same as [`append_batch`](PartitionLog::append_batch) with no producer and no
    /// expected base offset.
    pub fn append(
        &mut self,
        batch: &[u8],
        record_count: u32,
        max_timestamp_ms: u64,
        leader_epoch: u32,
    ) -> Result<AppendInfo, LogError> {
        self.append_batch(
            batch,
            &BatchMeta {
                record_count,
                max_timestamp_ms,
                leader_epoch,
                producer: None,
                base_offset: None,
            },
        )
    }

    /// Appends one batch of `meta.record_count` records (>= 1) at the log end, stored with
    /// its producer identity.
    ///
    /// `batch` is stored as is. `meta.max_timestamp_ms` is the batch's newest record
    /// timestamp (used by retention) and `meta.leader_epoch` the epoch it is written in,
    /// which may not be older than the last batch's ([`LogError::EpochRegression`]). With
    /// `meta.base_offset` set, the log end must be exactly that
    /// ([`LogError::OffsetMismatch`]). A batch over [`MAX_BATCH_BYTES`], a count of 0,
    /// offsets that would overflow or the reserved producer id `u64::MAX` are refused. Every
    /// refusal changes nothing. With a producer, the batch becomes that producer's
    /// [`last_producer_batch`](PartitionLog::last_producer_batch). Durable before returning
    /// only under [`FlushPolicy::Always`] (or when the policy's batch count is reached).
    pub fn append_batch(&mut self, batch: &[u8], meta: &BatchMeta) -> Result<AppendInfo, LogError> {
        self.check_usable()?;
        let base_offset = self.log_end;
        if let Some(expected) = meta.base_offset {
            if expected != base_offset {
                return Err(LogError::OffsetMismatch {
                    dir: self.dir.clone(),
                    expected,
                    log_end: base_offset,
                });
            }
        }
        if batch.len() > MAX_BATCH_BYTES as usize {
            return Err(LogError::BatchTooLarge {
                dir: self.dir.clone(),
                len: batch.len(),
                max: MAX_BATCH_BYTES,
            });
        }
        let invalid = |reason: String| LogError::InvalidBatch {
            dir: self.dir.clone(),
            reason,
        };
        if meta.record_count == 0 {
            return Err(invalid("a batch must hold at least one record".to_owned()));
        }
        let next_offset = base_offset
            .checked_add(u64::from(meta.record_count))
            .ok_or_else(|| invalid(format!("offsets past {base_offset} would overflow")))?;
        if meta
            .producer
            .is_some_and(|p| p.producer_id == NO_PRODUCER_ID)
        {
            return Err(invalid(format!(
                "producer id {NO_PRODUCER_ID} is reserved (it means \"no producer\")"
            )));
        }
        if let Some(&(last, _)) = self.epochs.last() {
            if meta.leader_epoch < last {
                return Err(LogError::EpochRegression {
                    dir: self.dir.clone(),
                    epoch: meta.leader_epoch,
                    last,
                });
            }
        }
        let written = self.write_batch(batch, meta);
        if !matches!(written, Err(LogError::StorageFull { .. })) {
            self.poison_on_error(written)?;
        } else {
            written?;
        }
        self.unflushed_batches = self.unflushed_batches.saturating_add(1);
        let flush_now = match self.config.flush {
            FlushPolicy::Always => true,
            FlushPolicy::EveryBatches(n) => self.unflushed_batches >= n,
            FlushPolicy::Never => false,
        };
        if flush_now {
            self.flush()?;
        }
        Ok(AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            log_end_offset: next_offset,
        })
    }

    /// Makes every appended batch durable (write + fdatasync). A failure poisons the log.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.check_usable()?;
        let synced = self.sync_active();
        self.poison_on_error(synced)
    }

    /// Batches holding offsets >= `offset`, starting with the batch that contains `offset`, until adding the next would exceed `max_bytes` (but always at least one batch if any, so a huge batch still makes progress). Empty if offset == log_end. Error OffsetOutOfRange if offset < log_start or > log_end.
    ///
    /// `max_bytes` counts the opaque batch bytes ([`FetchedBatch::bytes`]). Every batch
    /// read, in every segment, is checked against its CRC; a damaged one, or an offset in a
    /// recorded damaged range, is [`LogError::Damaged`], and a read from before damage
    /// stops at it (see [Damage](self#damage)). Batches appended but not yet flushed are
    /// returned too (they are in the OS page cache).
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<FetchedBatch>, LogError> {
        self.check_range(offset)?;
        let mut batches = Vec::new();
        if offset == self.log_end {
            return Ok(batches);
        }
        if let Some(range) = self.damaged_at(offset) {
            return Err(range.error());
        }
        let mut i = self.segment_holding(offset);
        let (mut pos, mut expected) = {
            let (pos, header) = self.segments[i].locate(offset, &self.damage)?;
            (pos, header.base_offset)
        };
        let mut total = 0usize;
        loop {
            let segment = &self.segments[i];
            loop {
                if let Some(range) = segment.range_at(&self.damage, pos) {
                    // Serve what comes before the damage; a read from its first offset fails.
                    return if batches.is_empty() {
                        Err(range.error())
                    } else {
                        Ok(batches)
                    };
                }
                if pos >= segment.size {
                    break;
                }
                let damaged = |detail: String| LogError::Damaged {
                    path: segment.path.clone(),
                    position: pos,
                    first_offset: expected,
                    end_offset: None,
                    detail,
                };
                let header = segment::header_at(&segment.file, &segment.path, pos, segment.size)?
                    .map_err(damaged)?;
                if header.base_offset != expected {
                    return Err(damaged(format!(
                        "the batch at byte {pos} has base offset {} where offset {expected} \
                         must come next",
                        header.base_offset
                    )));
                }
                let len = header.payload_len as usize;
                if !batches.is_empty() && total.saturating_add(len) > max_bytes {
                    return Ok(batches);
                }
                let bytes = segment::payload_at(&segment.file, &segment.path, pos, &header)?
                    .map_err(damaged)?;
                batches.push(FetchedBatch {
                    base_offset: header.base_offset,
                    record_count: header.record_count,
                    leader_epoch: header.leader_epoch,
                    max_timestamp_ms: header.max_timestamp_ms,
                    producer: header.producer,
                    bytes,
                });
                total += len;
                pos += header.frame_len();
                expected = header.next_offset();
            }
            i += 1;
            if i == self.segments.len() {
                return Ok(batches);
            }
            pos = HEADER_LEN;
        }
    }

    /// The first offset in the log (the base offset of its oldest segment).
    pub fn log_start_offset(&self) -> u64 {
        self.segments[0].base
    }

    /// The offset the next appended batch gets.
    pub fn log_end_offset(&self) -> u64 {
        self.log_end
    }

    /// The log end offset known to be durable: every batch below it has been fdatasynced.
    pub fn flushed_offset(&self) -> u64 {
        self.flushed
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes every batch at or above `offset` (offset must be a batch boundary or log end; for replication fencing later).
    ///
    /// `offset` must lie in `log_start ..= log_end` ([`LogError::OffsetOutOfRange`]) and be
    /// the first offset of a batch ([`LogError::NotBatchBoundary`]); refusals change
    /// nothing. Later segments are deleted (newest first, so a crash in between leaves a
    /// contiguous log), then the segment holding `offset` is truncated and synced, and the
    /// leader epochs starting at or after `offset` are dropped. The next append gets
    /// `offset`. Everything left is durable afterwards.
    ///
    /// With damage recorded: an offset inside a damaged range or at its end is refused
    /// ([`LogError::Damaged`]); cutting at or before a range's first offset removes the
    /// range (the way to heal by fetching everything after it again, when
    /// [`repair`](PartitionLog::repair) is not used).
    pub fn truncate_to(&mut self, offset: u64) -> Result<(), LogError> {
        self.check_usable()?;
        self.check_range(offset)?;
        if offset == self.log_end {
            return Ok(());
        }
        // Inside or at the end of a damaged range, where the batches start is unknown (and
        // the bytes kept would end in damage).
        if let Some(range) = self
            .damage
            .iter()
            .find(|r| r.first_offset < offset && offset <= r.end_offset)
        {
            return Err(range.error());
        }
        let k = self.segment_holding(offset);
        let segment = &self.segments[k];
        let (size, last_timestamp_ms) = if offset == segment.base {
            (HEADER_LEN, None)
        } else {
            let (pos, header) = segment.locate(offset - 1, &self.damage)?;
            if header.last_offset() != offset - 1 {
                return Err(LogError::NotBatchBoundary {
                    dir: self.dir.clone(),
                    offset,
                    batch_base: header.base_offset,
                    batch_last: header.last_offset(),
                });
            }
            (pos + header.frame_len(), Some(header.max_timestamp_ms))
        };
        let segments_deleted = self.segments.len() > k + 1;
        let cut = self.cut(k, size, offset, last_timestamp_ms);
        self.poison_on_error(cut)?;
        self.damage.retain(|r| r.end_offset <= offset);
        self.scrub = None;
        // The producer state must become what `open` would build from the log now: only a
        // cut batch of a producer, or other segments becoming the last two, changes it.
        if segments_deleted || self.producers.values().any(|w| w.reaches(offset)) {
            let rebuilt = producers_of(&self.segments, &self.damage);
            self.producers = self.poison_on_error(rebuilt)?;
        }
        Ok(())
    }

    /// Deletes every batch and makes the log empty with its next offset `start_offset` (a
    /// follower whose log end is below the leader's log start, after retention on the
    /// leader).
    ///
    /// Afterwards [`log_start_offset`](PartitionLog::log_start_offset) and
    /// [`log_end_offset`](PartitionLog::log_end_offset) are both `start_offset`, and the
    /// leader epochs and the producer state are empty. Durable before returning: a marker
    /// file `reset-to` holding `start_offset` is made durable first, then every segment and
    /// index is deleted (oldest first), the empty segment `<start_offset>.log` is created,
    /// the leader-epoch checkpoint is emptied and the marker removed. A crash before the
    /// marker is durable leaves the old log; after it, [`open`](PartitionLog::open) finds
    /// the marker and finishes the reset. A failure poisons the log.
    pub fn reset_to(&mut self, start_offset: u64) -> Result<(), LogError> {
        self.check_usable()?;
        let reset = reset::store(&self.dir, start_offset)
            .and_then(|()| recovery::segment_files(&self.dir))
            .and_then(|listing| reset::finish(&self.dir, start_offset, listing));
        let segment = self.poison_on_error(reset)?;
        tracing::info!(
            dir = %self.dir.display(),
            "reset the log: deleted offsets {} to {}; it now starts empty at offset {start_offset}",
            self.log_start_offset(),
            self.log_end,
        );
        self.segments = vec![segment];
        self.log_end = start_offset;
        self.flushed = start_offset;
        self.dirty = false;
        self.unflushed_batches = 0;
        self.epochs.clear();
        self.producers.clear();
        self.damage.clear();
        self.scrub = None;
        Ok(())
    }

    /// The last batch `producer_id` appended, among the batches of the last two segments.
    ///
    /// For a leader to recognise a retried batch by its
    /// [`base_sequence`](ProducerBatch::base_sequence). It covers every batch appended since
    /// [`open`](PartitionLog::open) in the last two segments, and is rebuilt from them at
    /// `open` and after [`truncate_to`](PartitionLog::truncate_to): a producer whose last
    /// batch is older than the second last segment (or was removed by retention or a reset)
    /// is not known, so a retry of it is not recognised.
    pub fn last_producer_batch(&self, producer_id: u64) -> Option<ProducerEntry> {
        self.producers
            .get(&producer_id)
            .and_then(ProducerWindow::last)
    }

    /// The batch of `producer_id` that started at `base_sequence`, among its last
    /// [`PRODUCER_WINDOW`] batches (within the same two segments as
    /// [`last_producer_batch`](PartitionLog::last_producer_batch)): a retry of a batch
    /// that was in flight with later ones.
    pub fn producer_batch(&self, producer_id: u64, base_sequence: u32) -> Option<ProducerEntry> {
        let window = self.producers.get(&producer_id)?;
        window
            .0
            .iter()
            .rev()
            .find(|e| e.base_sequence == base_sequence)
            .copied()
    }

    /// The largest leader epoch <= `epoch` that has batches in the log, and the offset where
    /// it ends: the start offset of the next epoch in the log, or the log end offset if it
    /// is the last. `None` if the log has no epoch <= `epoch` (empty log, or every epoch in
    /// it is newer).
    pub fn end_offset_for_epoch(&self, epoch: u32) -> Option<(u32, u64)> {
        let after = self.epochs.partition_point(|&(e, _)| e <= epoch);
        let (found, _) = self.epochs[..after].last()?;
        let end = self
            .epochs
            .get(after)
            .map_or(self.log_end, |&(_, start)| start);
        Some((*found, end))
    }

    /// The leader epoch of the last batch, if any.
    pub fn last_epoch(&self) -> Option<u32> {
        self.epochs.last().map(|&(epoch, _)| epoch)
    }

    /// The leader epoch of the last batch, and the first offset of each epoch (for leader-epoch based truncation later): `epoch_start_offsets() -> Vec<(u32 epoch, u64 start_offset)>`.
    ///
    /// In increasing order; the last entry's epoch is the last batch's. Only epochs with a
    /// batch in the log are listed, and the first entry starts at the log start offset
    /// (an epoch that began before retention removed its first batches is listed from the
    /// log start). Empty when the log is.
    pub fn epoch_start_offsets(&self) -> Vec<(u32, u64)> {
        self.epochs.clone()
    }

    /// Applies retention at `now_ms`; returns how many segments were deleted. Never deletes the active segment.
    ///
    /// See [Retention](self#retention) for the rules.
    pub fn apply_retention(&mut self, now_ms: u64) -> Result<usize, LogError> {
        self.check_usable()?;
        let mut total: u64 = self.segments.iter().map(|s| s.size).sum();
        let mut doomed = 0;
        for segment in &self.segments[..self.segments.len() - 1] {
            let expired = self.config.retention_ms.is_some_and(|retention| {
                segment
                    .last_timestamp_ms
                    .is_some_and(|newest| now_ms.saturating_sub(newest) > retention)
            });
            let too_big = self.config.retention_bytes.is_some_and(|max| total > max);
            if !expired && !too_big {
                break;
            }
            total -= segment.size;
            doomed += 1;
        }
        if doomed == 0 {
            return Ok(0);
        }
        for _ in 0..doomed {
            // Oldest first: a crash in between leaves a contiguous log.
            pehra_storage::remove_if_present(&self.segments[0].path)?;
            let segment = self.segments.remove(0);
            if let Err(e) = pehra_storage::remove_if_present(&segment.index_path()) {
                tracing::warn!("{e} (the stale index is removed at the next open)");
            }
            tracing::info!(
                path = %segment.path.display(),
                "retention deleted offsets {} to {}",
                segment.base,
                segment.next_offset.saturating_sub(1)
            );
        }
        let log_start = self.log_start_offset();
        clamp_epochs(&mut self.epochs, log_start, self.log_end);
        self.producers.retain(|_, w| w.keep_from(log_start));
        self.damage.retain(|r| r.segment_base >= log_start);
        fsync_dir(&self.dir)?;
        Ok(doomed)
    }

    /// Frames and writes one batch to the active segment (rolling first if needed) and
    /// notes its producer; the caller has validated it.
    fn write_batch(&mut self, batch: &[u8], meta: &BatchMeta) -> Result<(), LogError> {
        let base_offset = self.log_end;
        let next_offset = base_offset + u64::from(meta.record_count);
        let frame_len = segment::BATCH_HEADER_LEN + batch.len() as u64;
        let active = self.segments.last().expect("a log has a segment");
        if !active.is_empty()
            && (active.size + frame_len > self.config.segment_bytes
                || next_offset - 1 - active.base > u64::from(u32::MAX))
        {
            self.roll()?;
        }
        if self.epochs.last().map(|&(epoch, _)| epoch) != Some(meta.leader_epoch) {
            let mut epochs = self.epochs.clone();
            epochs.push((meta.leader_epoch, base_offset));
            epochs::store(&self.dir, &epochs)?;
            self.epochs = epochs;
        }
        let header = BatchHeader {
            payload_len: 0,
            crc: 0,
            base_offset,
            record_count: meta.record_count,
            leader_epoch: meta.leader_epoch,
            max_timestamp_ms: meta.max_timestamp_ms,
            producer: meta.producer,
        };
        self.scratch.clear();
        segment::encode_batch(&mut self.scratch, &header, batch);
        let active = self.segments.last_mut().expect("a log has a segment");
        let pos = active.size;
        self.dirty = true;
        if let Err(e) = active.file.write_all_at(&self.scratch, pos) {
            if matches!(e.raw_os_error(), Some(code) if code == ENOSPC || code == EDQUOT) {
                // Nothing of the batch counts: cut what reached the file (shrinking needs
                // no space), and the log is as before the append.
                if active.file.set_len(pos).is_ok() {
                    return Err(LogError::StorageFull {
                        path: active.path.clone(),
                        source: e,
                    });
                }
            }
            return Err(io_err("write", &active.path)(e));
        }
        if self.scratch.capacity() > 4 * 1024 * 1024 {
            self.scratch = Vec::new();
        }
        index::maybe_add(
            &mut active.index,
            self.config.index_interval_bytes,
            active.base,
            pos,
            base_offset,
        );
        active.size += frame_len;
        active.next_offset = next_offset;
        active.last_timestamp_ms = Some(meta.max_timestamp_ms);
        self.log_end = next_offset;
        segment::note_producer(&mut self.producers, &header);
        Ok(())
    }

    /// Syncs the active segment, writes its index file and starts a new segment at the
    /// log end.
    fn roll(&mut self) -> Result<(), LogError> {
        self.sync_active()?;
        let active = self.segments.last().expect("a log has a segment");
        if let Err(e) = index::write(&self.dir, active.base, &active.index) {
            tracing::warn!("{e} (the index is rebuilt at the next open)");
        }
        let segment = Segment::create(&self.dir, self.log_end)?;
        self.segments.push(segment);
        // The producer state covers the last two segments only, as `open` rebuilds it.
        let floor = self.segments[self.segments.len() - 2].base;
        self.producers.retain(|_, w| w.keep_from(floor));
        Ok(())
    }

    /// fdatasyncs the active segment if it has unsynced bytes; the log end is then durable.
    fn sync_active(&mut self) -> Result<(), LogError> {
        if self.dirty {
            let active = self.segments.last().expect("a log has a segment");
            active
                .file
                .sync_data()
                .map_err(io_err("fdatasync", &active.path))?;
            self.dirty = false;
        }
        self.flushed = self.log_end;
        self.unflushed_batches = 0;
        Ok(())
    }

    /// Cuts the log at `offset`, which starts at byte `size` of segment `k`.
    fn cut(
        &mut self,
        k: usize,
        size: u64,
        offset: u64,
        last_timestamp_ms: Option<u64>,
    ) -> Result<(), LogError> {
        if self.segments.len() > k + 1 {
            while self.segments.len() > k + 1 {
                let segment = self.segments.pop().expect("more than k + 1 segments");
                pehra_storage::remove_if_present(&segment.path)?;
                pehra_storage::remove_if_present(&segment.index_path())?;
            }
            // The deletions must be durable before the truncation below: otherwise a crash
            // could bring back later segments after a hole.
            fsync_dir(&self.dir)?;
        }
        let segment = &mut self.segments[k];
        segment
            .file
            .set_len(size)
            .and_then(|()| segment.file.sync_all())
            .map_err(io_err("truncate", &segment.path))?;
        segment.size = size;
        segment.next_offset = offset;
        segment.last_timestamp_ms = last_timestamp_ms;
        segment.index.retain(|e| u64::from(e.position) < size);
        self.log_end = offset;
        self.flushed = offset;
        self.dirty = false;
        self.unflushed_batches = 0;
        let keep = self.epochs.partition_point(|&(_, start)| start < offset);
        if keep < self.epochs.len() {
            self.epochs.truncate(keep);
            epochs::store(&self.dir, &self.epochs)?;
        }
        Ok(())
    }

    /// [`LogError::OffsetOutOfRange`] unless `offset` is in `log_start ..= log_end`.
    fn check_range(&self, offset: u64) -> Result<(), LogError> {
        let log_start = self.log_start_offset();
        if offset < log_start || offset > self.log_end {
            return Err(LogError::OffsetOutOfRange {
                dir: self.dir.clone(),
                offset,
                log_start,
                log_end: self.log_end,
            });
        }
        Ok(())
    }

    /// The index of the segment holding `offset` (the last one starting at or before it).
    fn segment_holding(&self, offset: u64) -> usize {
        self.segments
            .partition_point(|s| s.base <= offset)
            .checked_sub(1)
            .expect("offset checked against the log start")
    }

    /// Refuses writes once poisoned.
    fn check_usable(&self) -> Result<(), LogError> {
        self.poison.check(|| LogError::Poisoned {
            dir: self.dir.clone(),
        })
    }

    /// Poisons the log if `result` is an error.
    fn poison_on_error<T>(&mut self, result: Result<T, LogError>) -> Result<T, LogError> {
        self.poison.on_error(result)
    }
}

/// Makes `epochs` describe a log of `log_start..log_end`: the epoch in force at the log
/// start is listed from there, and epochs starting at or past the log end are dropped.
fn clamp_epochs(epochs: &mut epochs::Epochs, log_start: u64, log_end: u64) {
    let at_or_before = epochs.partition_point(|&(_, start)| start <= log_start);
    if at_or_before > 0 {
        epochs.drain(..at_or_before - 1);
        epochs[0].1 = log_start;
    }
    epochs.retain(|&(_, start)| start < log_end);
}

/// The last batch of each producer in the last two of `segments`, read from their files
/// (every batch's CRC checked; damage not in `damage` is [`LogError::Corrupt`]).
fn producers_of(segments: &[Segment], damage: &[DamagedRange]) -> Result<Producers, LogError> {
    let mut producers = Producers::new();
    for segment in &segments[segments.len().saturating_sub(2)..] {
        segment.collect_producers(&mut producers, damage)?;
    }
    Ok(producers)
}

/// Builds the mapping of an `io::Error` to [`LogError::Io`] for `op` on `path`.
/// `ENOSPC` and `EDQUOT` on Linux: the disk (or the quota) is full.
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl Fn(io::Error) -> LogError + 'a {
    let io_err = pehra_storage::io_err(op, path);
    move |source| io_err(source).into()
}

/// Makes the entries of `dir` (creations, renames, deletions) durable.
fn fsync_dir(dir: &Path) -> Result<(), LogError> {
    Ok(pehra_storage::fsync_dir(dir)?)
}

impl From<IoError> for LogError {
    fn from(e: IoError) -> Self {
        LogError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}
