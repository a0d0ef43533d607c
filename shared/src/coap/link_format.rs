//! RFC 6690 link format, for `/.well-known/core`.

use alloc::{string::String, vec::Vec};
use core::fmt::Write;

/// A resource to advertise: a path and its target attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The path, without a leading slash (`"ps/temp"`).
    pub path: String,
    /// Attributes in order; `None` value for a flag such as `obs`.
    pub attributes: Vec<(String, Option<String>)>,
}

impl Link {
    /// A link with no attributes.
    pub fn new(path: &str) -> Self {
        Link {
            path: String::from(path.trim_start_matches('/')),
            attributes: Vec::new(),
        }
    }

    /// Adds an attribute with a value (`rt`, `if`, `ct`, `title`, `sz`, ...).
    pub fn attr(mut self, name: &str, value: &str) -> Self {
        self.attributes.push((name.into(), Some(value.into())));
        self
    }

    /// Adds a flag attribute (such as `obs`).
    pub fn flag(mut self, name: &str) -> Self {
        self.attributes.push((name.into(), None));
        self
    }

    /// RFC 6690 §4.1 query filtering: `href=...`, or `ATTR=VALUE` where a value ending
    /// in `*` matches as a prefix and space-separated attribute values match any word.
    pub fn matches(&self, filter: &str) -> bool {
        let Some((name, pattern)) = filter.split_once('=') else {
            return self.attributes.iter().any(|(n, _)| n == filter);
        };
        let pattern = pattern.trim_matches('"');
        let hit = |value: &str| match pattern.strip_suffix('*') {
            Some(prefix) => value.starts_with(prefix),
            None => value == pattern,
        };
        if name == "href" {
            let path = alloc::format!("/{}", self.path);
            return hit(&path);
        }
        self.attributes
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
            .any(|v| hit(v) || v.split(' ').any(hit))
    }
}

/// Writes links as an `application/link-format` document, keeping only those that match
/// every filter.
pub fn write<'a>(links: impl IntoIterator<Item = &'a Link>, filters: &[&str]) -> String {
    let mut out = String::new();
    for link in links
        .into_iter()
        .filter(|l| filters.iter().all(|f| l.matches(f)))
    {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "</{}>", link.path);
        for (name, value) in &link.attributes {
            match value {
                None => {
                    let _ = write!(out, ";{name}");
                }
                // ct and sz are numbers and go unquoted (RFC 6690 §3 / RFC 7252 §7.2.1).
                Some(v) if name == "ct" || name == "sz" => {
                    let _ = write!(out, ";{name}={v}");
                }
                Some(v) => {
                    let _ = write!(out, ";{name}=\"{v}\"");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn writes_rfc6690_documents_and_filters() {
        let links = vec![
            Link::new("/ps").attr("rt", "core.ps.coll").attr("ct", "40"),
            Link::new("z").attr("rt", "pehra.znode").flag("obs"),
        ];
        assert_eq!(
            write(&links, &[]),
            r#"</ps>;rt="core.ps.coll";ct=40,</z>;rt="pehra.znode";obs"#
        );
        assert_eq!(
            write(&links, &["rt=core.ps*"]),
            r#"</ps>;rt="core.ps.coll";ct=40"#
        );
        assert_eq!(write(&links, &["href=/z"]), r#"</z>;rt="pehra.znode";obs"#);
        assert_eq!(write(&links, &["obs"]), r#"</z>;rt="pehra.znode";obs"#);
        assert_eq!(write(&links, &["rt=nothing"]), "");
    }
}
