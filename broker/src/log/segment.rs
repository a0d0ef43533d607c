//! Segment files: their header, the batch framing, creating a segment, scanning one at
//! recovery and reading batches from one with positional reads.
//!
//! See the [module documentation](super) for the byte layout.

use super::index::{self, IndexEntry};
use super::{io_err, DamagedRange, LogError, ProducerBatch, ProducerEntry, Producers};
use pehra_storage::Numbered;
use std::fs::File;
use std::io::{self, BufReader, ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(super) use super::header::{HEADER_LEN, LOG_MAGIC, LOG_VERSION};
/// Batch header: len, crc, base_offset, record_count, leader_epoch, max_timestamp_ms,
/// producer_id, base_sequence.
pub(super) const BATCH_HEADER_LEN: u64 = 44;
/// The part of the batch header after `len` and `crc`: counted by `len`, covered by the CRC.
const COVERED_HEADER_LEN: u32 = 36;
/// The `producer_id` stored for a batch without a producer (no producer may use it).
pub(super) const NO_PRODUCER_ID: u64 = u64::MAX;
/// The `base_sequence` stored for a batch without a producer.
const NO_BASE_SEQUENCE: u32 = u32::MAX;
/// The largest batch (opaque bytes, without the log's own header) the log accepts.
pub const MAX_BATCH_BYTES: u32 = 64 * 1024 * 1024;

/// Segment files: `<base offset>.log`.
pub(super) const SEGMENTS: Numbered = Numbered::new("", ".log");

/// The file name of the segment whose first batch has `base_offset`.
pub(super) fn file_name(base_offset: u64) -> String {
    SEGMENTS.name(base_offset)
}

/// Why a batch on disk cannot be used (a torn or corrupt batch), for messages.
pub(super) type Damage = String;

/// The log's own header in front of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchHeader {
    /// Length of the opaque batch bytes that follow the header.
    pub(super) payload_len: u32,
    /// The CRC-32 stored in the header.
    pub(super) crc: u32,
    /// Offset of the batch's first record.
    pub(super) base_offset: u64,
    /// Records in the batch (at least 1).
    pub(super) record_count: u32,
    /// Leader epoch the batch was appended in.
    pub(super) leader_epoch: u32,
    /// The newest record timestamp in the batch, as the producer or broker said.
    pub(super) max_timestamp_ms: u64,
    /// The idempotent producer's identity of the batch, if it has one.
    pub(super) producer: Option<ProducerBatch>,
}

impl BatchHeader {
    /// Decodes a header and checks what can be checked without the payload: a possible
    /// length, at least one record, offsets that do not overflow.
    fn parse(bytes: &[u8; BATCH_HEADER_LEN as usize]) -> Result<BatchHeader, Damage> {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let len = u32_at(0);
        if len < COVERED_HEADER_LEN || len - COVERED_HEADER_LEN > MAX_BATCH_BYTES {
            return Err(format!(
                "an impossible length {len} (must be {COVERED_HEADER_LEN} to {})",
                u64::from(COVERED_HEADER_LEN) + u64::from(MAX_BATCH_BYTES)
            ));
        }
        let (producer_id, base_sequence) = (u64_at(32), u32_at(40));
        let producer = if producer_id == NO_PRODUCER_ID {
            if base_sequence != NO_BASE_SEQUENCE {
                return Err(format!(
                    "no producer (producer id {NO_PRODUCER_ID}) but base sequence \
                     {base_sequence} instead of {NO_BASE_SEQUENCE}"
                ));
            }
            None
        } else {
            Some(ProducerBatch {
                producer_id,
                base_sequence,
            })
        };
        let header = BatchHeader {
            payload_len: len - COVERED_HEADER_LEN,
            crc: u32_at(4),
            base_offset: u64_at(8),
            record_count: u32_at(16),
            leader_epoch: u32_at(20),
            max_timestamp_ms: u64_at(24),
            producer,
        };
        if header.record_count == 0 {
            return Err("a record count of 0".to_owned());
        }
        if header
            .base_offset
            .checked_add(u64::from(header.record_count))
            .is_none()
        {
            return Err(format!(
                "offsets that overflow ({} records from offset {})",
                header.record_count, header.base_offset
            ));
        }
        Ok(header)
    }

