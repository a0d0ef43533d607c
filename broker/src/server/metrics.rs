//! The broker's Prometheus/OpenMetrics metrics: counters bumped on the request path
//! (atomics and a read-locked lookup by topic per batch: nothing allocated, nothing per
//! record) and the partition health computed at each scrape from the broker's state.

use crate::server::State;
use parking_lot::{Mutex, RwLock};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Weak};
use std::time::Instant;

/// The label of the per-topic counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// The topic's name.
    pub topic: String,
}

/// What the request handlers count.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    records_in: Family<TopicLabels, Counter>,
    bytes_in: Family<TopicLabels, Counter>,
    records_out: Family<TopicLabels, Counter>,
    bytes_out: Family<TopicLabels, Counter>,
    produce_latency: Histogram,
    fetch_latency: Histogram,
    /// Replicas taken out of an in-sync set this broker leads.
    isr_shrinks: Counter,
    /// Replicas added to an in-sync set this broker leads.
    isr_expands: Counter,
    /// PEHRA: times this broker woke from dormancy.
    pub wakeups: Counter,
    /// PEHRA: produces held (as the Pehredar) for a sleeping leader.
    pub held_produces: Counter,
    /// Warm handovers: partition leaderships this broker handed over (pre-synced).
    pub handovers_given: Counter,
    /// Warm handovers this broker started pre-synchronising that were rolled back.
    pub handovers_rolled_back: Counter,
    /// Produces held during a warm handover's switchover (answered after it).
    pub handover_held_produces: Counter,
    /// Followers' fetches this broker answered as a leader (empty ones too).
    pub replica_fetches_answered: Counter,
    /// Each topic's four counters, found by name without allocating.
    /// Each topic's counters, found by name on every produce and fetch (hashbrown's
    /// default hasher: std's SipHash cost ~250 instructions a record here).
    topics: Arc<RwLock<hashbrown::HashMap<String, Arc<TopicCounters>>>>,
}

/// One topic's counters (handles into the families).
#[derive(Debug)]
struct TopicCounters {
    records_in: Counter,
    bytes_in: Counter,
    records_out: Counter,
    bytes_out: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        // 100 µs .. ~3.3 s: a loopback produce to an acks=all timeout.
        let buckets = || exponential_buckets(0.0001, 2.0, 16);
        Metrics {
            records_in: Family::default(),
            bytes_in: Family::default(),
            records_out: Family::default(),
            bytes_out: Family::default(),
            produce_latency: Histogram::new(buckets()),
            fetch_latency: Histogram::new(buckets()),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            wakeups: Counter::default(),
            held_produces: Counter::default(),
            handovers_given: Counter::default(),
            handovers_rolled_back: Counter::default(),
            handover_held_produces: Counter::default(),
            replica_fetches_answered: Counter::default(),
            topics: Arc::default(),
        }
    }
}

impl Metrics {
    /// The counters of `topic` (made on its first use).
    /// Runs `f` on `topic`'s counters, made on its first use.
    fn with_topic(&self, topic: &str, f: impl FnOnce(&TopicCounters)) {
        if let Some(counters) = self.topics.read().get(topic) {
            return f(counters);
        }
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        let counters = Arc::new(TopicCounters {
            records_in: self.records_in.get_or_create(&labels).clone(),
            bytes_in: self.bytes_in.get_or_create(&labels).clone(),
            records_out: self.records_out.get_or_create(&labels).clone(),
            bytes_out: self.bytes_out.get_or_create(&labels).clone(),
        });
        f(self.topics.write().entry(labels.topic).or_insert(counters));
    }

    /// A batch of `records` records and `bytes` bytes appended to `topic`.
    pub(crate) fn produced(&self, topic: &str, records: u32, bytes: usize) {
        self.with_topic(topic, |counters| {
            counters.records_in.inc_by(records.into());
            counters.bytes_in.inc_by(bytes as u64);
        });
    }

    /// Records and bytes of `topic` sent to a consumer.
    pub(crate) fn fetched(&self, topic: &str, records: u64, bytes: u64) {
        if records == 0 {
            return;
        }
        self.with_topic(topic, |counters| {
            counters.records_out.inc_by(records);
            counters.bytes_out.inc_by(bytes);
        });
    }

    /// A partition's metadata was applied: if this broker (`me`) leads it, the replicas
    /// that left or joined its in-sync set since `before` (whoever changed it: this
    /// leader, or the controller) are counted.
    pub(crate) fn isr_changed(&self, before: &[u32], replica: &crate::server::partition::Replica) {
        if !replica.leads() {
            return;
        }
        let after = &replica.meta().isr;
        let left = before.iter().filter(|r| !after.contains(r)).count();
        let joined = after.iter().filter(|r| !before.contains(r)).count();
        self.isr_shrinks.inc_by(left as u64);
        self.isr_expands.inc_by(joined as u64);
    }

