//! The reset marker `reset-to`: the intent of [`PartitionLog::reset_to`](super::PartitionLog::reset_to),
//! made durable before it deletes anything and removed once the directory holds only the
//! new empty segment.
//!
//! Recovery finishes a reset it finds marked, so a crash at any point leaves the old log
//! (the marker never became durable) or the new empty one.

use super::epochs;
use super::index;
use super::segment::Segment;
use super::{fsync_dir, io_err, LogError};
use pehra_storage::file::{remove_if_present, replace_durably};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The marker's file name in the partition directory.
pub(super) const FILE_NAME: &str = "reset-to";
/// The first 8 bytes of the marker.
const MAGIC: [u8; 8] = *b"PEHRARST";
/// The marker format version this build writes and reads.
const VERSION: u32 = 1;
/// magic + version + start offset + crc.
const LEN: usize = 24;

/// Makes the marker for a reset to `start_offset` durable in `dir`.
pub(super) fn store(dir: &Path, start_offset: u64) -> Result<(), LogError> {
    let mut bytes = Vec::with_capacity(LEN);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&start_offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes[8..20]);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(replace_durably(dir, FILE_NAME, &bytes)?)
}

/// The start offset of the reset marked in `dir`, if one is. A marker that cannot be read
/// is [`LogError::Corrupt`]: it is only ever replaced atomically, so it is damage, and
/// where the reset was going is unknown.
pub(super) fn load(dir: &Path) -> Result<Option<u64>, LogError> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let damaged = |why: &str| LogError::Corrupt {
        path: path.clone(),
        detail: format!(
            "the marker of an interrupted reset is unusable ({why}), so the offset the log \
             was being reset to is unknown; delete the partition directory to start it over"
        ),
    };
    if bytes.len() != LEN || bytes[..8] != MAGIC {
        return Err(damaged("bad header or length"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let stored_crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[8..20]) != stored_crc {
        return Err(damaged("it fails its CRC check"));
    }
    if version != VERSION {
        return Err(damaged(&format!(
            "format version {version}, this build reads {VERSION}"
        )));
    }
    Ok(Some(u64::from_le_bytes(
        bytes[12..20].try_into().expect("8 bytes"),
    )))
}

/// Carries out the reset marked in `dir` (the marker must be durable): deletes every segment
/// of `listing` (the directory's segments, as recovery lists them) and its index (oldest
/// first), creates the empty segment at `start_offset`, empties the
/// leader-epoch checkpoint and removes the marker. Repeating it after a crash part-way
/// gives the same result.
pub(super) fn finish(
    dir: &Path,
    start_offset: u64,
    listing: Vec<(u64, PathBuf)>,
) -> Result<Segment, LogError> {
    for (base, path) in listing {
        remove_if_present(&path)?;
        remove_if_present(&dir.join(index::file_name(base)))?;
    }
    fsync_dir(dir)?;
    let segment = Segment::create(dir, start_offset)?;
    epochs::store(dir, &[])?;
    remove_if_present(&dir.join(FILE_NAME))?;
    fsync_dir(dir)?;
    Ok(segment)
}
