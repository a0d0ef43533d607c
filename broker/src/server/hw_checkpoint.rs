//! The high-watermark checkpoint: the last high watermark this broker knew for one of its
//! partitions, in the file `high-watermark` of the partition's directory (Kafka keeps
//! them in `replication-offset-checkpoint`), so that a replica that comes back with less
//! than that (a log cut short under it: a lying disk, a torn file system, a restore from
//! an old backup) knows it lacks acknowledged records and does not offer itself as
//! leader until it has caught up (see [`super::eligibility`]).
//!
//! The file holds `pehra-hw 1 <high watermark>\n`, written to `high-watermark.tmp`,
//! fsynced, renamed over the file, and the directory fsynced: a crash leaves the old
//! value or the new one. It lives and goes with the partition's data (a deleted topic,
//! a replica moved away, another incarnation of the topic). The flusher writes it after
//! the logs' flush whenever the high watermark moved.

use pehra_storage::IoError;
use std::path::{Path, PathBuf};

/// The file's name in a partition directory.
pub(crate) const FILE: &str = "high-watermark";
const HEADER: &str = "pehra-hw 1 ";

/// Why a checkpoint cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckpointError {
    /// Reading it failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// It does not parse: the broker cannot tell whether the replica is complete.
    #[error(
        "{path} is not a high-watermark checkpoint ({text:?}); remove it to take the replica \
         as complete as its log"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
}

/// The high watermark checkpointed in partition directory `dir` (0 without one).
pub(crate) fn load(dir: &Path) -> Result<u64, CheckpointError> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(pehra_storage::io_err("read", &path)(e).into()),
    };
    text.strip_prefix(HEADER)
        .and_then(|t| t.strip_suffix('\n'))
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or(CheckpointError::Malformed { path, text })
}

/// Makes `hw` the checkpoint of partition directory `dir`, durably.
pub(crate) fn store(dir: &Path, hw: u64) -> Result<(), IoError> {
    pehra_storage::file::replace_durably(dir, FILE, format!("{HEADER}{hw}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back_and_a_damaged_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(load(tmp.path()).unwrap(), 0, "none yet");
        store(tmp.path(), 4242).unwrap();
        assert_eq!(load(tmp.path()).unwrap(), 4242);
        store(tmp.path(), 5000).unwrap();
        assert_eq!(load(tmp.path()).unwrap(), 5000);
        assert!(!tmp.path().join(format!("{FILE}.tmp")).exists());
        std::fs::write(tmp.path().join(FILE), "pehra-hw 1 1x\n").unwrap();
        let e = load(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("not a high-watermark checkpoint"), "{e}");
    }
}
