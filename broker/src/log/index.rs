//! The sparse offset index of a segment: entries `(relative offset, file position)`, one
//! per `index_interval_bytes` of batches, kept in memory and cached in `<base>.index`.
//!
//! The index is only an optimisation. Its file is written without fsync and is checked
//! before use; anything odd about it means it is rebuilt from the segment.

use super::header::HEADER_LEN;
use super::{io_err, LogError};
use pehra_storage::Numbered;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Bytes per entry in the index file.
pub(super) const ENTRY_LEN: usize = 8;

/// One index entry: the batch with base offset `segment base + rel_offset` starts at byte
/// `position` of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IndexEntry {
    /// Base offset of the batch, relative to the segment's base offset.
    pub(super) rel_offset: u32,
    /// Byte position of the batch in the segment file.
    pub(super) position: u32,
}

/// The file name of the index of the segment with `base_offset`.
pub(super) fn file_name(base_offset: u64) -> String {
    INDEXES.name(base_offset)
}

/// Index files: `<base offset of their segment>.index`.
pub(super) const INDEXES: Numbered = Numbered::new("", ".index");

/// Adds an entry for the batch with base offset `batch_base` at byte `position` of the
/// segment with `segment_base` if it is due: when at least `interval` bytes of batches
/// lie between the previous entry (or the segment header) and `position`. The rule depends
/// only on the batches, so rebuilding gives the same entries as appending did. A batch at
/// or before the last entry is ignored (a scan resuming at an entry visits it again).
pub(super) fn maybe_add(
    index: &mut Vec<IndexEntry>,
    interval: u32,
    segment_base: u64,
    position: u64,
    batch_base: u64,
) {
    let last = index.last().map_or(HEADER_LEN, |e| u64::from(e.position));
    if !index.is_empty() && position <= last {
        return;
    }
    if position - last >= u64::from(interval) {
        index.push(IndexEntry {
            rel_offset: u32::try_from(batch_base - segment_base)
                .expect("segments roll before relative offsets overflow u32"),
            position: u32::try_from(position).expect("segment positions fit in u32"),
        });
    }
}

/// The last entry whose relative offset is at most `rel_offset`.
pub(super) fn lookup(index: &[IndexEntry], rel_offset: u32) -> Option<IndexEntry> {
    let after = index.partition_point(|e| e.rel_offset <= rel_offset);
    after.checked_sub(1).map(|i| index[i])
}

/// Decodes an index file and checks that it can describe a segment of `segment_len` bytes:
/// whole entries, strictly increasing offsets and positions, positions inside the segment.
fn decode(bytes: &[u8], segment_len: u64) -> Result<Vec<IndexEntry>, String> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) {
        return Err(format!(
            "its length {} is not a multiple of {ENTRY_LEN}",
            bytes.len()
        ));
    }
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    for chunk in bytes.chunks_exact(ENTRY_LEN) {
        let entry = IndexEntry {
            rel_offset: u32::from_le_bytes(chunk[0..4].try_into().expect("4 bytes")),
            position: u32::from_le_bytes(chunk[4..8].try_into().expect("4 bytes")),
        };
        let position = u64::from(entry.position);
        if position < HEADER_LEN || position >= segment_len {
            return Err(format!(
                "entry {} points at byte {position}, outside the batches",
                entries.len()
            ));
        }
        if let Some(prev) = entries.last() {
            if entry.rel_offset <= prev.rel_offset || entry.position <= prev.position {
                return Err(format!("entry {} does not increase", entries.len()));
            }
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Loads the index file at `path` for a segment of `segment_len` bytes. `None` when it is
/// missing, unreadable or inconsistent (logged): the caller rebuilds it.
pub(super) fn load(path: &Path, segment_len: u64) -> Option<Vec<IndexEntry>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "index missing; rebuilding it");
            return None;
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read the index, rebuilding it: {e}");
            return None;
        }
    };
    match decode(&bytes, segment_len) {
        Ok(entries) => Some(entries),
        Err(why) => {
            tracing::warn!(path = %path.display(), "index is inconsistent, rebuilding it: {why}");
            None
        }
    }
}

