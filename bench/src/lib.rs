//! What the load generators in `src/bin/` share: their latency histograms and the JSON
//! strings of their one-line reports.

/// Latencies in nanoseconds, kept in an HDR histogram (the `hdrhistogram` crate: three
/// significant digits over any range, constant memory, mergeable across threads).
#[derive(Clone)]
pub struct Latencies(hdrhistogram::Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(hdrhistogram::Histogram::new(3).expect("3 significant digits is valid"))
    }
}

/// A summary of [`Latencies`], in microseconds (0 where there are none).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencySummaryUs {
    /// The mean.
    pub mean: f64,
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The 99.9th percentile.
    pub p999: f64,
    /// The largest.
    pub max: f64,
}

impl Latencies {
    /// One latency, in nanoseconds.
    pub fn record(&mut self, ns: u64) {
        // An auto-resizing histogram takes every u64.
        let _ = self.0.record(ns);
    }

    /// Adds another's samples (another thread's, say).
    pub fn add(&mut self, other: Latencies) {
        let _ = self.0.add(other.0);
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether none was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Mean, percentiles and maximum, in microseconds.
    pub fn summary_us(&self) -> LatencySummaryUs {
        let h = &self.0;
        let us = |ns: u64| {
            if h.is_empty() {
                0.0
            } else {
                ns as f64 / 1000.0
            }
        };
        LatencySummaryUs {
            mean: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
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
    fn latency_summary_within_the_histogram_precision() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        for i in 1..=101u64 {
            // 1 ms .. 101 ms, split over two recorders as the threads do.
            if i % 2 == 0 { &mut a } else { &mut b }.record(i * 1_000_000);
        }
        a.add(b);
        assert_eq!(a.len(), 101);
        let s = a.summary_us();
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001;
        assert!(close(s.p50, 51_000.0), "{s:?}");
        assert!(close(s.p99, 100_000.0), "{s:?}");
        assert!(close(s.max, 101_000.0), "{s:?}");
        assert!(close(s.mean, 51_000.0), "{s:?}");
        assert_eq!(Latencies::default().summary_us().p99, 0.0);
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