    /// A produce handled since `start` (to its answer, or to its hand-over to the
    /// acks=all wait).
    pub(crate) fn produce_took(&self, start: Instant) {
        self.produce_latency.observe(start.elapsed().as_secs_f64());
    }

    /// A fetch answered since `start`.
    pub(crate) fn fetch_took(&self, start: Instant) {
        self.fetch_latency.observe(start.elapsed().as_secs_f64());
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "pehra_broker_records_in",
            "Records appended by producers, per topic (leader side)",
            self.records_in.clone(),
        );
        registry.register(
            "pehra_broker_bytes_in",
            "Record batch bytes appended by producers, per topic",
            self.bytes_in.clone(),
        );
        registry.register(
            "pehra_broker_records_out",
            "Committed records sent to consumers, per topic",
            self.records_out.clone(),
        );
        registry.register(
            "pehra_broker_bytes_out",
            "Record batch bytes sent to consumers, per topic",
            self.bytes_out.clone(),
        );
        registry.register(
            "pehra_broker_produce_latency_seconds",
            "Time to handle a produce (to the answer, or to the acks=all wait)",
            self.produce_latency.clone(),
        );
        registry.register(
            "pehra_broker_fetch_latency_seconds",
            "Time to answer a consumer fetch",
            self.fetch_latency.clone(),
        );
        registry.register(
            "pehra_broker_isr_shrinks",
            "Replicas removed from in-sync sets of partitions this broker leads (by it or by the controller)",
            self.isr_shrinks.clone(),
        );
        registry.register(
            "pehra_broker_isr_expands",
            "Replicas added to in-sync sets of partitions this broker leads",
            self.isr_expands.clone(),
        );
        registry.register(
            "pehra_broker_wakeups",
            "PEHRA: wakes from dormancy",
            self.wakeups.clone(),
        );
        registry.register(
            "pehra_broker_held_produces",
            "PEHRA: produces held by this broker as the Pehredar for a sleeping leader",
            self.held_produces.clone(),
        );
        registry.register(
            "pehra_broker_handovers_given",
            "Warm handovers: partition leaderships this broker handed over after a pre-sync",
            self.handovers_given.clone(),
        );
        registry.register(
            "pehra_broker_handovers_rolled_back",
            "Warm handovers this broker pre-synchronised that were rolled back",
            self.handovers_rolled_back.clone(),
        );
        registry.register(
            "pehra_broker_handover_held_produces",
            "Produces held during a warm handover's switchover and answered after it",
            self.handover_held_produces.clone(),
        );
        registry.register(
            "pehra_broker_replica_fetches_answered",
            "Followers' fetches answered by this broker as a leader, empty ones included (an idle leader holds one up to 30 s, a dormant one until it wakes, appends or its alarm rings)",
            self.replica_fetches_answered.clone(),
        );
    }
}

/// A broker's metrics, kept across its restarts in place and rejoins: give the same
/// one to every [`crate::BrokerConfig`] of the process and register it once.
#[derive(Debug, Clone, Default)]
pub struct BrokerMetrics {
    pub(crate) counters: Metrics,
    /// The running broker's state, read at each scrape.
    current: Arc<Mutex<Weak<State>>>,
    /// Consumer lag (group, topic, partition, records) of the partitions it leads, as
    /// read by the last [`BrokerMetrics::refresh`].
    lag: Arc<Mutex<Vec<(LagLabels, i64)>>>,
}

/// The labels of the consumer lag gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    /// The consumer group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

