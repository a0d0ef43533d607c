//! Log segments: their header, the record encoding, creating a segment and scanning one.
//!
//! See the [module documentation](super) for the byte layout.

use super::{io_err, StorageError};
use pehra_storage::Numbered;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The first 8 bytes of every log segment.
pub(super) const LOG_MAGIC: [u8; 8] = *b"PEHRAWAL";
/// The segment format version this build writes and reads.
pub(super) const LOG_VERSION: u32 = 1;
/// Segment header: magic + version.
pub(super) const LOG_HEADER_LEN: u64 = 12;
/// Record header: len (u32) + crc (u32) + zxid (u64).
pub(super) const RECORD_HEADER_LEN: u64 = 16;
/// The largest payload accepted in one record, in bytes.
pub const MAX_RECORD_LEN: u32 = 64 * 1024 * 1024;

/// Log segments: `log.<the zxid of the first record>`.
pub(super) const SEGMENTS: Numbered = Numbered::new("log.", "");

/// The file name of the segment whose first record has `first_zxid`.
pub(super) fn file_name(first_zxid: u64) -> String {
    SEGMENTS.name(first_zxid)
}

/// The CRC-32 of a record: over its zxid (LE) then its payload.
fn record_crc(zxid: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&zxid.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the encoding of one record to `buf`. The caller checks the payload length.
pub(super) fn encode_record(buf: &mut Vec<u8>, zxid: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload length checked by the caller");
    buf.reserve(RECORD_HEADER_LEN as usize + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&record_crc(zxid, payload).to_le_bytes());
    buf.extend_from_slice(&zxid.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The zxid of the first record encoded in `buf` (which must hold at least one record).
pub(super) fn first_zxid_in(buf: &[u8]) -> u64 {
    let bytes: [u8; 8] = buf[8..16].try_into().expect("a whole record header");
    u64::from_le_bytes(bytes)
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct Segment {
    /// Its path, for error messages.
    pub(super) path: PathBuf,
    /// Open for writing, positioned at the end of the last good record.
    pub(super) file: File,
    /// Its length: where the next record goes.
    pub(super) end: u64,
    /// Disk space is allocated (`fallocate`, the length unchanged) up to here.
    pub(super) reserved_to: u64,
}

impl Segment {
    /// Creates the segment `log.<first_zxid>` atomically: the header goes to a temporary file
    /// that is synced, renamed into place and made durable by syncing the directory. A
    /// segment therefore never exists with a torn header.
    pub(super) fn create(dir: &Path, first_zxid: u64) -> Result<Segment, StorageError> {
        let name = file_name(first_zxid);
        let mut header = [0u8; LOG_HEADER_LEN as usize];
        header[..8].copy_from_slice(&LOG_MAGIC);
        header[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
        let file = pehra_storage::create_with_header(dir, &name, &header)?;
        Ok(Segment {
            path: dir.join(name),
            file,
            end: LOG_HEADER_LEN,
            reserved_to: LOG_HEADER_LEN,
        })
    }

    /// Opens an existing, already scanned segment for appending after its first `len` bytes.
    pub(super) fn open_at(path: &Path, len: u64) -> Result<Segment, StorageError> {
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err("open for appending", path))?;
        file.seek(SeekFrom::Start(len))
            .map_err(io_err("seek in", path))?;
        Ok(Segment {
            path: path.to_owned(),
            file,
            end: len,
            reserved_to: len,
        })
    }
}

/// How a scan of one segment ended.
#[derive(Debug)]
pub(super) struct ScanEnd {
    /// The file's length.
    pub(super) file_len: u64,
    /// The length up to the end of the last good record (at least the header).
    pub(super) valid_len: u64,
    /// Why reading stopped before `file_len`, if it did.
    pub(super) cut: Option<String>,
    /// After a `cut`: the first good record after it in the file, `(byte position, zxid)`,
    /// if there is one. Then the damage is not a torn tail.
    pub(super) resync: Option<(u64, u64)>,
    /// The zxid the record at `valid_len` should have (after the last good one).
    pub(super) next_zxid: u64,
}

/// Reads as many bytes as possible into `buf`; returns how many (less than asked only at EOF).
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
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

/// The record header at the start of `bytes`: `(len, crc, zxid)`.
fn parse_header(bytes: &[u8]) -> (u32, u32, u64) {
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let zxid = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    (u32_at(0), u32_at(4), zxid)
}

/// Looks for the first good record at or after byte `from` that could follow a damaged
/// record at byte `damaged_at` whose zxid should have been `expected`: its length is
/// possible, it fits in the file, its CRC checks out, and its zxid is after `expected` but
/// no further than one zxid per 16 bytes from `damaged_at` (zxids are contiguous and a
/// record takes at least 16 bytes). Tries every byte position.
fn find_next_record(
    file: &File,
    path: &Path,
    file_len: u64,
    damaged_at: u64,
    expected: u64,
) -> Result<Option<(u64, u64)>, StorageError> {
    const CHUNK: usize = 1 << 20;
    const H: usize = RECORD_HEADER_LEN as usize;
    let mut buf = vec![0u8; CHUNK + H];
    let mut start = damaged_at + 1;
    while start + RECORD_HEADER_LEN <= file_len {
        let want = (buf.len() as u64).min(file_len - start) as usize;
        file.read_exact_at(&mut buf[..want], start)
            .map_err(io_err("read", path))?;
        let candidates = want - H + 1;
        for i in 0..candidates {
            let (len, crc, zxid) = parse_header(&buf[i..i + H]);
            let pos = start + i as u64;
            let max_zxid = expected.saturating_add((pos - damaged_at) / RECORD_HEADER_LEN);
            if len > MAX_RECORD_LEN
                || u64::from(len) > file_len - pos - RECORD_HEADER_LEN
                || zxid <= expected
                || zxid > max_zxid
            {
                continue;
            }
            let mut payload = vec![0u8; len as usize];
            file.read_exact_at(&mut payload, pos + RECORD_HEADER_LEN)
                .map_err(io_err("read", path))?;
            if record_crc(zxid, &payload) == crc {
                return Ok(Some((pos, zxid)));
            }
        }
        start += candidates as u64;
    }
    Ok(None)
}

/// Reads a segment from byte `start` (a record boundary; the segment header is checked
/// whatever it is), calling `on_record(zxid, payload, encoded_len)` for every good record
/// in order, and stops at the end of the file or at the first torn or corrupt record (which
/// [`ScanEnd::cut`] describes; [`ScanEnd::resync`] then says where the next good record
/// is, if any). `expected` is the zxid the first record read should have (for the resync
/// only: the caller checks the zxids). A missing or foreign header is an error.
pub(super) fn scan(
    path: &Path,
    start: u64,
    expected: u64,
    mut on_record: impl FnMut(u64, Vec<u8>, u64) -> Result<(), StorageError>,
) -> Result<ScanEnd, StorageError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let file_len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut reader = BufReader::with_capacity(64 * 1024, &file);
    let read_err = io_err("read", path);

    let mut header = [0u8; LOG_HEADER_LEN as usize];
    let got = read_full(&mut reader, &mut header).map_err(&read_err)?;
    if got < header.len() || header[..8] != LOG_MAGIC {
        return Err(StorageError::NotOurs {
            path: path.to_owned(),
            what: "log segment",
        });
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != LOG_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_owned(),
            version,
            supported: LOG_VERSION,
        });
    }
    if start > LOG_HEADER_LEN {
        reader
            .seek(SeekFrom::Start(start))
            .map_err(io_err("seek in", path))?;
    }

    let mut offset = start;
    let mut next = expected;
    let cut = loop {
        if offset == file_len {
            break None;
        }
        let mut rec = [0u8; RECORD_HEADER_LEN as usize];
        let got = read_full(&mut reader, &mut rec).map_err(&read_err)?;
        if got < rec.len() {
            break Some(format!(
                "the record at byte {offset} is truncated ({got} of {RECORD_HEADER_LEN} header bytes)"
            ));
        }
        let (len, crc, zxid) = parse_header(&rec);
        if len > MAX_RECORD_LEN {
            break Some(format!(
                "the record at byte {offset} has an impossible length {len} (max {MAX_RECORD_LEN})"
            ));
        }
        let remaining = file_len - offset - RECORD_HEADER_LEN;
        if u64::from(len) > remaining {
            break Some(format!(
                "the record at byte {offset} is truncated ({remaining} of {len} payload bytes)"
            ));
        }
        let mut payload = vec![0u8; len as usize];
        let got = read_full(&mut reader, &mut payload).map_err(&read_err)?;
        if got < payload.len() {
            // The file shrank while we read it.
            break Some(format!(
                "the record at byte {offset} is truncated ({got} of {len} payload bytes)"
            ));
        }
        if record_crc(zxid, &payload) != crc {
            break Some(format!("the record at byte {offset} fails its CRC check"));
        }
        let encoded = RECORD_HEADER_LEN + u64::from(len);
        on_record(zxid, payload, encoded)?;
        offset += encoded;
        next = zxid.saturating_add(1);
    };
    let resync = match cut {
        Some(_) => find_next_record(&file, path, file_len, offset, next)?,
        None => None,
    };
    Ok(ScanEnd {
        file_len,
        valid_len: offset,
        cut,
        resync,
        next_zxid: next,
    })
}
