//! Claiming a server's data directory at start: it must be writable, and no other live
//! process may use it. Both the brokers and the zookeeper check this before they register
//! or serve anything, and refuse with one clear error otherwise.
//!
//! The claim is an exclusive `flock` on `LOCK` in the directory (the file the zookeeper's
//! storage has always locked, so the two exclude each other), taken with the standard
//! library's [`File::try_lock`] and held as long as the [`DataDirLock`] lives. The kernel
//! drops it when the process ends, however it ends: a crashed process never leaves a
//! stale lock. The holder writes its PID into the file, so a refused process can say who
//! holds it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another live process holds the directory's lock.
    #[error("data directory {dir} is in use by another process (pid {})", pid.map_or("unknown".into(), |p| p.to_string()))]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The holder's PID, as it wrote it into the lock file (unknown if it has not
        /// written it yet).
        pid: Option<u32>,
    },
    /// The directory cannot be created, or a file in it cannot be created, written,
    /// fsynced or removed.
    #[error("data directory {dir} is not writable: {source}")]
    NotWritable {
        /// The data directory.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

/// A claimed data directory: the exclusive lock, released when this is dropped (or the
/// process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// The directory claimed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Claims `dir` for this process: creates it if missing, takes the exclusive lock on its
/// [`LOCK_FILE`] (writing this process's PID into it), and checks that a file can be
/// created, written, fsynced and removed in it. Never waits: a directory locked by
/// another process is [`DataDirError::InUse`] at once.
pub fn claim(dir: &Path) -> Result<DataDirLock, DataDirError> {
    let not_writable = |source| DataDirError::NotWritable {
        dir: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(not_writable)?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(not_writable)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(DataDirError::InUse {
                dir: dir.to_path_buf(),
                pid: holder(&mut file),
            })
        }
        Err(TryLockError::Error(e)) => return Err(not_writable(e)),
    }
    write_pid(&mut file).map_err(not_writable)?;
    probe_writable(dir).map_err(not_writable)?;
    Ok(DataDirLock {
        _file: file,
        dir: dir.to_path_buf(),
    })
}

/// The PID the lock's holder wrote into it, if it has.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Replaces the lock file's content with this process's PID.
fn write_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()
}

/// Creates, writes, fsyncs and removes a file in `dir` (and fsyncs `dir`): what a server
/// does to its data directory, tried before it takes part in anything.
fn probe_writable(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let written = File::create(&probe).and_then(|mut f| {
        f.write_all(b"probe\n")?;
        f.sync_all()
    });
    let removed = fs::remove_file(&probe);
    written?;
    removed?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pehra-data-dir-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_claimed_directory_is_refused_naming_the_pid_until_released() {
        let dir = temp_dir("claim");
        let first = claim(&dir.join("data")).expect("created and claimed");
        assert_eq!(
            fs::read_to_string(dir.join("data").join(LOCK_FILE)).unwrap(),
            format!("{}\n", std::process::id())
        );
        let error = claim(&dir.join("data")).unwrap_err();
        assert!(
            matches!(error, DataDirError::InUse { pid: Some(p), .. } if p == std::process::id())
        );
        assert_eq!(
            error.to_string(),
            format!(
                "data directory {} is in use by another process (pid {})",
                dir.join("data").display(),
                std::process::id()
            )
        );
        drop(first);
        claim(&dir.join("data")).expect("free again");
        let leftovers: Vec<_> = fs::read_dir(dir.join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [LOCK_FILE], "the probe file is gone");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_not_writable() {
        let error = claim(Path::new("/proc/pehra-nowhere")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("data directory /proc/pehra-nowhere is not writable: "),
            "{error}"
        );
    }
}
