//! `produce-load`: one producer and one consumer in one process, through a broker (or a
//! raw UDP echo), measuring records/s, MB/s and produce-to-consume latency.
//!
//! Every record is `--record-size` bytes: the first 8 are the send time (nanoseconds
//! since this process started, monotonic, little-endian), the next 8 its sequence number,
//! the rest filler. The consumer, in the same process, subtracts the send time from its
//! own clock when the record arrives, so no clock sync is needed.
//!
//! Systems (`--system`):
//! * `ours`: Pehra through `pehra_broker::client::ClusterClient` (two clients: producer
//!   and consumer). `--in-flight` tasks each send one produce request at a time
//!   (`--batch` records in it; `--acks 1`: answered once the leader wrote it, `--acks
//!   all`: once every in-sync replica has it). The consumer observes the partition (a
//!   notification whenever its high watermark moves: the end of the committed records,
//!   the most a fetch returns) and fetches from its next offset whenever the high
//!   watermark is past it; it starts at the high watermark it sees first. A request body
//!   over 1024 bytes goes block-wise (100-byte records: more than 7 per batch); such
//!   requests fail (4.08) when several are in flight at once, so use `--in-flight 1`
//!   for them. `--fresh-topic` gives every run a topic of its own: a consumer that
//!   exits leaves its observer behind on the broker, and observers of earlier runs on
//!   the same partition make a new consumer miss notifications (see its help). With
//!   `--replication-factor N` that topic has N replicas (N live brokers needed); the
//!   run starts once the partition has a served leader, all N replicas are in sync, and
//!   (N > 1) a record produced with acks all was acknowledged (the followers fetch; the
//!   consumer starts after it). Brokers that missed the topic's assignment are nudged to
//!   re-read it (a broker race, see `wait_served`; counted as `nudges`).
//!   With N > 1 a record is committed (and consumed) once the in-sync followers have
//!   fetched it, whatever `--acks` is; acks all only makes the producer wait for that.
//! * `mqtt`: an MQTT broker (Mosquitto) through rumqttc: a publisher and a subscriber
//!   connection, QoS `--qos` (0 or 1), `--batch` records packed in one PUBLISH; at QoS 1
//!   at most `--in-flight` PUBLISHes await their PUBACK.
//! * `raw`: raw UDP through an echo server (`udp-echo`): `--batch` records per datagram
//!   sent to the echo, which returns them to the same socket, where the consumer reads
//!   them; the ceiling (one hop through another process, no broker work).
//!
//! Flow control, the same for all: at most `--window` messages (`--window` × `--batch`
//! records) are produced but not yet consumed; the producer waits for the consumer
//! beyond that. For the lossy systems (raw UDP, MQTT QoS 0) a window that has not moved
//! for `--stall-ms` is written off as lost so the run goes on, and so are the records of
//! a failed produce request; the losses and errors are reported.
//!
//! The first `--warmup` records are not measured; then `--count` records are. Records/s
//! is the measured records consumed divided by the time from the earliest send to the
//! last arrival among them. The whole run is bounded by `--timeout` seconds (a watchdog
//! thread exits the process 5 s after that if it is stuck anyway).
//!
//! `--probe` instead checks that the target answers a real request (the topic has a
//! leader and can be fetched, and `--replication-factor` replicas of the partition are in
//! sync; an MQTT CONNACK; an echoed datagram) within `--timeout`,
//! and exits 0 if it does.

use parking_lot::Mutex;
use pehra_bench::{json_str, Latencies};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use pehra_broker::client::{records_from, ClusterClient, RetryStats};
use pehra_cluster as cluster;
use pehra_shared::api::decode_response;
use pehra_shared::wire::{
    self, Acks, FetchResponse, PartitionMetadata, ProduceRequest, Record, RecordBatch, TopicConfig,
};
use pehra_zookeeper::WatchEvent;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum System {
    /// Pehra's broker (CoAP/UDP), via pehra_broker::client.
    Ours,
    /// An MQTT broker, via rumqttc.
    Mqtt,
    /// Raw UDP through an echo server.
    Raw,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Ours => "ours",
            System::Mqtt => "mqtt",
            System::Raw => "raw",
        }
    }
}

/// `--acks`: which produce acknowledgement to ask for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum AcksArg {
    /// The leader wrote the batch.
    #[value(name = "1")]
    Leader,
    /// Every in-sync replica has the batch.
    #[value(name = "all")]
    All,
}

impl AcksArg {
    fn acks(self) -> Acks {
        match self {
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }

    fn name(self) -> &'static str {
        match self {
            AcksArg::Leader => "1",
            AcksArg::All => "all",
        }
    }
}

