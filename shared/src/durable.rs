//! Durable file operations of the two on-disk stores (the brokers' partition logs and the
//! zookeeper's write-ahead log): each error names what was being done and to which path.

use std::format;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file system operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {path}: {source}")]
pub struct IoError {
    /// What was being done (e.g. "fsync the directory").
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// Turns an [`io::Error`] of `op` on `path` into an [`IoError`].
pub fn io_err<'a>(op: &'static str, path: &'a Path) -> impl Fn(io::Error) -> IoError + 'a {
    move |source| IoError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes the entries of `dir` (creations, renames, deletions) durable.
pub fn fsync_dir(dir: &Path) -> Result<(), IoError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync the directory", dir))
}

/// Creates `dir` if it is missing, and then makes its entry in its parent durable
/// (`op` names the creation in an error).
pub fn create_dir_durably(dir: &Path, op: &'static str) -> Result<(), IoError> {
    let existed = fs::metadata(dir).is_ok();
    fs::create_dir_all(dir).map_err(io_err(op, dir))?;
    if !existed {
        if let Some(parent) = dir.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

/// Creates `dir/name` holding `header`, atomically: the header goes to `name.tmp`,
/// which is synced, renamed into place and made durable by syncing the directory, so the
/// file never exists with a torn header. Returns it open for reading and writing, at its
/// end.
pub fn create_with_header(dir: &Path, name: &str, header: &[u8]) -> Result<File, IoError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    let written = file
        .write_all(header)
        .and_then(|()| file.sync_all())
        .map_err(io_err("write the header of", &tmp))
        .and_then(|()| fs::rename(&tmp, &path).map_err(io_err("rename into place", &tmp)));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(dir)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;
    use std::string::ToString;

    #[test]
    fn a_file_created_with_its_header_is_there_whole_and_no_temporary_is_left() {
        let tmp = std::env::temp_dir().join(format!("pehra-durable-{}", std::process::id()));
        let dir = tmp.join("a/b");
        create_dir_durably(&dir, "create the test directory").unwrap();
        let mut file = create_with_header(&dir, "0.log", b"HEADER").unwrap();
        file.write_all(b"+body").unwrap();
        assert_eq!(fs::read(dir.join("0.log")).unwrap(), b"HEADER+body");
        assert!(!dir.join("0.log.tmp").exists());
        let missing = create_with_header(&tmp.join("missing"), "0.log", b"H").unwrap_err();
        assert_eq!(missing.op, "create");
        assert!(
            missing.to_string().starts_with("cannot create "),
            "{missing}"
        );
        fs::remove_dir_all(&tmp).unwrap();
    }
}
