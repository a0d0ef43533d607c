//! The leader-epoch checkpoint `leader-epochs`: for each leader epoch in the log, the
//! offset of its first batch.
//!
//! It saves reading every batch header at start-up: recovery trusts it for the segments
//! before the last one and rebuilds the rest from the scan of the last segment. A damaged
//! or missing checkpoint is rebuilt from the batch headers, since the log holds the same
//! facts.

use super::{io_err, LogError};
use std::fs;
use std::io;
use std::path::Path;

/// The checkpoint's file name in the partition directory.
pub(super) const FILE_NAME: &str = "leader-epochs";
/// The first 8 bytes of the checkpoint.
const MAGIC: [u8; 8] = *b"PEHRAEPO";
/// The checkpoint format version this build writes and reads.
const VERSION: u32 = 1;
/// magic + version + count.
const HEADER_LEN: usize = 16;
/// epoch u32 + start offset u64.
const ENTRY_LEN: usize = 12;

/// `(leader epoch, offset of its first batch)`, both strictly increasing.
pub(super) type Epochs = Vec<(u32, u64)>;

/// What the checkpoint file held.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Loaded {
    /// No checkpoint file.
    Missing,
    /// A checkpoint that cannot be used (logged).
    Damaged,
    /// A well-formed checkpoint.
    Valid(Epochs),
}

/// Whether epochs and start offsets both strictly increase.
pub(super) fn well_formed(epochs: &[(u32, u64)]) -> bool {
    epochs
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
}

/// The CRC-32 of the count and the entries.
fn crc(body: &[u8]) -> u32 {
    crc32fast::hash(body)
}

/// Reads the checkpoint in `dir`.
pub(super) fn load(dir: &Path) -> Result<Loaded, LogError> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    match decode(&bytes) {
        Ok(epochs) => Ok(Loaded::Valid(epochs)),
        Err(why) => {
            tracing::warn!(path = %path.display(), "leader-epoch checkpoint unusable, rebuilding it: {why}");
            Ok(Loaded::Damaged)
        }
    }
}

/// Decodes a checkpoint file.
fn decode(bytes: &[u8]) -> Result<Epochs, String> {
    if bytes.len() < HEADER_LEN + 4 || bytes[..8] != MAGIC {
        return Err("bad or missing header".to_owned());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!(
            "format version {version}, this build reads {VERSION}"
        ));
    }
    let count = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let expected_len = count
        .checked_mul(ENTRY_LEN)
        .and_then(|n| n.checked_add(HEADER_LEN + 4));
    if expected_len != Some(bytes.len()) {
        return Err(format!("{} bytes do not hold {count} entries", bytes.len()));
    }
    let (body, stored_crc) = bytes.split_at(bytes.len() - 4);
    let stored_crc = u32::from_le_bytes(stored_crc.try_into().expect("4 bytes"));
    if crc(&body[12..]) != stored_crc {
        return Err("it fails its CRC check".to_owned());
    }
    let epochs: Epochs = body[HEADER_LEN..]
        .chunks_exact(ENTRY_LEN)
        .map(|e| {
            (
                u32::from_le_bytes(e[0..4].try_into().expect("4 bytes")),
                u64::from_le_bytes(e[4..12].try_into().expect("8 bytes")),
            )
        })
        .collect();
    if !well_formed(&epochs) {
        return Err("its epochs or offsets do not increase".to_owned());
    }
    Ok(epochs)
}

/// Replaces the checkpoint in `dir` atomically and durably: temporary file, fsync, rename,
/// fsync of the directory.
pub(super) fn store(dir: &Path, epochs: &[(u32, u64)]) -> Result<(), LogError> {
    Ok(pehra_storage::file::replace_durably(
        dir,
        FILE_NAME,
        &encode(epochs),
    )?)
}

/// The checkpoint's bytes for `epochs`.
pub(super) fn encode(epochs: &[(u32, u64)]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + epochs.len() * ENTRY_LEN + 4);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    let count = u32::try_from(epochs.len()).expect("fewer than 2^32 leader epochs");
    bytes.extend_from_slice(&count.to_le_bytes());
    for (epoch, start) in epochs {
        bytes.extend_from_slice(&epoch.to_le_bytes());
        bytes.extend_from_slice(&start.to_le_bytes());
    }
    let crc = crc(&bytes[12..]);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_round_trip_and_damage() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(load(tmp.path()).unwrap(), Loaded::Missing);
        let epochs = vec![(1, 0), (4, 17), (9, 1000)];
        store(tmp.path(), &epochs).unwrap();
        assert_eq!(load(tmp.path()).unwrap(), Loaded::Valid(epochs));
        store(tmp.path(), &[]).unwrap();
        assert_eq!(load(tmp.path()).unwrap(), Loaded::Valid(vec![]));

        store(tmp.path(), &[(1, 0), (2, 5)]).unwrap();
        let path = tmp.path().join(FILE_NAME);
        let good = fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            assert_eq!(load(tmp.path()).unwrap(), Loaded::Damaged, "flip at {at}");
        }
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert_eq!(load(tmp.path()).unwrap(), Loaded::Damaged);
    }
}