impl BrokerMetrics {
    /// Registers the counters and the health gauges (read at each scrape) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        self.counters.register(registry);
        registry.register_collector(Box::new(Health {
            current: self.current.clone(),
            lag: self.lag.clone(),
        }));
    }

    /// Reads, for the consumer lag gauge, the offsets every consumer group committed
    /// (`/consumers/{group}/{topic}/{p}`) for the partitions this broker leads: one
    /// zookeeper read per group and partition. Call it before a scrape (bounded by the
    /// caller); the lag is the high watermark minus the committed offset.
    pub async fn refresh(&self) {
        let state = self.current.lock().upgrade();
        let Some(state) = state else { return };
        let led = state.led_high_watermarks();
        let Some(zk) = state.zk_client() else { return };
        drop(state);
        let mut lag = Vec::new();
        if !led.is_empty() {
            let Ok((groups, _)) = zk.get_children(pehra_cluster::CONSUMERS).await else {
                return;
            };
            for group in groups {
                for (topic, partition, hw) in &led {
                    let path = pehra_cluster::offset_path(&group, topic, *partition);
                    let Ok((data, _)) = zk.get_data(&path).await else {
                        continue; // this group does not read this partition
                    };
                    let Some(offset) = std::str::from_utf8(&data)
                        .ok()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let labels = LagLabels {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    lag.push((labels, hw.saturating_sub(offset) as i64));
                }
            }
        }
        *self.lag.lock() = lag;
    }

    /// The broker now running with `state`.
    pub(crate) fn attach(&self, state: &Arc<State>) {
        *self.current.lock() = Arc::downgrade(state);
    }
}

/// The gauges computed at scrape time from the partitions and the PEHRA state.
struct Health {
    current: Arc<Mutex<Weak<State>>>,
    lag: Arc<Mutex<Vec<(LagLabels, i64)>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Health")
    }
}

/// The label of the PEHRA state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

impl Collector for Health {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let lag = self.lag.lock().clone();
        let mut metric = encoder.encode_descriptor(
            "pehra_broker_consumer_lag",
            "Records between a consumer group's committed offset and the high watermark, for partitions this broker leads",
            None,
            MetricType::Gauge,
        )?;
        for (labels, value) in &lag {
            ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
        }
        let current = self.current.lock().upgrade();
        let Some(state) = current else {
            return Ok(());
        };
        let health = state.partition_health();
        gauge(
            &mut encoder,
            "pehra_broker_partitions",
            "Partition replicas this broker holds",
            health.replicas,
        )?;
        gauge(
            &mut encoder,
            "pehra_broker_leader_partitions",
            "Partitions this broker leads",
            health.led,
        )?;
        gauge(
            &mut encoder,
            "pehra_broker_under_replicated_partitions",
            "Partitions this broker leads whose in-sync set is smaller than their replica set",
            health.under_replicated,
        )?;
        gauge(
            &mut encoder,
            "pehra_broker_under_min_isr_partitions",
            "Partitions this broker leads with fewer in-sync replicas than min.insync (acks=all produces fail)",
            health.under_min_isr,
        )?;
        gauge(
            &mut encoder,
            "pehra_broker_offline_partitions",
            "Partitions this broker holds a replica of that have no leader",
            health.offline,
        )?;
        let asleep = state.is_asleep();
        let pehredar = crate::server::pehra::in_office(&state);
        let mut metric = encoder.encode_descriptor(
            "pehra_broker_pehra_state",
            "PEHRA: 1 for the state this broker is in (awake, asleep) and 1 for pehredar while it holds the office",
            None,
            MetricType::Gauge,
        )?;
        for (name, on) in [
            ("awake", !asleep),
            ("asleep", asleep),
            ("pehredar", pehredar),
        ] {
            let labels = StateLabels { state: name };
            ConstGauge::new(i64::from(on)).encode(metric.encode_family(&labels)?)?;
        }
        let lease = crate::server::pehra::lease_figures(&state);
        if let Some(index) = lease.health_index {
            gauge(
                &mut encoder,
                "pehra_broker_health_index_permille",
                "Seed 002: this broker's Node Health Index, permille (850+ excellent, 650+ good, 400+ warning, below critical by default)",
                i64::from(index),
            )?;
        }
        if let Some(ms) = lease.lease_given_ms {
            gauge(
                &mut encoder,
                "pehra_broker_pehredar_lease_ms",
                "Seed 002: the adaptive lease this broker gives as Pehredar, ms",
                i64::from(ms),
            )?;
        }
        if let Some(ms) = lease.lease_heard_ms {
            gauge(
                &mut encoder,
                "pehra_broker_pehredar_lease_heard_ms",
                "Seed 002: the lease the Pehredar in office gave this broker at its last check-in, ms",
                i64::from(ms),
            )?;
        }
        if let Some(lease) = state.zk_client().and_then(|zk| zk.granted_lease()) {
            gauge(
                &mut encoder,
                "pehra_broker_session_lease_ms",
                "Seed 002: the lease the zookeeper granted this broker's session at its last heartbeat (from its health; the lease of its partition leaderships), ms",
                i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

/// Counts of partitions by health, as this broker sees them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionHealth {
    pub replicas: i64,
    pub led: i64,
    pub under_replicated: i64,
    pub under_min_isr: i64,
    pub offline: i64,
}