/// Produce-to-consume load: one producer, one consumer, one process.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// What to drive.
    #[arg(long, value_enum)]
    system: System,
    /// ours: the zookeeper; mqtt: the broker; raw: the UDP echo server (HOST:PORT).
    #[arg(long)]
    target: String,
    /// ours: the topic (partition 0 is used).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// ours: the partition.
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// ours: create a topic of its own for this run (named after --topic, the process
    /// id and the time; --partition + 1 partitions, --replication-factor replicas) and
    /// delete it afterwards, so observers left behind by earlier runs do not share its
    /// resource.
    /// (With N observers on one partition, N a multiple of 4, the message IDs the broker
    /// gives one observer's notifications repeat after 65536/gcd(N, 65536) <= 16384 of
    /// them, while its client still remembers them and drops the repeats as duplicates:
    /// from then on the consumer only sees new records when its 50 ms poll fetches.)
    #[arg(long)]
    fresh_topic: bool,
    /// ours: replication factor of the --fresh-topic (that many live brokers needed);
    /// the run (and --probe) starts once that many replicas of the partition are in sync.
    #[arg(long, default_value_t = 1)]
    replication_factor: u32,
    /// ours: acknowledgement of every produce request: 1 (the leader wrote it) or all
    /// (every in-sync replica has it).
    #[arg(long, value_enum, default_value = "1")]
    acks: AcksArg,
    /// mqtt: QoS of publisher and subscriber (0 or 1).
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// mqtt: set TCP_NODELAY on both connections (no Nagle delay for small PUBLISHes).
    #[arg(long)]
    tcp_nodelay: bool,
    /// Records per message (produce request, PUBLISH, datagram).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Bytes per record (at least 16).
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Measured records.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Records sent first and not measured.
    #[arg(long, default_value_t = 10_000)]
    warmup: u64,
    /// ours: concurrent produce requests; mqtt QoS 1: PUBLISHes awaiting PUBACK.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Messages produced but not yet consumed, at most (see the module docs).
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// raw: at most this many bytes in flight (the window is cut to fit): udp-echo's
    /// socket has the default receive buffer (about 208 kB with per-datagram overhead),
    /// and a larger burst of big datagrams is dropped there.
    #[arg(long, default_value_t = 128 * 1024)]
    raw_window_bytes: usize,
    /// ours: max_bytes of one fetch.
    #[arg(long, default_value_t = 64 * 1024)]
    fetch_bytes: u32,
    /// Lossy systems: a window stuck this long is written off as lost.
    #[arg(long, default_value_t = 500)]
    stall_ms: u64,
    /// The whole run (or the probe) ends after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Only check that the target answers (see the module docs).
    #[arg(long)]
    probe: bool,
    /// Print one JSON line instead of the human-readable report.
    #[arg(long)]
    json: bool,
    /// ours: a client credentials file (made by `pehra keys`): every request is then
    /// protected with OSCORE (a cluster started with credentials needs it).
    #[arg(long, env = "PEHRA_CREDENTIALS")]
    credentials: Option<std::path::PathBuf>,
    /// Free-form label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
}

/// What producer and consumer share.
struct Shared {
    t0: Instant,
    deadline: Instant,
    total: u64,
    warmup: u64,
    record_size: usize,
    /// Records allowed produced but not consumed.
    window_records: u64,
    lossy: bool,
    stall: Duration,
    /// Records handed to the transport (counted before the send).
    sent: AtomicU64,
    /// Distinct records consumed.
    received: AtomicU64,
    /// Records written off after a stall (lossy systems only).
    written_off: AtomicU64,
    stalls: AtomicU64,
    producer_done: AtomicBool,
    /// First send and end of producing (every message sent, and answered where the
    /// system answers), ns since t0.
    produce_start: AtomicU64,
    produce_end: AtomicU64,
    /// Woken whenever the consumer got further.
    progress: Notify,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// ours: notifications the consumer got, fetches it made, fetches that were empty.
    notifications: AtomicU64,
    fetches: AtomicU64,
    empty_fetches: AtomicU64,
    /// ours: the producer client's retries (pehra_broker::client::RetryStats) during
    /// the run (before it: those of the waits for the partition, as a baseline).
    retries: Mutex<RetryStats>,
    /// ours: how often the brokers were nudged to re-read their assignment
    /// (see [`wait_served`]).
    nudges: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn past_deadline(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock();
        if first.is_none() {
            *first = Some(what);
        }
    }

    /// `n` more records are being sent.
    fn mark_sent(&self, n: u64) {
        self.produce_start
            .fetch_min(self.now_ns(), Ordering::AcqRel);
        self.sent.fetch_add(n, Ordering::AcqRel);
    }

    fn finish_producing(&self) {
        self.produce_end.store(self.now_ns(), Ordering::Release);
        self.producer_done.store(true, Ordering::Release);
    }

