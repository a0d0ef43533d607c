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
    // One pass over the bytes (a write validates its path two or three times: this was
    // ~450 instructions a time with a split and a char iterator per component).
    let bytes = path.as_bytes();
    let mut start = 1;
    for i in 1..=bytes.len() {
        if i == bytes.len() || bytes[i] == b'/' {
            match &bytes[start..i] {
                b"" => return fail("empty component"),
                b"." | b".." => return fail("relative component"),
                _ => {}
            }
            start = i + 1;
        } else if is_control_at(bytes, i) {
            return fail("control character");
        }
    }
    Ok(())
}

/// Whether a control character (`char::is_control`: U+0000–U+001F, U+007F–U+009F)
/// starts at byte `i` of a UTF-8 string: one byte below 0x20 or 0x7f, or 0xc2 followed
/// by 0x80–0x9f.
fn is_control_at(bytes: &[u8], i: usize) -> bool {
    match bytes[i] {
        b if b < 0x20 || b == 0x7f => true,
        0xc2 => bytes
            .get(i + 1)
            .is_some_and(|next| (0x80..=0x9f).contains(next)),
        _ => false,
    }
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

    /// The rules as first written (a split and a char iterator per component): the
    /// one-pass `validate` must agree with it on every string.
    fn validate_by_components(path: &str) -> Result<(), &'static str> {
        if path.is_empty() {
            return Err("empty");
        }
        if !path.starts_with('/') {
            return Err("must start with /");
        }
        if path.len() > MAX_PATH_LEN {
            return Err("longer than 1024 bytes");
        }
        if path == "/" {
            return Ok(());
        }
        if path.ends_with('/') {
            return Err("trailing slash");
        }
        for component in path[1..].split('/') {
            match component {
                "" => return Err("empty component"),
                "." | ".." => return Err("relative component"),
                c if c.chars().any(|ch| ch.is_control()) => return Err("control character"),
                _ => {}
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn one_pass_validation_agrees_with_the_rules(
            path in "(/|[./a\\x00-\\x1f\\x7f\u{80}-\u{a0}\u{c2}\u{100}é€😀]){0,12}",
        ) {
            proptest::prop_assert_eq!(
                validate(&path).map_err(|e| e.reason),
                validate_by_components(&path)
            );
        }
    }

    #[test]
    fn every_control_character_is_refused_and_nothing_else() {
        for ch in (0..=0x10ffffu32).filter_map(char::from_u32) {
            let path = format!("/a{ch}b");
            assert_eq!(validate(&path).is_err(), ch.is_control(), "{ch:?}");
        }
    }
}
