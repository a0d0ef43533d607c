//! The changes recovery decided on, carried out only once every check has passed.

use crate::file::{fsync_dir, remove_if_present, replace_durably, sync_data, truncate_durably};
use crate::io_error::IoError;
use std::path::{Path, PathBuf};

/// One change to a store's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Make `contents` the durable content of the file `name` in the directory
    /// (atomically: see [`replace_durably`]).
    Replace {
        /// The file's name in the directory.
        name: String,
        /// Its new content.
        contents: Vec<u8>,
    },
    /// Delete a file (one already gone is fine).
    Remove(PathBuf),
    /// Cut a file to `len` bytes and sync it.
    Truncate {
        /// The file.
        path: PathBuf,
        /// Its new length.
        len: u64,
    },
    /// Make a file's written data durable (fdatasync): what a process crash left in the
    /// page cache only.
    SyncData(PathBuf),
    /// Make the directory's entries durable: the removals before it survive a crash
    /// before anything after it is done.
    SyncDir,
}

/// The changes opening a store makes to its directory, in order.
///
/// A store decides them from what it read, without writing (so the decision is a pure
/// function, and a refusal leaves the directory untouched), then [`apply`](Plan::apply)s
/// them. The order is the crash-safety argument: each prefix of the plan, cut by a crash,
/// must leave a directory that recovers to the same result or an earlier valid one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    changes: Vec<Change>,
}

impl Plan {
    /// A plan that changes nothing.
    pub fn new() -> Plan {
        Plan::default()
    }

    /// Adds: make `contents` the durable content of `name`.
    pub fn replace(&mut self, name: impl Into<String>, contents: Vec<u8>) {
        self.changes.push(Change::Replace {
            name: name.into(),
            contents,
        });
    }

    /// Adds: delete `paths` in the order given, then make the deletions durable (nothing
    /// if `paths` is empty).
    pub fn remove_all(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        let before = self.changes.len();
        self.changes.extend(paths.into_iter().map(Change::Remove));
        if self.changes.len() > before {
            self.changes.push(Change::SyncDir);
        }
    }

    /// Adds: cut `path` to `len` bytes.
    pub fn truncate(&mut self, path: PathBuf, len: u64) {
        self.changes.push(Change::Truncate { path, len });
    }

    /// Adds: make the written data of `path` durable.
    pub fn sync_data(&mut self, path: PathBuf) {
        self.changes.push(Change::SyncData(path));
    }

    /// The changes, in the order [`apply`](Plan::apply) makes them.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Makes the changes in `dir`, in order, stopping at the first that fails.
    pub fn apply(&self, dir: &Path) -> Result<(), IoError> {
        for change in &self.changes {
            match change {
                Change::Replace { name, contents } => replace_durably(dir, name, contents)?,
                Change::Remove(path) => remove_if_present(path)?,
                Change::Truncate { path, len } => truncate_durably(path, *len)?,
                Change::SyncData(path) => sync_data(path)?,
                Change::SyncDir => fsync_dir(dir)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_plan_is_applied_in_order_and_an_empty_removal_adds_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for name in ["a", "b", "c"] {
            fs::write(dir.join(name), b"0123456789").unwrap();
        }
        let mut plan = Plan::new();
        plan.remove_all(Vec::new());
        assert!(plan.is_empty());
        plan.replace("floor", b"7\n".to_vec());
        plan.remove_all([dir.join("b"), dir.join("a")]);
        plan.truncate(dir.join("c"), 3);
        plan.sync_data(dir.join("c"));
        assert_eq!(
            plan.changes(),
            [
                Change::Replace {
                    name: "floor".into(),
                    contents: b"7\n".to_vec()
                },
                Change::Remove(dir.join("b")),
                Change::Remove(dir.join("a")),
                Change::SyncDir,
                Change::Truncate {
                    path: dir.join("c"),
                    len: 3
                },
                Change::SyncData(dir.join("c")),
            ]
        );
        plan.apply(dir).unwrap();
        let mut left: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["c", "floor"]);
        assert_eq!(fs::read(dir.join("c")).unwrap(), b"012");
        assert_eq!(fs::read(dir.join("floor")).unwrap(), b"7\n");
    }

    #[test]
    fn applying_stops_at_the_first_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let mut plan = Plan::new();
        plan.truncate(tmp.path().join("missing"), 0);
        plan.replace("never", Vec::new());
        assert_eq!(
            plan.apply(tmp.path()).unwrap_err().op,
            "open for truncation"
        );
        assert!(!tmp.path().join("never").exists());
    }
}