    /// Waits until the records below `end` may be sent; false if the run is over.
    async fn wait_window(&self, end: u64) -> bool {
        loop {
            if self.past_deadline() {
                return false;
            }
            let done =
                self.received.load(Ordering::Acquire) + self.written_off.load(Ordering::Acquire);
            if end <= done + self.window_records {
                return true;
            }
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let done2 =
                self.received.load(Ordering::Acquire) + self.written_off.load(Ordering::Acquire);
            if done2 != done {
                continue;
            }
            let wait = if self.lossy {
                self.stall
            } else {
                self.deadline.saturating_duration_since(Instant::now())
            };
            if tokio::time::timeout(wait, notified).await.is_err() && self.lossy {
                // Nothing arrived for a while: what is outstanding is lost.
                let received = self.received.load(Ordering::Acquire);
                let off = self.written_off.load(Ordering::Acquire);
                let outstanding = self
                    .sent
                    .load(Ordering::Acquire)
                    .saturating_sub(received + off);
                if outstanding > 0 {
                    self.written_off.fetch_add(outstanding, Ordering::AcqRel);
                    self.stalls.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The value of record `seq`, stamped now.
    fn value(&self, seq: u64) -> Vec<u8> {
        let mut v = vec![0x5a; self.record_size];
        v[0..8].copy_from_slice(&self.now_ns().to_le_bytes());
        v[8..16].copy_from_slice(&seq.to_le_bytes());
        v
    }

    /// Appends the value of record `seq`, stamped now, to `buf`.
    fn put_value(&self, buf: &mut Vec<u8>, seq: u64) {
        buf.extend_from_slice(&self.now_ns().to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        buf.resize(buf.len() + self.record_size - 16, 0x5a);
    }
}

/// The consumer's bookkeeping.
struct Consumed {
    seen: Vec<u64>,
    received: u64,
    measured: u64,
    dups: u64,
    foreign: u64,
    lat: Latencies,
    first_stamp: u64,
    last_arrival: u64,
    /// When a new record last arrived.
    last_progress: Instant,
}

impl Consumed {
    fn new(total: u64) -> Self {
        Consumed {
            seen: vec![0; total.div_ceil(64) as usize],
            received: 0,
            measured: 0,
            dups: 0,
            foreign: 0,
            lat: Latencies::default(),
            first_stamp: u64::MAX,
            last_arrival: 0,
            last_progress: Instant::now(),
        }
    }

    /// One record's value arrived at `now` (ns since t0).
    fn record(&mut self, sh: &Shared, value: &[u8], now: u64) {
        if value.len() != sh.record_size {
            self.foreign += 1;
            return;
        }
        let stamp = u64::from_le_bytes(value[0..8].try_into().expect("8 bytes"));
        let seq = u64::from_le_bytes(value[8..16].try_into().expect("8 bytes"));
        if seq >= sh.total || stamp > now {
            self.foreign += 1;
            return;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen[word] & bit != 0 {
            self.dups += 1;
            return;
        }
        self.seen[word] |= bit;
        self.received += 1;
        self.last_progress = Instant::now();
        if seq >= sh.warmup {
            self.measured += 1;
            self.lat.record(now - stamp);
            self.first_stamp = self.first_stamp.min(stamp);
            self.last_arrival = self.last_arrival.max(now);
        }
    }

    /// Tells the producer how far the consumer got.
    fn publish(&self, sh: &Shared) {
        sh.received.store(self.received, Ordering::Release);
        sh.progress.notify_waiters();
    }

    /// Whether the consumer should stop: everything arrived, the deadline passed, or
    /// the producer is done and what is missing was written off (or, lossy systems,
    /// nothing came for a stall period: the rest was lost).
    fn finished(&self, sh: &Shared) -> bool {
        if self.received >= sh.total || sh.past_deadline() {
            return true;
        }
        sh.producer_done.load(Ordering::Acquire)
            && (self.received + sh.written_off.load(Ordering::Acquire) >= sh.total
                || (sh.lossy && self.last_progress.elapsed() >= sh.stall))
    }
}

/// How long a consumer waits for input before re-checking whether it is finished.
const TICK: Duration = Duration::from_millis(50);

// ------------------------------------------------------------------------------- ours

/// A cluster client, with OSCORE if `--credentials` names a file.
async fn connect(args: &Args, zk: SocketAddr) -> Result<ClusterClient> {
    let credentials = args
        .credentials
        .as_ref()
        .map(|path| {
            pehra_shared::security::credentials::Credentials::load(path)
                .map(Arc::new)
                .with_context(|| format!("loading the credentials {}", path.display()))
        })
        .transpose()?;
    Ok(ClusterClient::connect_secured(zk, credentials).await?)
}

async fn ours(args: &Args, sh: Arc<Shared>) -> Result<Consumed> {
    let zk = resolve(&args.target)?;
    let producer = Arc::new(connect(args, zk).await.context("producer: connect")?);
    let topic = if args.fresh_topic {
        // A topic of its own: no observers of earlier runs on its partition resource.
        let name = format!("{}-{}-{}", args.topic, std::process::id(), wall_ms());
        let config = TopicConfig {
            partitions: args.partition + 1,
            replication_factor: args.replication_factor,
            min_insync_replicas: None,
        };
        producer
            .create_topic_with(&name, config)
            .await
            .with_context(|| format!("creating topic {name}"))?;
        name
    } else {
        args.topic.clone()
    };
    let result = ours_on(args, sh.clone(), zk, &producer, &topic).await;
    {
        let (now, mut r) = (producer.retry_stats(), sh.retries.lock());
        *r = now.since(&r);
    }
    if args.fresh_topic {
        // Also after a failed run: a replicated topic left behind would keep its
        // followers fetching during the runs after this one.
        if let Err(e) = producer.delete_topic(&topic).await {
            eprintln!("produce-load: deleting topic {topic}: {e}");
        }
    }
    result
}

/// The run of `ours` on `topic`, once it exists.
async fn ours_on(
    args: &Args,
    sh: Arc<Shared>,
    zk: SocketAddr,
    producer: &Arc<ClusterClient>,
    topic: &str,
) -> Result<Consumed> {
    let topic = topic.to_string();
    let ready_timeout = Duration::from_secs(20);
    wait_served(producer, &topic, args.partition, ready_timeout, &sh.nudges).await?;
    let in_sync = args.replication_factor as usize;
    wait_in_sync(producer, &topic, args.partition, in_sync, ready_timeout).await?;
    if args.replication_factor > 1 {
        wait_replicating(producer, &topic, args.partition, ready_timeout, &sh.nudges).await?;
    }
    // The retries of the run only, not of the waits above.
    *sh.retries.lock() = producer.retry_stats();
    let consumer = connect(args, zk).await.context("consumer: connect")?;
    let partition = args.partition;
    let mut observation = consumer
        .observe_partition(&topic, partition)
        .await
        .context("consumer: observe")?;
    // The first response: the high watermark now (the end of the committed records, the
    // most a fetch returns), where the consumer starts.
    let first = tokio::time::timeout(Duration::from_secs(5), observation.next())
        .await
        .map_err(|_| anyhow!("consumer: no first observe response within 5 s"))?
        .ok_or_else(|| anyhow!("consumer: the observation ended at once"))?
        .context("consumer: observe")?;
    let start = decode_response::<FetchResponse>(&first)
        .map_err(|e| anyhow!("consumer: observe response: {}", e.message))?
        .high_watermark;

    let consumer_task = {
        let sh = sh.clone();
        let (topic, fetch_bytes) = (topic.clone(), args.fetch_bytes);
        tokio::spawn(async move {
            let mut c = Consumed::new(sh.total);
            let (mut next, mut known_end) = (start, start);
            let mut observing = true;
            while !c.finished(&sh) {
                if next >= known_end {
                    if observing {
                        match tokio::time::timeout(TICK, observation.next()).await {
                            Ok(Some(Ok(tick))) => {
                                sh.notifications.fetch_add(1, Ordering::Relaxed);
                                if let Ok(t) = decode_response::<FetchResponse>(&tick) {
                                    known_end = known_end.max(t.high_watermark);
                                }
                                if next >= known_end {
                                    continue;
                                }
                            }
                            Ok(Some(Err(e))) => {
                                sh.error(format!("consume: observation failed: {e}"));
                                observing = false;
                            }
                            Ok(None) => {
                                sh.error("consume: the observation ended".into());
                                observing = false;
                            }
                            // No notification for a while: look anyway (a lost one).
                            Err(_) => {}
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                match consumer.fetch(&topic, partition, next, fetch_bytes).await {
                    Ok(response) => {
                        sh.fetches.fetch_add(1, Ordering::Relaxed);
                        if response.batches.is_empty() {
                            sh.empty_fetches.fetch_add(1, Ordering::Relaxed);
                        }
                        known_end = known_end.max(response.high_watermark);
                        let now = sh.now_ns();
                        match records_from(&response, next) {
                            Ok(records) => {
                                for (offset, record) in records {
                                    c.record(&sh, &record.value, now);
                                    next = offset + 1;
                                }
                                c.publish(&sh);
                            }
                            Err(e) => {
                                sh.error(format!("consume: {e}"));
                                break;
                            }
                        }
                    }
                    Err(e) => sh.error(format!("fetch at {next}: {e}")),
                }
            }
            c
        })
    };

    let next_seq = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for _ in 0..args.in_flight {
        let (sh, producer, next_seq, topic) = (
            sh.clone(),
            producer.clone(),
            next_seq.clone(),
            topic.clone(),
        );
        let batch = args.batch as u64;
        let acks = args.acks.acks();
        producers.push(tokio::spawn(async move {
            loop {
                let seq0 = next_seq.fetch_add(batch, Ordering::AcqRel);
                if seq0 >= sh.total {
                    break;
                }
                let n = batch.min(sh.total - seq0);
                if !sh.wait_window(seq0 + n).await {
                    break;
                }
                let timestamp_ms = wall_ms();
                let records: Vec<Record> = (seq0..seq0 + n)
                    .map(|seq| Record {
                        key: None,
                        value: sh.value(seq),
                        timestamp_ms,
                        headers: vec![],
                    })
                    .collect();
                sh.mark_sent(n);
                if let Err(e) = producer
                    .produce(&topic, partition, &records, acks, None)
                    .await
                {
                    sh.error(format!("produce: {e}"));
                    // Those records will not come: free their room in the window.
                    sh.written_off.fetch_add(n, Ordering::AcqRel);
                    sh.progress.notify_waiters();
                }
            }
        }));
    }
    for p in producers {
        p.await.context("producer task")?;
    }
    sh.finish_producing();
    consumer_task.await.context("consumer task")
}

/// How long a partition may stay unserved before [`wait_served`] nudges the brokers to
/// re-read their assignment.
const NUDGE_AFTER: Duration = Duration::from_secs(1);

/// Waits until the partition has a leader in the zookeeper *and* that broker serves it:
/// the zookeeper names the leader before the broker has opened the partition (it learns
/// of the assignment through a watch), and until then it answers NotLeader.
///
/// A broker can miss a new topic's partitions for good: it re-reads its assignment when
/// /topics changes, and if that read falls between the creation of the topic's znode and
/// the controller's creation of its partitions, it watches no znode that changes next
/// (seen with three brokers on one CPU, at `pehra topic create` right after start and
/// for --fresh-topic). So while the zookeeper names a live leader that does not serve
/// the partition for [`NUDGE_AFTER`], this rewrites the topic znode with its own data
/// (at its version): the brokers watch it and re-read; the controller does not. Counted
/// in `nudges`.
async fn wait_served(
    client: &ClusterClient,
    topic: &str,
    partition: u32,
    timeout: Duration,
    nudges: &AtomicU64,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // One bounded attempt (the client itself waits and retries for long).
        let attempt = tokio::time::timeout(NUDGE_AFTER, async {
            client
                .wait_for_leaders(topic, NUDGE_AFTER.min(left))
                .await
                .map_err(|e| format!("waiting for a leader of {topic}: {e}"))?;
            client
                .fetch(topic, partition, 0, 1)
                .await
                .map_err(|e| e.to_string())
        });
        let error = match attempt.await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => format!("not served within {NUDGE_AFTER:?}"),
        };
        if Instant::now() >= deadline {
            bail!("{topic}/{partition} is not served after {timeout:?}: {error}");
        }
        if client.metadata().leader(topic, partition).is_ok() {
            let why = format!("{topic}/{partition} has a leader but is not served ({error})");
            nudge_assignment(client, topic, &why, nudges).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With followers: produces one record with acks all until it is acknowledged, so every
/// in-sync follower is fetching (the leader's high watermark moves only once each has
/// fetched in its term). A follower that missed the assignment (see [`wait_served`])
/// never fetches; the brokers are nudged the same way. The record is written before the
/// consumer starts (at the high watermark), so it is not consumed.
async fn wait_replicating(
    client: &ClusterClient,
    topic: &str,
    partition: u32,
    timeout: Duration,
    nudges: &AtomicU64,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let record = Record {
        key: None,
        value: b"produce-load: replication check".to_vec(),
        timestamp_ms: wall_ms(),
        headers: vec![],
    };
    loop {
        let records = std::slice::from_ref(&record);
        let attempt = tokio::time::timeout(
            NUDGE_AFTER,
            client.produce(topic, partition, records, Acks::All, None),
        );
        let error = match attempt.await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no acks=all answer within {NUDGE_AFTER:?}"),
        };
        if Instant::now() >= deadline {
            bail!("{topic}/{partition}: the followers do not replicate after {timeout:?}: {error}");
        }
        let why =
            format!("{topic}/{partition}: a record with acks all is not acknowledged ({error})");
        nudge_assignment(client, topic, &why, nudges).await;
    }
}

/// Rewrites the topic znode with its own data (at its version), so the brokers, which
/// watch it, re-read their assignment (see [`wait_served`]).
async fn nudge_assignment(client: &ClusterClient, topic: &str, why: &str, nudges: &AtomicU64) {
    let path = cluster::topic_path(topic);
    let zk = client.zookeeper();
    if let Ok((data, stat)) = zk.get_data(&path).await {
        if zk.set_data(&path, &data, Some(stat.version)).await.is_ok() {
            nudges.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "produce-load: {why}: rewrote {path} so the brokers re-read their assignment"
            );
        }
    }
}

/// Waits until `want` replicas of the partition are in sync, watching its znode: the
/// controller gives a new partition fewer replicas than asked for while fewer brokers
/// are alive, and a leader drops a follower from the in-sync set that does not catch up
/// in time; a run measured meanwhile would not pay for the replication asked for.
async fn wait_in_sync(
    client: &ClusterClient,
    topic: &str,
    partition: u32,
    want: usize,
    timeout: Duration,
) -> Result<()> {
    let path = cluster::partition_path(topic, partition);
    let mut last: Option<PartitionMetadata> = None;
    let waited = tokio::time::timeout(timeout, async {
        let mut watch = client
            .zookeeper()
            .watch_data(&path)
            .await
            .with_context(|| format!("watching {path}"))?;
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Data(node))) => {
                    let meta = wire::decode::<PartitionMetadata>(&node.data)
                        .map_err(|e| anyhow!("{path}: {e}"))?;
                    if meta.isr.len() >= want {
                        return Ok(());
                    }
                    last = Some(meta);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow!("watching {path}: {e}")),
                None => bail!("{path}: the watch ended (partition deleted?)"),
            }
        }
    })
    .await;
    match waited {
        Ok(result) => result,
        Err(_) => Err(anyhow!(
            "{topic}/{partition}: not {want} replicas in sync after {timeout:?} (last seen: {})",
            last.map_or("nothing".into(), |m| format!(
                "replicas {:?}, isr {:?}",
                m.replicas, m.isr
            ))
        )),
    }
}

/// The size of one produce request body of `batch` records (for the report).
fn produce_body_bytes(args: &Args) -> usize {
    let records = (0..args.batch)
        .map(|_| Record {
            key: None,
            value: vec![0x5a; args.record_size],
            timestamp_ms: wall_ms(),
            headers: vec![],
        })
        .collect();
    let batch = wire::encode(&RecordBatch { records }).expect("encodes");
    let request = ProduceRequest {
        topic: args.topic.clone(),
        partition: args.partition,
        acks: args.acks.acks(),
        producer_id: None,
        base_sequence: None,
        gapless: false,
        leader_epoch: None,
        if_log_end: None,
        batch,
    };
    wire::encode(&request).expect("encodes").len()
}

// ------------------------------------------------------------------------------- mqtt

const MQTT_TOPIC: &str = "pehra/bench/produce";

fn mqtt_options(args: &Args, role: &str) -> Result<MqttOptions> {
    let addr = resolve(&args.target)?;
    let id = format!("produce-load-{role}-{}", std::process::id());
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(u16::try_from(args.in_flight.clamp(1, 65_535)).expect("clamped"))
        .set_max_packet_size(1 << 20, 1 << 20);
    Ok(opts)
}

/// A client and its event loop, with TCP_NODELAY if asked for.
fn mqtt_client(args: &Args, role: &str, cap: usize) -> Result<(AsyncClient, rumqttc::EventLoop)> {
    let (client, mut eventloop) = AsyncClient::new(mqtt_options(args, role)?, cap);
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(args.tcp_nodelay);
    eventloop.set_network_options(network);
    Ok((client, eventloop))
}

fn qos(args: &Args) -> Result<QoS> {
    match args.qos {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        q => bail!("--qos must be 0, 1 or 2 (got {q})"),
    }
}

async fn mqtt(args: &Args, sh: Arc<Shared>) -> Result<Consumed> {
    let qos = qos(args)?;
    // Subscriber first, and subscribed (SUBACK) before anything is published.
    let (sub, mut sub_loop) = mqtt_client(args, "sub", 64)?;
    sub.subscribe(MQTT_TOPIC, qos).await?;
    let subscribed = async {
        loop {
            match sub_loop.poll().await? {
                Event::Incoming(Packet::SubAck(_)) => return Ok::<_, rumqttc::ConnectionError>(()),
                _ => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .map_err(|_| anyhow!("subscriber: no SUBACK within 10 s"))?
        .context("subscriber")?;

    let consumer_task = {
        let sh = sh.clone();
        tokio::spawn(async move {
            let mut c = Consumed::new(sh.total);
            while !c.finished(&sh) {
                match tokio::time::timeout(TICK, sub_loop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        let now = sh.now_ns();
                        for value in p.payload.chunks(sh.record_size) {
                            c.record(&sh, value, now);
                        }
                        c.publish(&sh);
                    }
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(e)) => {
                        sh.error(format!("subscriber: {e}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            // Leave politely (DISCONNECT), within a short bound.
            let _ = sub.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while let Ok(event) = sub_loop.poll().await {
                    if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = event {
                        break;
                    }
                }
            })
            .await;
            c
        })
    };

    let (publisher, mut pub_loop) = mqtt_client(args, "pub", 64)?;
    let closing = Arc::new(AtomicBool::new(false));
    let pub_task = {
        let (sh, closing) = (sh.clone(), closing.clone());
        tokio::spawn(async move {
            loop {
                match pub_loop.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) if closing.load(Ordering::Acquire) => return,
                    Err(rumqttc::ConnectionError::RequestsDone) => return,
                    Err(e) => {
                        sh.error(format!("publisher: {e}"));
                        if sh.past_deadline() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
    };
    let batch = args.batch as u64;
    let mut seq0 = 0;
    while seq0 < sh.total {
        let n = batch.min(sh.total - seq0);
        if !sh.wait_window(seq0 + n).await {
            break;
        }
        let mut payload = Vec::with_capacity(n as usize * sh.record_size);
        for seq in seq0..seq0 + n {
            sh.put_value(&mut payload, seq);
        }
        sh.mark_sent(n);
        if let Err(e) = publisher.publish(MQTT_TOPIC, qos, false, payload).await {
            sh.error(format!("publish: {e}"));
            break;
        }
        seq0 += n;
    }
    sh.finish_producing();
    let consumed = consumer_task.await.context("consumer task")?;
    closing.store(true, Ordering::Release);
    let _ = publisher.disconnect().await;
    drop(publisher);
    let _ = tokio::time::timeout(Duration::from_secs(1), pub_task).await;
    Ok(consumed)
}

// -------------------------------------------------------------------------------- raw

/// Socket buffers of the raw UDP client: a whole window of datagrams coming back at
/// once must not overflow the default (about 200 kB; Linux caps this at rmem_max).
const RAW_SOCKET_BUFFER: usize = 4 << 20;

async fn raw(args: &Args, sh: Arc<Shared>) -> Result<Consumed> {
    let target = resolve(&args.target)?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer only means more losses, which are reported.
    let _ = socket.set_recv_buffer_size(RAW_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(RAW_SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&unspecified(target).into())?;
    let sock = Arc::new(UdpSocket::from_std(socket.into())?);
    sock.connect(target).await?;
    let consumer_task = {
        let (sh, sock) = (sh.clone(), sock.clone());
        tokio::spawn(async move {
            let mut c = Consumed::new(sh.total);
            let mut buf = vec![0u8; 65_536];
            while !c.finished(&sh) {
                // Errors (ECONNREFUSED from an earlier ICMP and the like) and quiet
                // ticks just lead to the next check.
                if let Ok(Ok(n)) = tokio::time::timeout(TICK, sock.recv(&mut buf)).await {
                    let now = sh.now_ns();
                    for value in buf[..n].chunks(sh.record_size) {
                        c.record(&sh, value, now);
                    }
                    c.publish(&sh);
                }
            }
            c
        })
    };
    let batch = args.batch as u64;
    let mut datagram = Vec::with_capacity(args.batch * args.record_size);
    let mut seq0 = 0;
    while seq0 < sh.total {
        let n = batch.min(sh.total - seq0);
        if !sh.wait_window(seq0 + n).await {
            break;
        }
        datagram.clear();
        for seq in seq0..seq0 + n {
            sh.put_value(&mut datagram, seq);
        }
        sh.mark_sent(n);
        if let Err(e) = sock.send(&datagram).await {
            sh.error(format!("send: {e}"));
        }
        seq0 += n;
    }
    sh.finish_producing();
    consumer_task.await.context("consumer task")
}

// ------------------------------------------------------------------------------ probe

async fn probe(args: &Args) -> Result<()> {
    match args.system {
        System::Ours => {
            let client = connect(args, resolve(&args.target)?).await?;
            let timeout = Duration::from_secs_f64(args.timeout);
            let nudges = AtomicU64::new(0);
            wait_served(&client, &args.topic, args.partition, timeout, &nudges).await?;
            let in_sync = args.replication_factor as usize;
            wait_in_sync(&client, &args.topic, args.partition, in_sync, timeout).await?;
        }
        System::Mqtt => {
            let (client, mut eventloop) = mqtt_client(args, "probe", 8)?;
            loop {
                if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await? {
                    break;
                }
            }
            let _ = client.disconnect().await;
        }
        System::Raw => {
            let target = resolve(&args.target)?;
            let sock = UdpSocket::bind(unspecified(target)).await?;
            sock.connect(target).await?;
            let mut buf = [0u8; 64];
            loop {
                sock.send(b"produce-load probe").await?;
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(100), sock.recv(&mut buf)).await
                {
                    if &buf[..n] == b"produce-load probe" {
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------- main

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolved to no address"))
}

fn unspecified(peer: SocketAddr) -> SocketAddr {
    if peer.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.record_size < 16
        || args.batch == 0
        || args.in_flight == 0
        || args.window == 0
        || args.replication_factor == 0
    {
        bail!(
            "--record-size must be >= 16; --batch, --in-flight, --window, \
             --replication-factor >= 1"
        );
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be > 0");
    }
    if args.system == System::Raw && args.batch * args.record_size > 65_507 {
        bail!("a raw datagram holds at most 65507 bytes");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    // Watchdog: never outlive the timeout by more than 5 s, whatever hangs.
    std::thread::spawn(move || {
        std::thread::sleep(timeout + Duration::from_secs(5));
        eprintln!("produce-load: watchdog fired, aborting");
        std::process::exit(3);
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.probe {
        return runtime.block_on(async {
            tokio::time::timeout(timeout, probe(&args))
                .await
                .map_err(|_| anyhow!("no answer within {timeout:?}"))?
        });
    }

    let t0 = Instant::now();
    let total = args.warmup + args.count;
    let lossy = match args.system {
        System::Raw => true,
        System::Mqtt => args.qos == 0,
        System::Ours => false,
    };
    let mut window_records = args.window * args.batch as u64;
    if args.system == System::Raw {
        let fit = (args.raw_window_bytes / (args.batch * args.record_size)).max(1);
        window_records = window_records.min((fit * args.batch) as u64);
    }
    let sh = Arc::new(Shared {
        t0,
        deadline: t0 + timeout,
        total,
        warmup: args.warmup,
        record_size: args.record_size,
        window_records,
        lossy,
        stall: Duration::from_millis(args.stall_ms),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        written_off: AtomicU64::new(0),
        stalls: AtomicU64::new(0),
        producer_done: AtomicBool::new(false),
        produce_start: AtomicU64::new(u64::MAX),
        produce_end: AtomicU64::new(0),
        progress: Notify::new(),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        notifications: AtomicU64::new(0),
        fetches: AtomicU64::new(0),
        empty_fetches: AtomicU64::new(0),
        retries: Mutex::new(RetryStats::default()),
        nudges: AtomicU64::new(0),
    });
    let c = runtime.block_on(async {
        match args.system {
            System::Ours => ours(&args, sh.clone()).await,
            System::Mqtt => mqtt(&args, sh.clone()).await,
            System::Raw => raw(&args, sh.clone()).await,
        }
    })?;
    let elapsed = t0.elapsed().as_secs_f64();
    let timed_out = sh.past_deadline() && c.received < total;

    let secs = if c.measured > 0 {
        c.last_arrival.saturating_sub(c.first_stamp) as f64 / 1e9
    } else {
        0.0
    };
    let rps = if secs > 0.0 {
        c.measured as f64 / secs
    } else {
        0.0
    };
    let mbps = rps * args.record_size as f64 / 1e6;
    // The producer's rate over all records (warm-up included); with a window that never
    // fills (a large --window), how fast producing alone goes.
    let produce_secs = sh
        .produce_end
        .load(Ordering::Acquire)
        .saturating_sub(sh.produce_start.load(Ordering::Acquire)) as f64
        / 1e9;
    let produce_rps = if produce_secs > 0.0 {
        sh.sent.load(Ordering::Acquire) as f64 / produce_secs
    } else {
        0.0
    };
    let l = c.lat.summary_us();
    let (mean_us, p50, p90, p99, p999, max_us) = (l.mean, l.p50, l.p90, l.p99, l.p999, l.max);
    let lost = args.count.saturating_sub(c.measured);
    let msg_bytes = match args.system {
        System::Ours => produce_body_bytes(&args),
        System::Mqtt | System::Raw => args.batch * args.record_size,
    };
    let errors = sh.errors.load(Ordering::Relaxed);
    let first_error = sh.first_error.lock().clone().unwrap_or_default();
    let stalls = sh.stalls.load(Ordering::Relaxed);
    let (notifications, fetches, empty_fetches) = (
        sh.notifications.load(Ordering::Relaxed),
        sh.fetches.load(Ordering::Relaxed),
        sh.empty_fetches.load(Ordering::Relaxed),
    );
    let qos = if args.system == System::Mqtt {
        args.qos.to_string()
    } else {
        "null".into()
    };
    // ours: acks, replication factor and the producer's retries by cause.
    let r = *sh.retries.lock();
    let nudges = sh.nudges.load(Ordering::Relaxed);
    let retries = r.not_leader + r.unavailable + r.no_leader + r.no_answer + r.leader_moved;
    let retry_causes = format!(
        "not_leader {} unavailable {} no_leader {} no_answer {} leader_moved {}",
        r.not_leader, r.unavailable, r.no_leader, r.no_answer, r.leader_moved
    );
    let (acks, rf) = if args.system == System::Ours {
        (
            json_str(args.acks.name()),
            if args.fresh_topic {
                args.replication_factor.to_string()
            } else {
                "null".into()
            },
        )
    } else {
        ("null".into(), "null".into())
    };

    if args.json {
        println!(
            "{{\"label\":{},\"system\":\"{}\",\"target\":{},\"qos\":{qos},\"acks\":{acks},\
             \"replication_factor\":{rf},\"batch\":{},\
             \"record_size\":{},\"msg_bytes\":{msg_bytes},\"in_flight\":{},\"window\":{},\"window_records\":{window_records},\
             \"warmup\":{},\"count\":{},\"measured\":{},\"lost\":{lost},\"dups\":{},\
             \"foreign\":{},\"stalls\":{stalls},\"errors\":{errors},\"first_error\":{},\
             \"retries\":{retries},\"retry_causes\":{},\"nudges\":{nudges},\
             \"timed_out\":{timed_out},\"notifications\":{notifications},\
             \"fetches\":{fetches},\"empty_fetches\":{empty_fetches},\"secs\":{secs:.4},\"elapsed_s\":{elapsed:.3},\
             \"rps\":{rps:.1},\"mbps\":{mbps:.3},\"produce_rps\":{produce_rps:.1},\"lat_mean_us\":{mean_us:.1},\
             \"lat_p50_us\":{p50:.1},\"lat_p90_us\":{p90:.1},\"lat_p99_us\":{p99:.1},\
             \"lat_p999_us\":{p999:.1},\"lat_max_us\":{max_us:.1}}}",
            json_str(&args.label),
            args.system.name(),
            json_str(&args.target),
            args.batch,
            args.record_size,
            args.in_flight,
            args.window,
            args.warmup,
            args.count,
            c.measured,
            c.dups,
            c.foreign,
            json_str(&first_error),
            json_str(&retry_causes),
        );
    } else {
        let qos_text = match args.system {
            System::Mqtt => format!(" qos={}", args.qos),
            System::Ours if args.fresh_topic => {
                format!(" acks={} rf={}", args.acks.name(), args.replication_factor)
            }
            System::Ours => format!(" acks={}", args.acks.name()),
            System::Raw => String::new(),
        };
        println!(
            "{} -> {}{qos_text}  batch={} ({msg_bytes} B/message) record={} B in-flight={} \
             window={} warmup={} count={}",
            args.system.name(),
            args.target,
            args.batch,
            args.record_size,
            args.in_flight,
            args.window,
            args.warmup,
            args.count
        );
        println!(
            "  consumed {} measured records in {secs:.3}s: {rps:.0} records/s, {mbps:.2} MB/s \
             (producer side: {produce_rps:.0} records/s)",
            c.measured
        );
        println!(
            "  produce-to-consume us: mean {mean_us:.1}  p50 {p50:.1}  p90 {p90:.1}  \
             p99 {p99:.1}  p99.9 {p999:.1}  max {max_us:.1}"
        );
        println!(
            "  lost {lost}  dups {}  foreign {}  stalls {stalls}  errors {errors}{}{}",
            c.dups,
            c.foreign,
            if first_error.is_empty() {
                String::new()
            } else {
                format!(" (first: {first_error})")
            },
            if timed_out { "  TIMED OUT" } else { "" }
        );
        if retries > 0 {
            println!("  producer retries {retries} ({retry_causes})");
        }
        if nudges > 0 {
            println!("  brokers nudged {nudges} time(s) to re-read their assignment");
        }
    }
    if c.measured == 0 {
        eprintln!("produce-load: no measured record was consumed");
        std::process::exit(1);
    }
    Ok(())
}
