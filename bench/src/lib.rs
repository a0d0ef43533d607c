//! What the load generators in `src/bin/` share: percentiles of their latency samples
//! and the JSON strings of their one-line reports.

/// The `q`-quantile (0..=1, nearest rank) of `sorted` latencies in µs, in ms; 0 for none.
pub fn percentile_ms<T: Copy + Into<u64>>(sorted: &[T], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx].into() as f64 / 1000.0
}

/// `s` as a JSON string literal, quotes included.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let us: Vec<u32> = (1..=101).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&us, 0.0), 1.0);
        assert_eq!(percentile_ms(&us, 0.5), 51.0);
        assert_eq!(percentile_ms(&us, 0.99), 100.0);
        assert_eq!(percentile_ms(&us, 1.0), 101.0);
        assert_eq!(percentile_ms::<u64>(&[], 0.5), 0.0);
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(json_str("a\"b\\c\nd"), r#""a\"b\\c\u000ad""#);
    }
}

/// The fixed OSCORE setup the CoAP benchmark's `--oscore` runs use on both sides (a
/// benchmark identity, never a real one): the client's key ID, the server's, and the
/// pairwise master secret.
pub mod bench_oscore {
    use pehra_shared::security::{self, Identity, KeyTable, PeerKey, Role};

    /// The benchmark client's identity key (public: benchmarks only).
    pub const IDENTITY_KEY: [u8; 32] = [0xbe; 32];

    /// The benchmark client.
    pub fn client() -> Identity {
        Identity {
            name: "bench".into(),
            role: Role::Client,
            kid: security::kid(Role::Client, 1),
        }
    }

    /// The server's key ID (a broker's).
    pub fn server_kid() -> Vec<u8> {
        security::broker_kid(1)
    }

    /// The server's key table: the benchmark client only.
    pub fn key_table() -> KeyTable {
        let mut keys = KeyTable::new();
        keys.insert(PeerKey {
            identity: client(),
            secret: security::pairwise_secret(&IDENTITY_KEY, &server_kid()),
        });
        keys
    }
}
