//! Durable file operations: each makes its change survive a crash (or says which
//! operation on which path failed).

use crate::io_error::{io_err, IoError};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

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

/// Makes `contents` the durable content of `dir/name`, atomically: temporary file
/// `name.tmp`, fsync, rename, fsync of the directory. A crash leaves the old content or
/// the new one, never a mix (and at worst a `.tmp` that [`list`](crate::list) reports).
pub fn replace_durably(dir: &Path, name: &str, contents: &[u8]) -> Result<(), IoError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err("create", &tmp))
        .and_then(|mut file| {
            file.write_all(contents)
                .and_then(|()| file.sync_all())
                .map_err(io_err("write", &tmp))
        })
        .and_then(|()| fs::rename(&tmp, &path).map_err(io_err("rename into place", &tmp)));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(dir)
}

/// Deletes a file; one already gone is fine. Not durable until the directory is synced.
pub fn remove_if_present(path: &Path) -> Result<(), IoError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("delete", path)(e)),
        _ => Ok(()),
    }
}

/// Makes the written data of the file at `path` durable (fdatasync).
pub fn sync_data(path: &Path) -> Result<(), IoError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.sync_data())
        .map_err(io_err("fdatasync", path))
}

/// Cuts the file at `path` to `len` bytes and syncs it.
pub fn truncate_durably(path: &Path, len: u64) -> Result<(), IoError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open for truncation", path))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(io_err("truncate", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_created_with_its_header_is_there_whole_and_no_temporary_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir_durably(&dir, "create the test directory").unwrap();
        let mut file = create_with_header(&dir, "0.log", b"HEADER").unwrap();
        file.write_all(b"+body").unwrap();
        assert_eq!(fs::read(dir.join("0.log")).unwrap(), b"HEADER+body");
        assert!(!dir.join("0.log.tmp").exists());
        let missing = create_with_header(&tmp.path().join("missing"), "0.log", b"H").unwrap_err();
        assert_eq!(missing.op, "create");
        assert!(
            missing.to_string().starts_with("cannot create "),
            "{missing}"
        );
    }

    #[test]
    fn a_replaced_file_holds_the_new_content_and_a_failed_replace_keeps_the_old() {
        let tmp = tempfile::tempdir().unwrap();
        replace_durably(tmp.path(), "marker", b"one").unwrap();
        replace_durably(tmp.path(), "marker", b"two").unwrap();
        assert_eq!(fs::read(tmp.path().join("marker")).unwrap(), b"two");
        assert!(!tmp.path().join("marker.tmp").exists());
        // A directory in the way of the rename: the old content stays, nothing is left.
        fs::create_dir(tmp.path().join("taken")).unwrap();
        fs::write(tmp.path().join("taken/x"), b"").unwrap();
        let err = replace_durably(tmp.path(), "taken", b"three").unwrap_err();
        assert_eq!(err.op, "rename into place");
        assert!(!tmp.path().join("taken.tmp").exists());
    }

    #[test]
    fn removing_a_missing_file_is_fine_and_truncating_cuts_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        remove_if_present(&path).unwrap();
        fs::write(&path, b"0123456789").unwrap();
        truncate_durably(&path, 4).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"0123");
        remove_if_present(&path).unwrap();
        assert!(!path.exists());
        assert_eq!(
            truncate_durably(&path, 0).unwrap_err().op,
            "open for truncation"
        );
    }
}
