//! An idempotent acks=all producer running beside a test's faults, and the check of a
//! partition's log against what it had acknowledged.

use pehra_broker::client::{records_from, ClusterClient};
use pehra_shared::wire::{Acks, Record};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the producer has had acknowledged: (sequence, offset, when).
#[derive(Default)]
pub struct Acked {
    /// (sequence, offset, when acknowledged), in order.
    pub records: Vec<(u32, u64, Instant)>,
    /// Why a send failed (it was sent again).
    pub errors: Vec<String>,
}

/// An idempotent producer sending one record per batch with acks=all, one batch at a
/// time, until told to stop.
pub struct Producer {
    acked: Arc<Mutex<Acked>>,
    count: watch::Receiver<usize>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Arc<ClusterClient>>,
}

impl Producer {
    /// Starts producing to partition 0 of `topic`.
    pub fn start(client: Arc<ClusterClient>, topic: &'static str) -> Producer {
        let acked = Arc::new(Mutex::new(Acked::default()));
        let (count_tx, count) = watch::channel(0usize);
        let (stop, mut stopped) = watch::channel(false);
        let producer_id = rand_u64();
        let task = {
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut seq = 0u32;
                while !*stopped.borrow_and_update() {
                    let record = Record {
                        key: None,
                        value: format!("s{seq}").into_bytes(),
                        timestamp_ms: 0,
                        headers: Vec::new(),
                    };
                    let result = client
                        .produce(topic, 0, &[record], Acks::All, Some((producer_id, seq)))
                        .await;
                    let mut a = acked.lock().unwrap();
                    match result {
                        Ok(Some(r)) => {
                            a.records.push((seq, r.base_offset, Instant::now()));
                            seq += 1;
                            count_tx.send_replace(a.records.len());
                        }
                        Ok(None) => unreachable!("acks=all answers"),
                        Err(e) => a.errors.push(format!("seq {seq}: {e}")), // sent again
                    }
                }
                client
            })
        };
        Producer {
            acked,
            count,
            stop,
            task,
        }
    }

    /// Waits (bounded) until `n` more records are acknowledged; returns the time of the
    /// first of them.
    pub async fn wait_for_more(&mut self, n: usize) -> Instant {
        let start = *self.count.borrow_and_update();
        let target = start + n;
        tokio::time::timeout(
            Duration::from_secs(40),
            self.count.wait_for(|c| *c >= target),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "producing stalled at {} acknowledged records; errors: {:?}",
                start,
                self.acked.lock().unwrap().errors
            )
        })
        .unwrap();
        self.acked.lock().unwrap().records[start].2
    }

    /// Stops producing; returns what was acknowledged, and the client.
    pub async fn finish(self) -> (Acked, Arc<ClusterClient>) {
        self.stop.send_replace(true);
        let client = tokio::time::timeout(Duration::from_secs(40), self.task)
            .await
            .expect("producer stops")
            .unwrap();
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        (acked, client)
    }
}

/// A random number (a producer id).
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// Reads the whole partition from the current leader and checks the invariants: the
/// acknowledged records are all there, at their acknowledged offsets, in sequence
/// order, and no sequence appears twice.
pub async fn check_log(client: &ClusterClient, topic: &str, acked: &Acked) {
    let last_acked = acked.records.last().map_or(0, |r| r.1 + 1);
    let mut offset = 0;
    let mut seen: Vec<(u64, u32)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client.fetch(topic, 0, offset, 64 * 1024).await.unwrap();
        for (o, record) in records_from(&response, offset).unwrap() {
            let value = String::from_utf8(record.value).unwrap();
            let seq: u32 = value.strip_prefix('s').unwrap().parse().unwrap();
            seen.push((o, seq));
            offset = o + 1;
        }
        if offset >= response.high_watermark && offset >= last_acked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log stays short of the acknowledged offset {last_acked}: read to {offset}, \
             high watermark {}",
            response.high_watermark
        );
    }
    for pair in seen.windows(2) {
        assert!(
            pair[1].1 > pair[0].1,
            "sequences out of order or repeated: {pair:?} (offset, seq)"
        );
    }
    for (seq, acked_offset, _) in &acked.records {
        assert!(
            seen.contains(&(*acked_offset, *seq)),
            "acknowledged record s{seq} at offset {acked_offset} is missing"
        );
    }
}