    /// The header bytes after `len` and `crc`, as stored.
    fn covered_bytes(&self) -> [u8; COVERED_HEADER_LEN as usize] {
        let mut bytes = [0u8; COVERED_HEADER_LEN as usize];
        bytes[0..8].copy_from_slice(&self.base_offset.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.record_count.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.leader_epoch.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
        let (producer_id, base_sequence) = self
            .producer
            .map_or((NO_PRODUCER_ID, NO_BASE_SEQUENCE), |p| {
                (p.producer_id, p.base_sequence)
            });
        bytes[24..32].copy_from_slice(&producer_id.to_le_bytes());
        bytes[32..36].copy_from_slice(&base_sequence.to_le_bytes());
        bytes
    }

    /// The CRC-32 of the covered header bytes followed by `payload`.
    fn compute_crc(&self, payload: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.covered_bytes());
        hasher.update(payload);
        hasher.finalize()
    }

    /// Header plus payload, in bytes.
    pub(super) fn frame_len(&self) -> u64 {
        BATCH_HEADER_LEN + u64::from(self.payload_len)
    }

    /// Offset of the batch's last record.
    pub(super) fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count) - 1
    }

    /// The offset after the batch's last record.
    pub(super) fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// Appends the framing of one batch (header, then `payload`) to `buf`. The caller checks
/// the payload length, the record count and that the producer id is not
/// [`NO_PRODUCER_ID`]; `header.payload_len` and `header.crc` are ignored.
pub(super) fn encode_batch(buf: &mut Vec<u8>, header: &BatchHeader, payload: &[u8]) {
    let payload_len = u32::try_from(payload.len()).expect("payload length checked by the caller");
    debug_assert!(header
        .producer
        .is_none_or(|p| p.producer_id != NO_PRODUCER_ID));
    let header = BatchHeader {
        payload_len,
        crc: 0,
        ..*header
    };
    buf.reserve(BATCH_HEADER_LEN as usize + payload.len());
    buf.extend_from_slice(&(COVERED_HEADER_LEN + payload_len).to_le_bytes());
    buf.extend_from_slice(&header.compute_crc(payload).to_le_bytes());
    buf.extend_from_slice(&header.covered_bytes());
    buf.extend_from_slice(payload);
}

/// Makes the batch of `header`, if it has a producer, that producer's last batch.
pub(super) fn note_producer(producers: &mut Producers, header: &BatchHeader) {
    if let Some(p) = header.producer {
        producers
            .entry(p.producer_id)
            .or_default()
            .push(ProducerEntry {
                base_sequence: p.base_sequence,
                base_offset: header.base_offset,
                record_count: header.record_count,
                leader_epoch: header.leader_epoch,
            });
    }
}

