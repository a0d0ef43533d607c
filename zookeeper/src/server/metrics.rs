//! The zookeeper's Prometheus/OpenMetrics metrics, kept by its core task (atomics; the
//! gauges are refreshed once per pass of the core loop).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The label of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get_data`, `get_children`, `sync`, `heartbeat`, `open_session`, `write`,
    /// `expire`, `pehra_mode`.
    pub kind: &'static str,
}

/// A zookeeper's metrics: give one to [`crate::ServerConfig`] and register it.
#[derive(Debug, Clone, Default)]
pub struct ZkMetrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) sessions: Gauge,
    pub(crate) znodes: Gauge,
    pub(crate) watches: Gauge,
    pub(crate) zxid: Gauge,
    pub(crate) wal_bytes: Counter,
    pub(crate) wal_bytes_since_snapshot: Gauge,
    pub(crate) expired_sessions: Counter,
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
    }

    pub(crate) fn request(&self, kind: &'static str) {
        self.requests.get_or_create(&RequestLabels { kind }).inc();
    }
}