/// The bytes of an index file holding `index`.
fn encode(index: &[IndexEntry]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(index.len() * ENTRY_LEN);
    for entry in index {
        bytes.extend_from_slice(&entry.rel_offset.to_le_bytes());
        bytes.extend_from_slice(&entry.position.to_le_bytes());
    }
    bytes
}

/// Whether the index file at `path` holds exactly `index` (false if it cannot be read).
pub(super) fn file_holds(path: &Path, index: &[IndexEntry]) -> bool {
    fs::read(path).is_ok_and(|bytes| bytes == encode(index))
}

/// Writes the index of the segment with `base_offset` into `dir`: to a temporary file that
/// is renamed into place. Not synced: a lost or torn index is rebuilt at recovery.
pub(super) fn write(dir: &Path, base_offset: u64, index: &[IndexEntry]) -> Result<(), LogError> {
    let path: PathBuf = dir.join(file_name(base_offset));
    let tmp = dir.join(format!("{}.tmp", file_name(base_offset)));
    let bytes = encode(index);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut file| file.write_all(&bytes))
        .map_err(io_err("write", &tmp))
        .and_then(|()| fs::rename(&tmp, &path).map_err(io_err("rename into place", &tmp)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel_offset: u32, position: u32) -> IndexEntry {
        IndexEntry {
            rel_offset,
            position,
        }
    }

    #[test]
    fn lookup_finds_the_last_entry_at_or_before() {
        let index = [entry(3, 100), entry(7, 200), entry(12, 300)];
        assert_eq!(lookup(&index, 0), None);
        assert_eq!(lookup(&index, 2), None);
        assert_eq!(lookup(&index, 3), Some(entry(3, 100)));
        assert_eq!(lookup(&index, 11), Some(entry(7, 200)));
        assert_eq!(lookup(&index, u32::MAX), Some(entry(12, 300)));
        assert_eq!(lookup(&[], 5), None);
    }

    #[test]
    fn entries_are_added_every_interval_bytes() {
        let mut index = Vec::new();
        // Batches of 40 bytes from the header on, interval 100: the entry goes to the first
        // batch starting 100 or more bytes after the previous entry.
        for i in 0..10u64 {
            maybe_add(&mut index, 100, 1000, HEADER_LEN + i * 40, 1000 + i);
        }
        assert_eq!(index, vec![entry(3, 132), entry(6, 252), entry(9, 372)]);
        // Visiting an indexed batch again adds nothing.
        maybe_add(&mut index, 100, 1000, 252, 1006);
        assert_eq!(index.len(), 3);
        // Interval 0: every batch, the first included.
        let mut every = Vec::new();
        maybe_add(&mut every, 0, 0, HEADER_LEN, 0);
        maybe_add(&mut every, 0, 0, HEADER_LEN + 40, 1);
        assert_eq!(every, vec![entry(0, 12), entry(1, 52)]);
    }

    #[test]
    fn decode_refuses_inconsistent_files() {
        let encode = |entries: &[(u32, u32)]| -> Vec<u8> {
            entries
                .iter()
                .flat_map(|&(r, p)| r.to_le_bytes().into_iter().chain(p.to_le_bytes()))
                .collect()
        };
        assert_eq!(
            decode(&encode(&[(1, 50), (4, 90)]), 100).unwrap(),
            vec![entry(1, 50), entry(4, 90)]
        );
        assert!(decode(&[0; 7], 100).is_err(), "partial entry");
        assert!(decode(&encode(&[(1, 50), (1, 90)]), 100).is_err());
        assert!(decode(&encode(&[(1, 50), (2, 50)]), 100).is_err());
        assert!(decode(&encode(&[(1, 100)]), 100).is_err(), "past the end");
        assert!(
            decode(&encode(&[(1, 5)]), 100).is_err(),
            "inside the header"
        );
        assert_eq!(decode(&[], 100).unwrap(), vec![]);
    }
}
