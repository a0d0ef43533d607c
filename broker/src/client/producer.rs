//! One producer for every sender of records (`pehra produce`, `pehra dev`, the device
//! gateway): the partitioner, the batcher, producer ids and sequence numbers, and a window
//! of up to [`MAX_IN_FLIGHT`] batches in flight per partition.
//!
//! Idempotence as in Kafka: a producer numbers each partition's records from 0 without
//! gaps and says so (`gapless` produce requests); the leader remembers the producer's
//! last [`PRODUCER_WINDOW`] batches, answers a retry of one of them with its first place
//! instead of storing it again, and refuses a batch that does not start where the last
//! stored one ended (`out_of_order_sequence`: a batch before it, in flight, is not stored
//! yet). The producer sends such a batch again as soon as the batch before it is
//! answered, so a partition's batches are stored in order and each once, with up to
//! five in flight. Leader changes, 5.03s and lost answers are retried by
//! [`ClusterClient::produce_request`].

use super::{partition_for_key, ClientError, ClusterClient};
use crate::log::PRODUCER_WINDOW;
use parking_lot::Mutex;
use pehra_shared::wire::{
    self, Acks, ErrorKind, ProduceRequest, ProduceResponse, Record, RecordBatch,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::{watch, Semaphore};

/// Most batches of one partition in flight at once: as many as a leader remembers per
/// producer, so a retry of any of them is recognised.
pub const MAX_IN_FLIGHT: usize = PRODUCER_WINDOW;

/// How often a batch refused as out of order is sent again after the batch before it
/// was answered (a leader change may race with it) before the producer gives up on it.
const OUT_OF_ORDER_RETRIES: u32 = 3;

/// Why one batch was not stored.
#[derive(Debug, Error)]
pub enum ProduceError {
    /// The topic does not exist.
    #[error("no such topic: {0}")]
    NoSuchTopic(String),
    /// The client failed to deliver the batch (after its retries).
    #[error("{topic}/{partition}: {source}")]
    Send {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// A batch before this one in the same partition failed, so this one was not sent
    /// (or not stored): storing it would leave a gap.
    #[error("{topic}/{partition}: not stored, an earlier batch to it failed")]
    EarlierBatchFailed {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// The leader kept refusing the batch as out of order after the batches before it
    /// were stored: it lost the producer's earlier batches (an acks=1 batch lost with
    /// its leader). The partition's later batches go under a new producer id.
    #[error("{topic}/{partition}: the leader refuses sequence {base_sequence} as out of order")]
    OutOfOrder {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The batch's first sequence number.
        base_sequence: u32,
    },
}

/// Picks a record's partition: by its key's hash ([`partition_for_key`]), round robin
/// (counting every record) without one.
#[derive(Debug, Default)]
pub struct Partitioner {
    next: u32,
}

impl Partitioner {
    /// The partition of the next record, among `partitions`.
    pub fn partition(&mut self, key: Option<&[u8]>, partitions: u32) -> u32 {
        let turn = self.next;
        self.next = self.next.wrapping_add(1);
        match key {
            Some(key) => partition_for_key(key, partitions),
            None => turn % partitions.max(1),
        }
    }
}

/// Groups records, each with its partition, into batches of at most `max_records`
/// (at least 1) per partition, keeping their order.
pub fn batches(
    records: impl IntoIterator<Item = (u32, Record)>,
    max_records: usize,
) -> BTreeMap<u32, Vec<Vec<Record>>> {
    let max = max_records.max(1);
    let mut out: BTreeMap<u32, Vec<Vec<Record>>> = BTreeMap::new();
    for (partition, record) in records {
        let batches = out.entry(partition).or_default();
        match batches.last_mut() {
            Some(open) if open.len() < max => open.push(record),
            _ => batches.push(vec![record]),
        }
    }
    out
}

/// A new producer id: random (from the standard library's randomly keyed hasher), with
/// the top bit clear (ids at and near `u64::MAX` are refused by the brokers).
fn new_producer_id() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        >> 1
}

/// A producer's numbering of its partitions' records: per partition a producer id and
/// the next sequence number, gapless from 0.
#[derive(Debug)]
pub struct Sequences {
    partitions: BTreeMap<u32, (u64, u32)>,
    new_id: fn() -> u64,
}

impl Default for Sequences {
    fn default() -> Self {
        Sequences::with_ids(new_producer_id)
    }
}

impl Sequences {
    /// Numbering with producer ids from `new_id`.
    pub fn with_ids(new_id: fn() -> u64) -> Self {
        Sequences {
            partitions: BTreeMap::new(),
            new_id,
        }
    }

    /// The producer id and base sequence of the next batch of `count` records to
    /// `partition`.
    pub fn assign(&mut self, partition: u32, count: u32) -> (u64, u32) {
        let new_id = self.new_id;
        let (id, next) = self
            .partitions
            .entry(partition)
            .or_insert_with(|| (new_id(), 0));
        let base = *next;
        *next = next.wrapping_add(count);
        (*id, base)
    }

    /// Forgets a partition's numbering after a batch to it failed for good (the leader
    /// may have stored it or not): later batches go under a new producer id, from 0.
    pub fn reset(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }
}

/// What became of one batch.
#[derive(Debug)]
pub struct Sent {
    /// Its partition.
    pub partition: u32,
    /// Its records.
    pub records: usize,
    /// Where it was stored (`None` with acks 0), or why not.
    pub result: Result<Option<ProduceResponse>, ProduceError>,
}

/// A producer to one topic.
#[derive(Debug)]
pub struct Producer {
    topic: String,
    acks: Acks,
    max_batch_records: usize,
    partitioner: Mutex<Partitioner>,
    sequences: Mutex<Sequences>,
}

impl Producer {
    /// A producer to `topic` answered at `acks`, batches of at most `max_batch_records`.
    pub fn new(topic: impl Into<String>, acks: Acks, max_batch_records: usize) -> Self {
        Producer {
            topic: topic.into(),
            acks,
            max_batch_records: max_batch_records.max(1),
            partitioner: Mutex::default(),
            sequences: Mutex::default(),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends `records` (a partition picked for each by [`Partitioner`]), in batches per
    /// partition; partitions in parallel, a partition's batches in order with up to
    /// [`MAX_IN_FLIGHT`] in flight. Returns what became of each batch, by partition and
    /// in order.
    pub async fn send(
        &self,
        client: &Arc<ClusterClient>,
        records: Vec<Record>,
    ) -> Result<Vec<Sent>, ProduceError> {
        let partitions = self.partition_count(client).await?;
        let placed: Vec<(u32, Record)> = {
            let mut partitioner = self.partitioner.lock();
            records
                .into_iter()
                .map(|r| (partitioner.partition(r.key.as_deref(), partitions), r))
                .collect()
        };
        let mut lanes = Vec::new();
        for (partition, batches) in batches(placed, self.max_batch_records) {
            let requests = self.requests(partition, batches);
            let client = client.clone();
            let send = move |request: ProduceRequest| {
                let client = client.clone();
                async move { client.produce_request(&request).await }
            };
            lanes.push(tokio::spawn(send_in_order(send, requests)));
        }
        let mut sent = Vec::new();
        for lane in lanes {
            let results = lane.await.expect("a partition's sender does not panic");
            for (of, result) in results {
                let failed = matches!(
                    result,
                    Err(ProduceError::Send { .. } | ProduceError::OutOfOrder { .. })
                );
                if failed && of.gapless {
                    self.sequences.lock().reset(of.partition);
                }
                sent.push(Sent {
                    partition: of.partition,
                    records: of.records,
                    result,
                });
            }
        }
        Ok(sent)
    }

    /// Sends one batch numbered by its source, to the partition `key` picks among
    /// `partitions`: a device's readings with its own producer id and sequence number,
    /// which may skip numbers (so not gapless; a repeat is still stored once).
    pub async fn send_numbered(
        &self,
        client: &ClusterClient,
        partitions: u32,
        key: &[u8],
        records: Vec<Record>,
        numbered: Option<(u64, u32)>,
    ) -> Result<Option<ProduceResponse>, ProduceError> {
        let partition = self.partitioner.lock().partition(Some(key), partitions);
        let request = ProduceRequest {
            topic: self.topic.clone(),
            partition,
            acks: self.acks,
            producer_id: numbered.map(|n| n.0),
            base_sequence: numbered.map(|n| n.1),
            gapless: false,
            leader_epoch: None,
            if_log_end: None,
            batch: wire::encode(&RecordBatch { records }).expect("encodes"),
        };
        client
            .produce_request(&request)
            .await
            .map_err(|source| ProduceError::Send {
                topic: self.topic.clone(),
                partition,
                source,
            })
    }

    /// The topic's partition count, from the metadata (reloaded once if the topic is
    /// not in it).
    async fn partition_count(&self, client: &ClusterClient) -> Result<u32, ProduceError> {
        let known = client
            .metadata()
            .topics
            .get(&self.topic)
            .map(|t| t.config.partitions);
        let partitions = match known {
            Some(p) => Some(p),
            None => client
                .refresh()
                .await
                .ok()
                .and_then(|m| m.topics.get(&self.topic).map(|t| t.config.partitions)),
        };
        partitions.ok_or_else(|| ProduceError::NoSuchTopic(self.topic.clone()))
    }

    /// The produce requests of a partition's batches, numbered (gapless when the
    /// producer hears back; acks 0 batches keep their numbers, for duplicates only).
    fn requests(&self, partition: u32, batches: Vec<Vec<Record>>) -> Vec<Numbered> {
        let mut sequences = self.sequences.lock();
        batches
            .into_iter()
            .map(|records| {
                let count = records.len();
                let (id, base) = sequences.assign(partition, count as u32);
                Numbered {
                    request: ProduceRequest {
                        topic: self.topic.clone(),
                        partition,
                        acks: self.acks,
                        producer_id: Some(id),
                        base_sequence: Some(base),
                        gapless: self.acks != Acks::None,
                        leader_epoch: None,
                        if_log_end: None,
                        batch: wire::encode(&RecordBatch { records }).expect("encodes"),
                    },
                    records: count,
                }
            })
            .collect()
    }
}

/// A numbered produce request and its record count.
#[derive(Debug, Clone)]
pub struct Numbered {
    /// The request.
    pub request: ProduceRequest,
    /// Records in its batch.
    pub records: usize,
}

/// What [`send_in_order`] reports per batch: which one, and what became of it.
#[derive(Debug, Clone)]
pub struct BatchOf {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Records in it.
    pub records: usize,
    /// Whether it was sent gapless.
    pub gapless: bool,
}

/// Sends one partition's batches in order with up to [`MAX_IN_FLIGHT`] in flight, through
/// `send` (which retries what the client retries). A batch refused as out of order is
/// sent again once the batch before it is answered; once a batch fails, the later ones
/// are not sent (or, in flight, not sent again). Returns each batch's outcome, in order.
pub async fn send_in_order<S, F>(
    send: S,
    batches: Vec<Numbered>,
) -> Vec<(BatchOf, Result<Option<ProduceResponse>, ProduceError>)>
where
    S: Fn(ProduceRequest) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Option<ProduceResponse>, ClientError>> + Send + 'static,
{
    let window = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // The outcome of the batch before the next one: None while it is in flight.
    let (_first, mut before_rx) = watch::channel(Some(true));
    let mut tasks = Vec::new();
    let mut out = Vec::new();
    let mut failed = false;
    for Numbered { request, records } in batches {
        let of = BatchOf {
            topic: request.topic.clone(),
            partition: request.partition,
            records,
            gapless: request.gapless,
        };
        let failed_before = failed || *before_rx.borrow() == Some(false);
        if failed_before {
            failed = true;
            tasks.push((of, None));
            continue;
        }
        let permit = window.clone().acquire_owned().await.expect("open");
        let (done_tx, done_rx) = watch::channel(None);
        let mut previous = std::mem::replace(&mut before_rx, done_rx);
        let send = send.clone();
        tasks.push((
            of,
            Some(tokio::spawn(async move {
                let result = send_one(send, request, previous.clone()).await;
                // The window counts from the oldest unanswered batch, as the leader's
                // idempotence window counts its last stored ones: a batch keeps its place
                // until every earlier one is answered, so a late repeat of an earlier
                // batch still finds it among the leader's last MAX_IN_FLIGHT.
                let _ = previous.wait_for(Option::is_some).await;
                let _ = done_tx.send(Some(result.is_ok()));
                drop(permit);
                result
            })),
        ));
    }
    for (of, task) in tasks {
        let result = match task {
            Some(task) => task.await.expect("a batch's sender does not panic"),
            None => Err(ProduceError::EarlierBatchFailed {
                topic: of.topic.clone(),
                partition: of.partition,
            }),
        };
        out.push((of, result));
    }
    out
}

/// Sends one batch, again after the batch before it is answered if the leader refuses it
/// as out of order.
async fn send_one<S, F>(
    send: S,
    request: ProduceRequest,
    mut previous: watch::Receiver<Option<bool>>,
) -> Result<Option<ProduceResponse>, ProduceError>
where
    S: Fn(ProduceRequest) -> F,
    F: Future<Output = Result<Option<ProduceResponse>, ClientError>>,
{
    let (topic, partition) = (request.topic.clone(), request.partition);
    let mut refused_after_previous = 0;
    loop {
        let previous_done = previous.borrow().is_some();
        match send(request.clone()).await {
            Err(ClientError::Broker {
                kind: ErrorKind::OutOfOrderSequence,
                ..
            }) => {
                if previous_done {
                    refused_after_previous += 1;
                    if refused_after_previous > OUT_OF_ORDER_RETRIES {
                        return Err(ProduceError::OutOfOrder {
                            topic,
                            partition,
                            base_sequence: request.base_sequence.unwrap_or_default(),
                        });
                    }
                }
                let outcome = previous.wait_for(Option::is_some).await.map(|o| *o);
                if !matches!(outcome, Ok(Some(true))) {
                    return Err(ProduceError::EarlierBatchFailed { topic, partition });
                }
            }
            Err(source) => {
                return Err(ProduceError::Send {
                    topic,
                    partition,
                    source,
                })
            }
            Ok(answer) => return Ok(answer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: Option<&str>, value: &str) -> Record {
        Record {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.as_bytes().to_vec(),
            timestamp_ms: 0,
            headers: Vec::new(),
        }
    }

    #[test]
    fn keys_pick_their_partition_and_the_rest_go_round_robin() {
        let mut p = Partitioner::default();
        let picks: Vec<u32> = (0..6).map(|_| p.partition(None, 3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let keyed = p.partition(Some(b"sensor-1"), 3);
        assert_eq!(keyed, partition_for_key(b"sensor-1", 3));
        // A keyed record takes a turn too (as `pehra produce` counted its lines).
        assert_eq!(p.partition(None, 3), 1);
        assert_eq!(p.partition(None, 0), 0, "no division by zero");
    }

    #[test]
    fn batches_keep_order_per_partition_and_their_size_limit() {
        let records = (0..7).map(|i| (i % 2, record(None, &format!("r{i}"))));
        let out = batches(records, 2);
        let values = |p: u32| -> Vec<Vec<String>> {
            out[&p]
                .iter()
                .map(|b| {
                    b.iter()
                        .map(|r| String::from_utf8(r.value.clone()).unwrap())
                        .collect()
                })
                .collect()
        };
        assert_eq!(values(0), [vec!["r0", "r2"], vec!["r4", "r6"]]);
        assert_eq!(values(1), [vec!["r1", "r3"], vec!["r5"]]);
        assert_eq!(batches(vec![(0, record(None, "x"))], 0)[&0].len(), 1);
    }

    #[test]
    fn sequences_count_records_per_partition_and_restart_under_a_new_id() {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(10);
        fn ids() -> u64 {
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        }
        let mut s = Sequences::with_ids(ids);
        assert_eq!(s.assign(0, 3), (10, 0));
        assert_eq!(s.assign(0, 2), (10, 3));
        assert_eq!(s.assign(1, 4), (11, 0));
        assert_eq!(s.assign(0, 1), (10, 5));
        s.reset(0);
        assert_eq!(s.assign(0, 1), (12, 0));
        assert_eq!(s.assign(1, 1), (11, 4));
    }

    #[test]
    fn new_producer_ids_are_not_reserved() {
        assert!((0..100).all(|_| new_producer_id() <= u64::MAX >> 1));
    }

    /// A leader as the broker's sequence check sees one producer: stores a batch only if
    /// it starts where the last one ended, answers a repeat among its last
    /// [`MAX_IN_FLIGHT`] batches with its place and refuses an older one.
    #[derive(Default)]
    struct FakeLeader {
        stored: Vec<(u32, u32)>,
        refused: u32,
        stale: u32,
    }

    impl FakeLeader {
        fn produce(
            &mut self,
            request: &ProduceRequest,
            count: u32,
        ) -> Result<ProduceResponse, ClientError> {
            let base = request.base_sequence.unwrap();
            let place = |i: usize, stored: &[(u32, u32)]| ProduceResponse {
                base_offset: stored[..i].iter().map(|s| u64::from(s.1)).sum(),
                record_count: stored[i].1,
                leader_epoch: 0,
            };
            if let Some(i) = self.stored.iter().position(|s| s.0 == base) {
                if i + MAX_IN_FLIGHT < self.stored.len() {
                    // Older than its last MAX_IN_FLIGHT batches: the broker no longer
                    // knows its place and refuses it as a stale duplicate.
                    self.stale += 1;
                    return Err(ClientError::Broker {
                        kind: ErrorKind::Malformed,
                        message: "a stale duplicate".into(),
                    });
                }
                return Ok(place(i, &self.stored));
            }
            let next = self.stored.last().map_or(0, |s| s.0 + s.1);
            if base != next {
                self.refused += 1;
                return Err(ClientError::Broker {
                    kind: ErrorKind::OutOfOrderSequence,
                    message: "out of order".into(),
                });
            }
            self.stored.push((base, count));
            Ok(place(self.stored.len() - 1, &self.stored))
        }
    }

    fn numbered(seqs: &mut Sequences, counts: &[u32]) -> Vec<Numbered> {
        counts
            .iter()
            .map(|&count| {
                let (id, base) = seqs.assign(0, count);
                let records = (0..count)
                    .map(|i| record(None, &format!("{}", base + i)))
                    .collect();
                Numbered {
                    request: ProduceRequest {
                        topic: "t".into(),
                        partition: 0,
                        acks: Acks::All,
                        producer_id: Some(id),
                        base_sequence: Some(base),
                        gapless: true,
                        leader_epoch: None,
                        if_log_end: None,
                        batch: wire::encode(&RecordBatch { records }).unwrap(),
                    },
                    records: count as usize,
                }
            })
            .collect()
    }

    fn count_of(request: &ProduceRequest) -> u32 {
        wire::decode::<RecordBatch>(&request.batch)
            .unwrap()
            .records
            .len() as u32
    }

    #[tokio::test]
    async fn a_batch_refused_out_of_order_is_sent_again_after_the_one_before() {
        // The first batch is held back (a lost datagram the client retransmits), so the
        // ones pipelined behind it reach the leader first and are refused.
        let leader = Arc::new(Mutex::new(FakeLeader::default()));
        let (release, released) = watch::channel(false);
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let send = {
            let (leader, attempts) = (leader.clone(), attempts.clone());
            move |request: ProduceRequest| {
                let (leader, attempts, mut released) =
                    (leader.clone(), attempts.clone(), released.clone());
                async move {
                    let base = request.base_sequence.unwrap();
                    attempts.lock().push(base);
                    if base == 0 {
                        released.wait_for(|r| *r).await.unwrap();
                    }
                    let answer = leader.lock().produce(&request, count_of(&request));
                    answer.map(Some)
                }
            }
        };
        let mut seqs = Sequences::with_ids(|| 7);
        let batches = numbered(&mut seqs, &[2, 1, 3, 2, 1, 2]);
        let sending = tokio::spawn(send_in_order(send, batches));
        // Batches 2..5 go out while the first is held (5 in flight): wait for them.
        for _ in 0..100_000 {
            if attempts.lock().len() >= MAX_IN_FLIGHT {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            attempts.lock().len(),
            MAX_IN_FLIGHT,
            "five batches in flight, the sixth waits for a free place"
        );
        assert_eq!(leader.lock().stored, []);
        release.send(true).unwrap();
        let results = sending.await.unwrap();
        let places: Vec<(u64, u32)> = results
            .iter()
            .map(|(_, r)| {
                let p = r.as_ref().unwrap().as_ref().unwrap();
                (p.base_offset, p.record_count)
            })
            .collect();
        assert_eq!(places, [(0, 2), (2, 1), (3, 3), (6, 2), (8, 1), (9, 2)]);
        let leader = leader.lock();
        assert_eq!(
            leader.stored,
            [(0, 2), (2, 1), (3, 3), (6, 2), (8, 1), (9, 2)]
        );
        assert!(
            leader.refused >= 4,
            "the pipelined batches were refused first"
        );
    }

    #[tokio::test]
    async fn a_late_repeat_of_a_stored_batch_still_finds_its_place() {
        // The second batch is stored at once but its answer is lost, and the client's
        // repeat is held back; the batches behind it are answered meanwhile. Only four of
        // them may go out before it is answered, or its repeat would reach a leader that
        // no longer remembers it (found by tests/producer.rs under load).
        let leader = Arc::new(Mutex::new(FakeLeader::default()));
        let (release, released) = watch::channel(false);
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let send = {
            let (leader, attempts) = (leader.clone(), attempts.clone());
            move |request: ProduceRequest| {
                let (leader, attempts, mut released) =
                    (leader.clone(), attempts.clone(), released.clone());
                async move {
                    let base = request.base_sequence.unwrap();
                    attempts.lock().push(base);
                    let first = leader.lock().produce(&request, count_of(&request));
                    if base != 1 {
                        return first.map(Some);
                    }
                    released.wait_for(|r| *r).await.unwrap();
                    let repeat = leader.lock().produce(&request, count_of(&request));
                    repeat.map(Some)
                }
            }
        };
        let mut seqs = Sequences::with_ids(|| 7);
        let batches = numbered(&mut seqs, &[1, 1, 1, 1, 1, 1, 1, 1]);
        let sending = tokio::spawn(send_in_order(send, batches));
        for _ in 0..100_000 {
            if attempts.lock().len() >= 2 + MAX_IN_FLIGHT - 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        // Give every runnable task its turn before looking at what went out.
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *attempts.lock(),
            [0, 1, 2, 3, 4, 5],
            "the batch held unanswered keeps the window from moving past it"
        );
        release.send(true).unwrap();
        let results = sending.await.unwrap();
        for (i, (_, result)) in results.iter().enumerate() {
            let place = result.as_ref().unwrap().as_ref().unwrap();
            assert_eq!(place.base_offset, i as u64);
        }
        let leader = leader.lock();
        assert_eq!(leader.stored.len(), 8);
        assert_eq!(leader.stale, 0);
    }

    #[tokio::test]
    async fn after_a_failed_batch_the_later_ones_are_not_stored() {
        let leader = Arc::new(Mutex::new(FakeLeader::default()));
        let send = {
            let leader = leader.clone();
            move |request: ProduceRequest| {
                let leader = leader.clone();
                async move {
                    if request.base_sequence == Some(2) {
                        return Err(ClientError::NoLeader("gone".into()));
                    }
                    let answer = leader.lock().produce(&request, count_of(&request));
                    answer.map(Some)
                }
            }
        };
        let mut seqs = Sequences::with_ids(|| 7);
        let results = send_in_order(send, numbered(&mut seqs, &[2, 1, 1, 1])).await;
        assert!(results[0].1.is_ok());
        assert!(matches!(results[1].1, Err(ProduceError::Send { .. })));
        assert!(matches!(
            results[2].1,
            Err(ProduceError::EarlierBatchFailed { .. })
        ));
        assert!(matches!(
            results[3].1,
            Err(ProduceError::EarlierBatchFailed { .. })
        ));
        assert_eq!(leader.lock().stored, [(0, 2)]);
    }

    #[tokio::test]
    async fn a_leader_that_lost_the_earlier_batches_is_given_up_on() {
        let send = |_request: ProduceRequest| async {
            Err::<Option<ProduceResponse>, _>(ClientError::Broker {
                kind: ErrorKind::OutOfOrderSequence,
                message: "out of order".into(),
            })
        };
        let mut seqs = Sequences::with_ids(|| 7);
        let _ = seqs.assign(0, 5);
        let results = send_in_order(send, numbered(&mut seqs, &[1])).await;
        assert!(matches!(
            results[0].1,
            Err(ProduceError::OutOfOrder {
                base_sequence: 5,
                ..
            })
        ));
    }
}