/// Checks the segment header of `file` and returns the file's length. A file too short for
/// the header or without the magic is [`LogError::NotOurs`].
pub(super) fn check_header(file: &File, path: &Path) -> Result<u64, LogError> {
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut header = [0u8; HEADER_LEN as usize];
    if len < HEADER_LEN {
        return Err(LogError::NotOurs {
            path: path.to_owned(),
        });
    }
    file.read_exact_at(&mut header, 0)
        .map_err(io_err("read the header of", path))?;
    if header[..8] != LOG_MAGIC {
        return Err(LogError::NotOurs {
            path: path.to_owned(),
        });
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version == 1 {
        // Version 1 had no producer identity in the batch header.
        return Err(LogError::OldFormat {
            path: path.to_owned(),
            dir: path.parent().map(Path::to_owned).unwrap_or_default(),
            version,
            supported: LOG_VERSION,
        });
    }
    if version != LOG_VERSION {
        return Err(LogError::UnsupportedVersion {
            path: path.to_owned(),
            version,
            supported: LOG_VERSION,
        });
    }
    Ok(len)
}

/// Reads the batch header at `pos` of a segment whose good bytes end at `end`. The outer
/// error is a failed read; the inner one says why there is no whole batch there.
pub(super) fn header_at(
    file: &File,
    path: &Path,
    pos: u64,
    end: u64,
) -> Result<Result<BatchHeader, Damage>, LogError> {
    let available = end.saturating_sub(pos);
    if available < BATCH_HEADER_LEN {
        return Ok(Err(format!(
            "the batch at byte {pos} is truncated ({available} of {BATCH_HEADER_LEN} header bytes)"
        )));
    }
    let mut bytes = [0u8; BATCH_HEADER_LEN as usize];
    file.read_exact_at(&mut bytes, pos)
        .map_err(io_err("read", path))?;
    let header = match BatchHeader::parse(&bytes) {
        Ok(header) => header,
        Err(why) => return Ok(Err(format!("the batch at byte {pos} has {why}"))),
    };
    if header.frame_len() > available {
        return Ok(Err(format!(
            "the batch at byte {pos} is truncated ({available} of {} bytes)",
            header.frame_len()
        )));
    }
    Ok(Ok(header))
}

/// Reads the payload of the batch at `pos` whose header is `header`, and checks its CRC.
pub(super) fn payload_at(
    file: &File,
    path: &Path,
    pos: u64,
    header: &BatchHeader,
) -> Result<Result<Vec<u8>, Damage>, LogError> {
    let mut payload = vec![0u8; header.payload_len as usize];
    file.read_exact_at(&mut payload, pos + BATCH_HEADER_LEN)
        .map_err(io_err("read", path))?;
    if header.compute_crc(&payload) != header.crc {
        return Ok(Err(format!("the batch at byte {pos} fails its CRC check")));
    }
    Ok(Ok(payload))
}

/// Reads and verifies the whole batch at `pos`: its header, its CRC, and that it is the
/// batch starting at `expected_base`. Used where recovery checks a single batch.
pub(super) fn verify_batch_at(
    file: &File,
    path: &Path,
    pos: u64,
    end: u64,
    expected_base: u64,
) -> Result<Result<BatchHeader, Damage>, LogError> {
    let header = match header_at(file, path, pos, end)? {
        Ok(header) => header,
        Err(why) => return Ok(Err(why)),
    };
    if header.base_offset != expected_base {
        return Ok(Err(format!(
            "the batch at byte {pos} has base offset {}, not {expected_base}",
            header.base_offset
        )));
    }
    Ok(payload_at(file, path, pos, &header)?.map(|_| header))
}

/// A [`Read`] over a file through positional reads, so scanning needs no seekable handle.
struct PosReader<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for PosReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads as many bytes as possible into `buf`; returns how many (less than asked only at EOF).
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A stretch of a segment that holds no good batch, with good batches after it: found by a
/// scan that met a torn or corrupt batch and then a later batch that parses, passes its CRC
/// check and has offsets that fit ([`find_next_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stretch {
    /// Where the first bad batch starts.
    pub(super) position: u64,
    /// Where the next good batch starts.
    pub(super) end_position: u64,
    /// The offset the first bad batch should have started at.
    pub(super) first_offset: u64,
    /// The base offset of the next good batch.
    pub(super) end_offset: u64,
    /// What was wrong with the first bad batch.
    pub(super) detail: Damage,
}

/// How a scan of (part of) a segment ended.
#[derive(Debug)]
pub(super) struct ScanEnd {
    /// The length up to the end of the last good batch.
    pub(super) valid_len: u64,
    /// The offset after the last good batch (the expected base if there was none).
    pub(super) next_offset: u64,
    /// How many good batches were read.
    pub(super) batches: u64,
    /// Damaged stretches with good batches after them, in order.
    pub(super) stretches: Vec<Stretch>,
    /// Why reading stopped before the end of the file, if it did: a torn or corrupt batch
    /// at `valid_len` with no good batch after it in the file.
    pub(super) cut: Option<Damage>,
}

/// Where a scan may look for good batches after a damaged one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// The segment's base offset (batch offsets relative to it must fit in a `u32`).
    pub(super) base: u64,
    /// No batch of the segment may hold this offset or a later one (the next segment's
    /// base, or `u64::MAX` when unknown).
    pub(super) offset_limit: u64,
}

