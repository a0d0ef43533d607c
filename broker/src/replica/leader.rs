//! What a leader keeps about its followers and its waiting producers.

use pehra_shared::time::Instant;
use pehra_shared::wire::ProduceResponse;
use std::collections::BTreeMap;

/// What a leader keeps about its partition's followers and producers.
pub(crate) struct LeaderState<T> {
    /// The epoch it leads in.
    pub epoch: u32,
    /// Progress of each follower (by broker id), from its fetches.
    pub followers: BTreeMap<u32, FollowerProgress>,
    /// acks=all produces waiting for the high watermark.
    pub waiters: Vec<AckWaiter<T>>,
    /// An in-sync set change is being written to the zookeeper.
    pub isr_change_pending: bool,
    /// A follower being added to the in-sync set: counted for the high watermark from
    /// the moment the write is sent (Kafka's "maximal ISR", KIP-497). Once the znode
    /// lists it, the controller may elect it, so no record may be acknowledged that it
    /// lacks, even before this leader has seen the write succeed.
    pub adding: Option<u32>,
}

/// A follower's progress as its fetches show it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FollowerProgress {
    /// Its log end offset (the offset of its last fetch), once it has fetched in this epoch.
    pub log_end: Option<u64>,
    /// When it last fetched.
    pub last_fetch_at: Instant,
    /// The leader's log end offset when it last fetched.
    pub leader_end_at_last_fetch: u64,
    /// The last time it had everything the leader had (Kafka's lastCaughtUpTime).
    pub caught_up_at: Instant,
}

impl FollowerProgress {
    /// A follower not heard from yet in this term, counted as caught up at `now`.
    pub fn new(now: Instant, leader_end: u64) -> Self {
        FollowerProgress {
            log_end: None,
            last_fetch_at: now,
            leader_end_at_last_fetch: leader_end,
            caught_up_at: now,
        }
    }
}

/// An acks=all produce waiting until its records are on every in-sync replica.
pub(crate) struct AckWaiter<T> {
    /// Answer once the high watermark reaches this offset.
    pub until: u64,
    /// Give up (5.03) at this time.
    pub deadline: Instant,
    /// Where the answer goes (the driver's token).
    pub token: T,
    /// The answer.
    pub response: ProduceResponse,
}
