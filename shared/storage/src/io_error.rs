//! The error of a file operation.

use std::io;
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
