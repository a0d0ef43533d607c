//! Znode paths: validation by ZooKeeper's rules.

use thiserror::Error;

/// The longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Why a path is not a valid znode path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid path {path:?}: {reason}")]
pub struct PathError {
    /// The offending path.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks a znode path: absolute, no empty component (`//`), no trailing slash (except
/// the root `/`), no `.` or `..` component, no control characters, at most
/// [`MAX_PATH_LEN`] bytes.
pub fn validate(path: &str) -> Result<(), PathError> {
    let fail = |reason| {
        Err(PathError {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return fail("empty");
    }
    if !path.starts_with('/') {
        return fail("must start with /");
    }
    if path.len() > MAX_PATH_LEN {
        return fail("longer than 1024 bytes");
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return fail("trailing slash");
    }
    for component in path[1..].split('/') {
        match component {
            "" => return fail("empty component"),
            "." | ".." => return fail("relative component"),
            c if c.chars().any(|ch| ch.is_control()) => return fail("control character"),
            _ => {}
        }
    }
    Ok(())
}

/// The parent of a valid, non-root path.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a valid, non-root path.
pub fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// Joins a parent path and a child name.
pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_zookeeper_paths() {
        for p in ["/", "/a", "/a/b-c_d.e", "/brokers/ids/1", "/ünïcode"] {
            assert_eq!(validate(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn rejects_bad_paths_with_a_reason() {
        for (p, why) in [
            ("", "empty"),
            ("a", "must start with /"),
            ("/a/", "trailing slash"),
            ("/a//b", "empty component"),
            ("/a/./b", "relative component"),
            ("/..", "relative component"),
            ("/a\u{0}b", "control character"),
        ] {
            assert_eq!(validate(p).unwrap_err().reason, why, "{p:?}");
        }
        assert!(validate(&format!("/{}", "x".repeat(MAX_PATH_LEN))).is_err());
    }

    #[test]
    fn parent_name_join() {
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(name("/a/b/c"), "c");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
