//! One partition replica on this broker, as the server drives it: the sans-IO
//! [`PartitionReplica`] (every replication decision) plus what only the driver holds
//! (requests parked during a warm handover), and the replica clock.

use crate::log::PartitionLog;
use crate::replica::{Action, PartitionReplica, ProduceAnswer, Refusal};
use pehra_shared::api::{cbor_response, error_response};
use pehra_shared::coap::{Code, Response};
use pehra_shared::driver::Responder;
use tokio::time::Instant;

pub(crate) use crate::replica::join;

/// A partition's name: topic and number.
pub(crate) type PartitionKey = (String, u32);

/// A partition's name as borrowed parts, to look a [`PartitionKey`] up without making a
/// `String` of the topic (every produce and fetch looks its partition up):
/// `map.get(&(topic, n) as &dyn PartitionName)`. Ordered as the owned key is.
pub(crate) trait PartitionName {
    /// The topic.
    fn topic(&self) -> &str;
    /// The partition number.
    fn number(&self) -> u32;
}

impl PartitionName for PartitionKey {
    fn topic(&self) -> &str {
        &self.0
    }
    fn number(&self) -> u32 {
        self.1
    }
}

impl PartitionName for (&str, u32) {
    fn topic(&self) -> &str {
        self.0
    }
    fn number(&self) -> u32 {
        self.1
    }
}

impl<'a> std::borrow::Borrow<dyn PartitionName + 'a> for PartitionKey {
    fn borrow(&self) -> &(dyn PartitionName + 'a) {
        self
    }
}

impl PartialEq for dyn PartitionName + '_ {
    fn eq(&self, other: &Self) -> bool {
        (self.topic(), self.number()) == (other.topic(), other.number())
    }
}

impl Eq for dyn PartitionName + '_ {}

impl PartialOrd for dyn PartitionName + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn PartitionName + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.topic(), self.number()).cmp(&(other.topic(), other.number()))
    }
}

/// The replica as the server holds it: answers go to [`Responder`]s.
pub(crate) type Replica = PartitionReplica<PartitionLog, Responder>;

/// One partition this broker holds a replica of.
pub(crate) struct Partition {
    /// The replica's state machine (with its log).
    pub replica: Replica,
    /// A warm handover of this partition's leadership: its side on this broker.
    pub handover: HandoverSide,
}

impl Partition {
    /// What the replica asked for since the last call, to run with [`run_actions`]
    /// once the lock is released.
    pub fn take_actions(&mut self) -> Vec<Action<Responder>> {
        std::iter::from_fn(|| self.replica.poll_action()).collect()
    }
}

/// The CoAP answer to a produce.
pub(crate) fn produce_response(answer: ProduceAnswer) -> Response {
    match answer {
        Ok(response) => cbor_response(Code::CHANGED, &response),
        Err(refusal) => refusal_response(&refusal),
    }
}

/// The CoAP error answer for a refusal.
pub(crate) fn refusal_response(refusal: &Refusal) -> Response {
    error_response(refusal.kind, &refusal.message)
}

/// The replica machine's clock: tokio's (so paused test time moves it), counted from the
/// first reading in this process.
pub(crate) fn replica_now() -> pehra_shared::Instant {
    replica_clock(Instant::now())
}

/// Tokio's time `at` on the replica machine's clock.
pub(crate) fn replica_clock(at: Instant) -> pehra_shared::Instant {
    let base = *CLOCK_BASE.get_or_init(Instant::now);
    pehra_shared::Instant::from_micros(at.saturating_duration_since(base).as_micros() as u64)
}

/// A time of the replica machine's clock as tokio's.
pub(crate) fn replica_instant(at: pehra_shared::Instant) -> Instant {
    let base = *CLOCK_BASE.get_or_init(Instant::now);
    base + std::time::Duration::from_micros(at.as_micros())
}

static CLOCK_BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// This broker's part in a warm handover of the partition (see `server::handover`).
#[derive(Default)]
pub(crate) enum HandoverSide {
    /// None under way.
    #[default]
    None,
    /// It leads and hands over: produces are held, not appended, until
    /// the lease is transferred (they go to the new leader) or the handover is rolled
    /// back (they are appended here).
    Holding {
        /// The produces held, in arrival order.
        held: Vec<(pehra_shared::driver::Incoming, Responder)>,
    },
    /// It handed over to `to` at this time: late produces are forwarded there.
    HandedTo {
        /// The new leader.
        to: u32,
        /// When.
        at: Instant,
    },
    /// It is the candidate: a produce that arrives before it knows it leads waits for
    /// the new assignment instead of being refused.
    TakingOver {
        /// Since when.
        since: Instant,
        /// The produces waiting.
        held: Vec<(pehra_shared::driver::Incoming, Responder)>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_borrowed_partition_name_finds_what_the_owned_key_finds() {
        let topics = ["", "a", "a.b", "ab", "b", "readings", "readings-1"];
        let mut map = BTreeMap::new();
        for (i, topic) in topics.iter().enumerate() {
            for number in [0, 1, 7, u32::MAX] {
                if !(i + number as usize).is_multiple_of(3) {
                    map.insert((topic.to_string(), number), (i, number));
                }
            }
        }
        for topic in topics.iter().chain(&["a.", "c", "readings-"]) {
            for number in [0, 1, 2, 7, u32::MAX] {
                let owned = map.get(&(topic.to_string(), number));
                let borrowed = map.get(&(*topic, number) as &dyn PartitionName);
                assert_eq!(borrowed, owned, "{topic:?}/{number}");
            }
        }
    }
}
