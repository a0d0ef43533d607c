//! Where a znode lives in the CoAP URI space: `/z/a/b` for `/a/b`, `?children` for its
//! children. The same strings are the Observe resource keys the server notifies.

/// The URI path of a znode's data (`z/a/b`; `z` for the root).
pub fn znode_uri(path: &str) -> String {
    let mut uri = String::from("z");
    if path != "/" {
        uri.push_str(path);
    }
    uri
}

/// The URI of a znode's children (`z/a/b?children`).
pub fn children_uri(path: &str) -> String {
    znode_uri(path) + "?children"
}

/// The znode a resource key names, and whether it is its children (`z/a/b?children`
/// → `("/a/b", true)`); `None` for a key that is not a znode's.
pub fn znode_of(key: &str) -> Option<(String, bool)> {
    let (uri, children) = match key.strip_suffix("?children") {
        Some(uri) => (uri, true),
        None => (key, false),
    };
    let path = match uri.strip_prefix('z')? {
        "" => "/".to_string(),
        rest if rest.starts_with('/') => rest.to_string(),
        _ => return None,
    };
    Some((path, children))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pehra_shared::coap::Request;

    #[test]
    fn a_resource_key_names_its_znode_back() {
        for path in ["/", "/a", "/a/b"] {
            assert_eq!(znode_of(&znode_uri(path)), Some((path.to_string(), false)));
            assert_eq!(
                znode_of(&children_uri(path)),
                Some((path.to_string(), true))
            );
        }
        assert_eq!(znode_of("zz/a"), None);
        assert_eq!(znode_of("session/1"), None);
    }

    #[test]
    fn uris_are_the_resource_keys_the_engine_uses() {
        for (path, uri) in [("/", "z"), ("/a/b", "z/a/b")] {
            assert_eq!(znode_uri(path), uri);
            assert_eq!(Request::get(&znode_uri(path)).resource_key(), uri);
            assert_eq!(
                Request::get(&children_uri(path)).resource_key(),
                format!("{uri}?children")
            );
        }
    }
}
