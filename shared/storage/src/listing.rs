//! Directories of numbered files: what a store's directory holds, read without changing it.

use crate::io_error::{io_err, IoError};
use std::fs;
use std::path::{Path, PathBuf};

/// A kind of file named by a number: `prefix`, the number as 20 zero-padded decimal
/// digits (so names sort like numbers), `suffix` (e.g. `00000000000000000042.log` or
/// `log.00000000000000000042`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbered {
    prefix: &'static str,
    suffix: &'static str,
}

impl Numbered {
    /// Files named `prefix` + number + `suffix`.
    pub const fn new(prefix: &'static str, suffix: &'static str) -> Numbered {
        Numbered { prefix, suffix }
    }

    /// The name of the file numbered `n`.
    pub fn name(&self, n: u64) -> String {
        format!("{}{n:020}{}", self.prefix, self.suffix)
    }

    /// The number in `name`, if it is one of these files.
    pub fn parse(&self, name: &str) -> Option<u64> {
        let digits = name.strip_prefix(self.prefix)?.strip_suffix(self.suffix)?;
        if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse().ok()
        } else {
            None
        }
    }
}

/// What [`list`] found in a directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The numbered files, with the kind each matched, sorted by number.
    files: Vec<(Numbered, u64, PathBuf)>,
    /// Temporary files (`NAME.tmp`) an interrupted creation of one of the store's files
    /// left behind: recovery deletes them (they never held anything acknowledged).
    pub leftovers: Vec<PathBuf>,
}

impl Listing {
    /// The files of one kind, sorted by number.
    pub fn numbered(&self, kind: Numbered) -> Vec<(u64, PathBuf)> {
        self.files
            .iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, n, path)| (*n, path.clone()))
            .collect()
    }
}

/// Lists `dir` without changing it: the files of the `kinds` given, and the `.tmp`
/// leftovers of those and of the single files named in `singles` (e.g. a checkpoint).
/// Other entries are not the store's and are ignored.
pub fn list(dir: &Path, kinds: &[Numbered], singles: &[&str]) -> Result<Listing, IoError> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let single = |name: &str| singles.contains(&name);
        let numbered = |name: &str| kinds.iter().find_map(|k| Some((*k, k.parse(name)?)));
        if let Some(stem) = name.strip_suffix(".tmp") {
            if single(stem) || numbered(stem).is_some() {
                listing.leftovers.push(entry.path());
            }
        } else if let Some((kind, n)) = numbered(&name) {
            listing.files.push((kind, n, entry.path()));
        }
    }
    listing.files.sort_by_key(|(_, n, _)| *n);
    listing.leftovers.sort();
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: Numbered = Numbered::new("", ".log");
    const SNAPSHOT: Numbered = Numbered::new("snapshot.", "");

    #[test]
    fn names_round_trip_and_only_twenty_digits_parse() {
        assert_eq!(LOG.name(42), "00000000000000000042.log");
        assert_eq!(LOG.parse("00000000000000000042.log"), Some(42));
        assert_eq!(SNAPSHOT.parse(&SNAPSHOT.name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "42.log",
            "0000000000000000004x.log",
            "00000000000000000042.index",
        ] {
            assert_eq!(LOG.parse(bad), None, "{bad}");
        }
        assert_eq!(LOG.parse("99999999999999999999.log"), None, "beyond u64");
    }

    #[test]
    fn a_listing_sorts_each_kind_and_reports_only_our_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for name in [
            LOG.name(7),
            LOG.name(3),
            SNAPSHOT.name(5),
            format!("{}.tmp", LOG.name(9)),
            "checkpoint.tmp".to_owned(),
            "someone-elses.tmp".to_owned(),
            "README".to_owned(),
        ] {
            fs::write(dir.join(name), b"").unwrap();
        }
        let listing = list(dir, &[LOG, SNAPSHOT], &["checkpoint"]).unwrap();
        assert_eq!(
            listing.numbered(LOG),
            vec![(3, dir.join(LOG.name(3))), (7, dir.join(LOG.name(7)))]
        );
        assert_eq!(
            listing.numbered(SNAPSHOT),
            vec![(5, dir.join(SNAPSHOT.name(5)))]
        );
        assert_eq!(
            listing.leftovers,
            vec![
                dir.join("00000000000000000009.log.tmp"),
                dir.join("checkpoint.tmp")
            ]
        );
        assert_eq!(
            fs::read_dir(dir).unwrap().count(),
            7,
            "listing changes nothing"
        );
    }
}
