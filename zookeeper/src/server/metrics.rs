//! The zookeeper's Prometheus/OpenMetrics metrics, kept by its core task (atomics; the
//! gauges are refreshed once per pass of the core loop).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The label of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get_data`, `get_children`, `sync`, `heartbeat`, `open_session`, `write`,
    /// `expire`, `admin`, `suspect`.
    pub kind: &'static str,
}

/// A zookeeper's metrics: give one to [`crate::ServerConfig`] and register it.
#[derive(Debug, Clone)]
pub struct ZkMetrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) sessions: Gauge,
    pub(crate) znodes: Gauge,
    pub(crate) watches: Gauge,
    pub(crate) zxid: Gauge,
    pub(crate) wal_bytes: Counter,
    pub(crate) wal_bytes_since_snapshot: Gauge,
    pub(crate) expired_sessions: Counter,
    /// Sessions expired because their node answered no probe (a subset of the above).
    pub(crate) probe_expiries: Counter,
    /// Probes that ended because the node answered (or heartbeated).
    pub(crate) probes_answered: Counter,
    /// Leases granted by heartbeats, in seconds, by `dormant` (PEHRA sleep) or not.
    pub(crate) leases: Family<LeaseLabels, Histogram, fn() -> Histogram>,
}

/// The label of the lease histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    /// `true` for a dormant node's stretched lease (PEHRA), `false` for a plain one.
    pub dormant: &'static str,
}

fn lease_histogram() -> Histogram {
    // 1 s .. ~9 h: session timeouts up to PEHRA sleeps of --max-sleep-ms.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

impl Default for ZkMetrics {
    fn default() -> Self {
        ZkMetrics {
            requests: Family::default(),
            sessions: Gauge::default(),
            znodes: Gauge::default(),
            watches: Gauge::default(),
            zxid: Gauge::default(),
            wal_bytes: Counter::default(),
            wal_bytes_since_snapshot: Gauge::default(),
            expired_sessions: Counter::default(),
            probe_expiries: Counter::default(),
            probes_answered: Counter::default(),
            leases: Family::new_with_constructor(lease_histogram),
        }
    }
}

impl ZkMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "pehra_zookeeper_requests",
            "Requests taken by the core, per kind",
            self.requests.clone(),
        );
        registry.register(
            "pehra_zookeeper_sessions",
            "Open sessions",
            self.sessions.clone(),
        );
        registry.register(
            "pehra_zookeeper_znodes",
            "Znodes in the tree (the root included)",
            self.znodes.clone(),
        );
        registry.register(
            "pehra_zookeeper_watches",
            "Znodes (data or children) with observers registered",
            self.watches.clone(),
        );
        registry.register(
            "pehra_zookeeper_zxid",
            "The last zxid applied",
            self.zxid.clone(),
        );
        registry.register(
            "pehra_zookeeper_wal_bytes",
            "Bytes appended to the write-ahead log",
            self.wal_bytes.clone(),
        );
        registry.register(
            "pehra_zookeeper_wal_bytes_since_snapshot",
            "Write-ahead log bytes since the last snapshot",
            self.wal_bytes_since_snapshot.clone(),
        );
        registry.register(
            "pehra_zookeeper_expired_sessions",
            "Sessions closed because their lease lapsed",
            self.expired_sessions.clone(),
        );
        registry.register(
            "pehra_zookeeper_probe_expiries",
            "Sessions expired because their node, reported unanswering by a client, \
             answered no probe",
            self.probe_expiries.clone(),
        );
        registry.register(
            "pehra_zookeeper_probes_answered",
            "Probes of a reported node that it answered (the node lives)",
            self.probes_answered.clone(),
        );
        registry.register(
            "pehra_zookeeper_lease_seconds",
            "Leases granted by heartbeats (dormant: stretched over a PEHRA sleep)",
            self.leases.clone(),
        );
    }

    pub(crate) fn lease_granted(&self, lease: Duration, dormant: bool) {
        let dormant = if dormant { "true" } else { "false" };
        self.leases
            .get_or_create(&LeaseLabels { dormant })
            .observe(lease.as_secs_f64());
    }

    /// Sessions expired so far because their node answered no probe.
    pub fn probe_expiries(&self) -> u64 {
        self.probe_expiries.get()
    }

    /// Probes so far that the reported node answered.
    pub fn probes_answered(&self) -> u64 {
        self.probes_answered.get()
    }

    /// Requests of `kind` (see [`RequestLabels`]) taken so far.
    pub fn requests_taken(&self, kind: &'static str) -> u64 {
        self.requests.get_or_create(&RequestLabels { kind }).get()
    }

    pub(crate) fn request(&self, kind: &'static str) {
        self.requests.get_or_create(&RequestLabels { kind }).inc();
    }
}
