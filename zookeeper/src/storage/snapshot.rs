//! Snapshot files: writing one atomically, reading and verifying one.
//!
//! See the [module documentation](super) for the byte layout.

use super::{fsync_dir, io_err, StorageError};
use pehra_storage::Numbered;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The first 8 bytes of every snapshot.
const SNAP_MAGIC: [u8; 8] = *b"PEHRASNP";
/// The snapshot format version this build writes and reads.
const SNAP_VERSION: u32 = 1;
/// magic (8) + version (4) + zxid (8) + len (8) + crc (4).
const SNAP_HEADER_LEN: usize = 32;

/// Snapshots: `snapshot.<the zxid they cover up to>`.
pub(super) const SNAPSHOTS: Numbered = Numbered::new("snapshot.", "");

/// The file name of the snapshot covering up to `zxid`.
pub(super) fn file_name(zxid: u64) -> String {
    SNAPSHOTS.name(zxid)
}

/// The CRC-32 of a snapshot: over its zxid (LE), its length (LE) and its bytes.
fn snapshot_crc(zxid: u64, state: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&zxid.to_le_bytes());
    hasher.update(&(state.len() as u64).to_le_bytes());
    hasher.update(state);
    hasher.finalize()
}

/// Writes `snapshot.<zxid>` atomically (temporary file, fsync, rename, fsync of the
/// directory) and returns its path. On error no snapshot file has been replaced.
pub(super) fn write(dir: &Path, zxid: u64, state: &[u8]) -> Result<PathBuf, StorageError> {
    let path = dir.join(file_name(zxid));
    let tmp = dir.join(format!("{}.tmp", file_name(zxid)));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let mut header = [0u8; SNAP_HEADER_LEN];
        header[0..8].copy_from_slice(&SNAP_MAGIC);
        header[8..12].copy_from_slice(&SNAP_VERSION.to_le_bytes());
        header[12..20].copy_from_slice(&zxid.to_le_bytes());
        header[20..28].copy_from_slice(&(state.len() as u64).to_le_bytes());
        header[28..32].copy_from_slice(&snapshot_crc(zxid, state).to_le_bytes());
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        out.write_all(&header)
            .and_then(|()| out.write_all(state))
            .map_err(io_err("write", &tmp))?;
        let file = out
            .into_inner()
            .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io_err("rename into place", &tmp))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(dir)?;
    Ok(path)
}

/// What reading a snapshot file found.
#[derive(Debug)]
pub(super) enum Read {
    /// The file verifies: its bytes.
    Valid(Vec<u8>),
    /// The file is damaged (or not a snapshot at all): why.
    Corrupt(String),
}

/// Reads and verifies the snapshot at `path`, whose name says it covers up to `zxid`.
///
/// Damage (a short file, a wrong magic, a checksum, length or zxid mismatch) is reported as
/// [`Read::Corrupt`] so that recovery can fall back to an older snapshot; an I/O error or a
/// format version this build does not know is an error.
pub(super) fn read(path: &Path, zxid: u64) -> Result<Read, StorageError> {
    let bytes = std::fs::read(path).map_err(io_err("read", path))?;
    if bytes.len() < SNAP_HEADER_LEN {
        return Ok(Read::Corrupt(format!(
            "{} bytes, shorter than the {SNAP_HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    if bytes[0..8] != SNAP_MAGIC {
        return Ok(Read::Corrupt("bad magic: not a Pehra snapshot".into()));
    }
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != SNAP_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_owned(),
            version,
            supported: SNAP_VERSION,
        });
    }
    let file_zxid = u64_at(12);
    let len = u64_at(20);
    let crc = u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes"));
    let body = &bytes[SNAP_HEADER_LEN..];
    if len != body.len() as u64 {
        return Ok(Read::Corrupt(format!(
            "the header says {len} bytes of state but the file holds {}",
            body.len()
        )));
    }
    if snapshot_crc(file_zxid, body) != crc {
        return Ok(Read::Corrupt("the checksum does not match".into()));
    }
    if file_zxid != zxid {
        return Ok(Read::Corrupt(format!(
            "the file covers zxid {file_zxid} but its name says {zxid}"
        )));
    }
    let mut bytes = bytes;
    bytes.drain(..SNAP_HEADER_LEN);
    Ok(Read::Valid(bytes))
}