/// Looks for the first good batch starting at or after byte `from` (and before `file_len`)
/// that could follow a damaged batch: its header parses, its frame fits in the file, its CRC
/// checks out, its base offset is at least `min_base` and its offsets fit `bounds`. Reads
/// the file in chunks and tries every byte position; the payload of a candidate is read
/// only when its header passes.
pub(super) fn find_next_batch(
    file: &File,
    path: &Path,
    file_len: u64,
    from: u64,
    min_base: u64,
    bounds: Bounds,
) -> Result<Option<(u64, BatchHeader)>, LogError> {
    const CHUNK: usize = 1 << 20;
    const H: usize = BATCH_HEADER_LEN as usize;
    let mut buf = vec![0u8; CHUNK + H];
    let mut start = from;
    while start + BATCH_HEADER_LEN <= file_len {
        let want = (buf.len() as u64).min(file_len - start) as usize;
        file.read_exact_at(&mut buf[..want], start)
            .map_err(io_err("read", path))?;
        let candidates = want - H + 1;
        for i in 0..candidates {
            let bytes: &[u8; H] = buf[i..i + H].try_into().expect("a whole header");
            let Ok(header) = BatchHeader::parse(bytes) else {
                continue;
            };
            let pos = start + i as u64;
            let fits = header.base_offset >= min_base
                && header.base_offset >= bounds.base
                && header.last_offset() - bounds.base <= u64::from(u32::MAX)
                && header.next_offset() <= bounds.offset_limit
                && header.frame_len() <= file_len - pos;
            if fits && payload_at(file, path, pos, &header)?.is_ok() {
                return Ok(Some((pos, header)));
            }
        }
        start += candidates as u64;
    }
    Ok(None)
}

/// Reads a segment sequentially from byte `start` (a batch boundary) to `file_len`,
/// checking every batch's CRC and calling `on_batch(position, header)` for each good one.
///
/// At a torn or corrupt batch it looks for a later good batch ([`find_next_batch`]): if
/// there is one, the bytes in between are a [`Stretch`] and the scan goes on from it; if
/// not, the scan ends there ([`ScanEnd::cut`]). A good batch read in sequence whose base
/// offset is not the one expected (`expected_base` for the first, then the previous
/// batch's next offset) is [`LogError::Corrupt`]: offsets must be contiguous.
pub(super) fn scan(
    file: &File,
    path: &Path,
    file_len: u64,
    start: u64,
    expected_base: u64,
    bounds: Bounds,
    mut on_batch: impl FnMut(u64, &BatchHeader),
) -> Result<ScanEnd, LogError> {
    let read_err = io_err("read", path);
    let reader_at = |pos| BufReader::with_capacity(64 * 1024, PosReader { file, pos });
    let mut reader = reader_at(start);
    let mut pos = start;
    let mut next = expected_base;
    let mut batches = 0;
    let mut stretches = Vec::new();
    let mut payload = Vec::new();
    'scan: loop {
        if pos >= file_len {
            break;
        }
        let damage = 'batch: {
            let mut bytes = [0u8; BATCH_HEADER_LEN as usize];
            let got = read_full(&mut reader, &mut bytes).map_err(&read_err)?;
            if got < bytes.len() {
                break 'batch format!(
                    "the batch at byte {pos} is truncated ({got} of {BATCH_HEADER_LEN} header \
                     bytes)"
                );
            }
            let header = match BatchHeader::parse(&bytes) {
                Ok(header) => header,
                Err(why) => break 'batch format!("the batch at byte {pos} has {why}"),
            };
            let remaining = file_len - pos - BATCH_HEADER_LEN;
            if u64::from(header.payload_len) > remaining {
                break 'batch format!(
                    "the batch at byte {pos} is truncated ({remaining} of {} payload bytes)",
                    header.payload_len
                );
            }
            payload.resize(header.payload_len as usize, 0);
            let got = read_full(&mut reader, &mut payload).map_err(&read_err)?;
            if got < payload.len() {
                // The file shrank while we read it.
                break 'batch format!(
                    "the batch at byte {pos} is truncated ({got} of {} payload bytes)",
                    header.payload_len
                );
            }
            if header.compute_crc(&payload) != header.crc {
                break 'batch format!("the batch at byte {pos} fails its CRC check");
            }
            if header.base_offset != next {
                return Err(LogError::Corrupt {
                    path: path.to_owned(),
                    detail: format!(
                        "the batch at byte {pos} has base offset {} where offset {next} must \
                         come next: offsets must be contiguous",
                        header.base_offset
                    ),
                });
            }
            on_batch(pos, &header);
            pos += header.frame_len();
            next = header.next_offset();
            batches += 1;
            continue 'scan;
        };
        // A damaged batch (at least one record): is there a good one after it?
        match find_next_batch(file, path, file_len, pos + 1, next + 1, bounds)? {
            Some((found, header)) => {
                stretches.push(Stretch {
                    position: pos,
                    end_position: found,
                    first_offset: next,
                    end_offset: header.base_offset,
                    detail: damage,
                });
                pos = found;
                next = header.base_offset;
                reader = reader_at(pos);
            }
            None => {
                return Ok(ScanEnd {
                    valid_len: pos,
                    next_offset: next,
                    batches,
                    stretches,
                    cut: Some(damage),
                })
            }
        }
    }
    Ok(ScanEnd {
        valid_len: pos,
        next_offset: next,
        batches,
        stretches,
        cut: None,
    })
}

/// One segment file of an open log.
#[derive(Debug)]
pub(super) struct Segment {
    /// Offset of its first batch (also in its name).
    pub(super) base: u64,
    /// Its path, for error messages.
    pub(super) path: PathBuf,
    /// Open for reading and writing.
    pub(super) file: File,
    /// Bytes of header and good batches; appends go here.
    pub(super) size: u64,
    /// The offset after its last batch (`base` when it has none).
    pub(super) next_offset: u64,
    /// `max_timestamp_ms` of its last batch, `None` when it has none.
    pub(super) last_timestamp_ms: Option<u64>,
    /// The sparse offset index (in memory; the file is only a cache of it).
    pub(super) index: Vec<IndexEntry>,
}

impl Segment {
    /// Creates the empty segment `<base>.log` atomically: the header goes to a temporary
    /// file that is synced, renamed into place and made durable by syncing the directory,
    /// so a segment never exists with a torn header.
    pub(super) fn create(dir: &Path, base: u64) -> Result<Segment, LogError> {
        let name = file_name(base);
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(&LOG_MAGIC);
        header[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
        let file = pehra_storage::create_with_header(dir, &name, &header)?;
        let path = dir.join(name);
        Ok(Segment {
            base,
            path,
            file,
            size: HEADER_LEN,
            next_offset: base,
            last_timestamp_ms: None,
            index: Vec::new(),
        })
    }

    /// Reads every batch (checking its CRC) and adds each producer's batches in it to that
    /// producer's window in `producers`. Damage is [`LogError::Corrupt`], unless `damage`
    /// (the log's recorded ranges) has it.
    pub(super) fn collect_producers(
        &self,
        producers: &mut Producers,
        damage: &[DamagedRange],
    ) -> Result<(), LogError> {
        let end = scan(
            &self.file,
            &self.path,
            self.size,
            HEADER_LEN,
            self.base,
            self.bounds(),
            |_, header| note_producer(producers, header),
        )?;
        let known = |position| {
            damage
                .iter()
                .any(|r| r.segment_base == self.base && r.position == position)
        };
        if let Some(stretch) = end.stretches.iter().find(|s| !known(s.position)) {
            return Err(self.corrupt(stretch.detail.clone()));
        }
        if let Some(why) = end.cut {
            // A recorded range may run to the end of the segment.
            return if known(end.valid_len) {
                Ok(())
            } else {
                Err(self.corrupt(why))
            };
        }
        if end.next_offset != self.next_offset {
            return Err(self.corrupt(format!(
                "its batches end before offset {}, not {}",
                end.next_offset, self.next_offset
            )));
        }
        Ok(())
    }

    /// Where a scan of this segment may look for good batches after a damaged one.
    pub(super) fn bounds(&self) -> Bounds {
        Bounds {
            base: self.base,
            offset_limit: self.next_offset,
        }
    }

    /// The recorded damaged range of this segment that starts at byte `pos`, if any.
    pub(super) fn range_at<'a>(
        &self,
        damage: &'a [DamagedRange],
        pos: u64,
    ) -> Option<&'a DamagedRange> {
        damage
            .iter()
            .find(|r| r.segment_base == self.base && r.position == pos)
    }

    /// Calls `on_batch(position, header)` for the header of every batch, in order, stepping
    /// over the recorded damaged ranges (no CRC check).
    pub(super) fn walk_headers(
        &self,
        damage: &[DamagedRange],
        mut on_batch: impl FnMut(u64, &BatchHeader),
    ) -> Result<(), LogError> {
        let mut pos = HEADER_LEN;
        while pos < self.size {
            if let Some(range) = self.range_at(damage, pos) {
                pos = range.end_position;
                continue;
            }
            let header = self.header_at(pos)?;
            on_batch(pos, &header);
            pos += header.frame_len();
        }
        Ok(())
    }

    /// The path of its index file.
    pub(super) fn index_path(&self) -> PathBuf {
        self.path.with_file_name(index::file_name(self.base))
    }

    /// Whether it holds no batch.
    pub(super) fn is_empty(&self) -> bool {
        self.next_offset == self.base
    }

    /// A damaged batch found while serving: always an error naming the file.
    fn corrupt(&self, why: Damage) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            detail: why,
        }
    }

    /// The header of the batch at `pos` (a batch boundary below `size`).
    pub(super) fn header_at(&self, pos: u64) -> Result<BatchHeader, LogError> {
        header_at(&self.file, &self.path, pos, self.size)?.map_err(|why| self.corrupt(why))
    }

    /// The position and header of the batch holding `offset` (which must lie in
    /// `base..next_offset` and outside the recorded `damage`): the index gives the nearest
    /// batch at or before it, then the headers are walked, stepping over damaged ranges. An
    /// index entry that does not point at the batch it names is not trusted: the walk then
    /// starts at the first batch.
    pub(super) fn locate(
        &self,
        offset: u64,
        damage: &[DamagedRange],
    ) -> Result<(u64, BatchHeader), LogError> {
        debug_assert!(self.base <= offset && offset < self.next_offset);
        let rel = offset - self.base;
        let (mut pos, mut expected) = (HEADER_LEN, self.base);
        if let Some(entry) = u32::try_from(rel)
            .ok()
            .and_then(|rel| index::lookup(&self.index, rel))
        {
            let entry_pos = u64::from(entry.position);
            let entry_base = self.base + u64::from(entry.rel_offset);
            let inside = damage.iter().find(|r| {
                r.segment_base == self.base && r.position <= entry_pos && entry_pos < r.end_position
            });
            match (
                inside,
                header_at(&self.file, &self.path, entry_pos, self.size)?,
            ) {
                // An entry made before the damage was found: walk on from its end.
                (Some(range), _) if offset >= range.end_offset => {
                    (pos, expected) = (range.end_position, range.end_offset);
                }
                (None, Ok(header)) if header.base_offset == entry_base => {
                    (pos, expected) = (entry_pos, entry_base);
                }
                _ => tracing::warn!(
                    path = %self.path.display(),
                    "index entry (offset {entry_base} at byte {entry_pos}) is wrong; scanning the \
                     segment from its start"
                ),
            }
        }
        loop {
            // As in the scrub: a range empty of bytes is stepped over once, not for ever.
            if let Some(range) = self
                .range_at(damage, pos)
                .filter(|r| (r.end_position, r.end_offset) != (pos, expected))
            {
                (pos, expected) = (range.end_position, range.end_offset);
                continue;
            }
            let header = self.header_at(pos)?;
            if header.base_offset != expected {
                return Err(self.corrupt(format!(
                    "the batch at byte {pos} has base offset {} where offset {expected} must \
                     come next",
                    header.base_offset
                )));
            }
            if offset <= header.last_offset() {
                return Ok((pos, header));
            }
            pos += header.frame_len();
            expected = header.next_offset();
        }
    }
}
