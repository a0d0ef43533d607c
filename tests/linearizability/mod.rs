//! A linearizability check of the zookeeper: concurrent clients read and (conditionally)
//! write a few znodes, every operation's call and return time and result is recorded,
//! and each znode's history is checked against a sequential register with versions by
//! the Wing–Gong algorithm (with Lowe's memoisation of visited states).

use pehra_shared::coap::Config;
use pehra_shared::wire::ErrorKind;
use pehra_zookeeper::{Client, CreateMode, ZkError};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;

/// What a client did to one znode (a register holding `value` at `version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// get_data: saw this value at this version.
    Read { value: u64, version: u32 },
    /// set_data without a version: the znode went to `new_version`.
    Write { value: u64, new_version: u32 },
    /// set_data at `expected`: succeeded (to expected + 1) or failed seeing `actual`.
    Cas {
        value: u64,
        expected: u32,
        outcome: Result<u32, u32>,
    },
    /// set_data (at `expected`, if given) that failed without an answer (the member
    /// died, or the client gave up): it may have taken effect, once, or not at all. Its
    /// op's `ret` is [`never_returned`].
    Lost { value: u64, expected: Option<u32> },
}

/// The return time of an operation that never returned: after everything else, so it
/// may be ordered anywhere after its call.
pub fn never_returned(call: Instant) -> Instant {
    call + std::time::Duration::from_secs(365 * 24 * 3600)
}

/// One completed operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// Which client (for reading a failing history).
    #[allow(dead_code)]
    pub client: usize,
    pub call: Instant,
    pub ret: Instant,
    pub action: Action,
}

/// Runs `clients` clients, each doing `ops_per_client` random operations on `keys`
/// znodes, and returns each znode's history.
pub async fn run_workload(
    addr: SocketAddr,
    clients: usize,
    keys: usize,
    ops_per_client: usize,
) -> BTreeMap<String, Vec<Op>> {
    let setup = Client::without_session(addr, Config::default())
        .await
        .unwrap();
    for k in 0..keys {
        setup
            .create(&format!("/lin{k}"), b"0", CreateMode::Persistent)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for client in 0..clients {
        tasks.push(tokio::spawn(async move {
            let c = Client::without_session(addr, Config::default())
                .await
                .unwrap();
            let mut rng = 0x2545_f491_4f6c_dd1du64 ^ (client as u64 + 1).wrapping_mul(0x9e37_79b9);
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut ops = Vec::new();
            let mut last_seen_version = 0u32;
            for i in 0..ops_per_client {
                let key = format!("/lin{}", next() as usize % keys);
                let value = (client as u64 + 1) * 1_000_000 + i as u64;
                let call = Instant::now();
                let action = match next() % 3 {
                    0 => {
                        let (data, stat) = c.get_data(&key).await.unwrap();
                        last_seen_version = stat.version;
                        Action::Read {
                            value: parse(&data),
                            version: stat.version,
                        }
                    }
                    1 => {
                        let stat = c
                            .set_data(&key, value.to_string().as_bytes(), None)
                            .await
                            .unwrap();
                        Action::Write {
                            value,
                            new_version: stat.version,
                        }
                    }
                    _ => {
                        // A guess that is sometimes right, sometimes stale.
                        let expected = last_seen_version + (next() % 2) as u32;
                        let outcome = match c
                            .set_data(&key, value.to_string().as_bytes(), Some(expected))
                            .await
                        {
                            Ok(stat) => Ok(stat.version),
                            Err(ZkError::Server {
                                kind: ErrorKind::VersionMismatch,
                                message,
                            }) => Err(actual_version(&message)),
                            Err(e) => panic!("unexpected error: {e}"),
                        };
                        Action::Cas {
                            value,
                            expected,
                            outcome,
                        }
                    }
                };
                ops.push((
                    key,
                    Op {
                        client,
                        call,
                        ret: Instant::now(),
                        action,
                    },
                ));
            }
            ops
        }));
    }
    let mut history: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for t in tasks {
        for (key, op) in t.await.unwrap() {
            history.entry(key).or_default().push(op);
        }
    }
    history
}

/// A register's value.
pub fn parse(data: &[u8]) -> u64 {
    std::str::from_utf8(data).unwrap().parse().unwrap()
}

/// "version mismatch: /lin0 is at 7" → 7.
pub fn actual_version(message: &str) -> u32 {
    message
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {message:?}"))
}

/// The sequential specification: the states the register `(value, version)` may be in
/// after `action` (none if the recorded result is impossible from that state; two for
/// a lost write: applied, or not).
fn step(state: (u64, u32), action: &Action) -> [Option<(u64, u32)>; 2] {
    let (value, version) = state;
    let one = match action {
        Action::Read {
            value: v,
            version: ver,
        } => (*v == value && *ver == version).then_some(state),
        Action::Write {
            value: v,
            new_version,
        } => (*new_version == version + 1).then_some((*v, version + 1)),
        Action::Cas {
            value: v,
            expected,
            outcome,
        } => match outcome {
            Ok(new_version) => {
                (*expected == version && *new_version == version + 1).then_some((*v, version + 1))
            }
            Err(actual) => (*expected != version && *actual == version).then_some(state),
        },
        Action::Lost { value: v, expected } => {
            let applies = expected.is_none_or(|e| e == version);
            return [applies.then_some((*v, version + 1)), Some(state)];
        }
    };
    [one, None]
}

/// Wing & Gong's search: is there an order of the operations, consistent with real time
/// (an op that returned before another was called comes first), in which every result
/// matches the sequential register? Memoises (set of linearized ops, state).
pub fn is_linearizable(ops: &[Op]) -> bool {
    assert!(
        ops.len() <= 128,
        "the checker's bitset holds 128 operations"
    );
    let mut seen = HashSet::new();
    search(ops, 0u128, (0, 0), &mut seen)
}

fn search(
    ops: &[Op],
    done: u128,
    state: (u64, u32),
    seen: &mut HashSet<(u128, (u64, u32))>,
) -> bool {
    if done.count_ones() as usize == ops.len() {
        return true;
    }
    if !seen.insert((done, state)) {
        return false;
    }
    let pending = |i: usize| done & (1u128 << i) == 0;
    // An op may go next only if no pending op returned before it was called.
    let earliest_return = (0..ops.len())
        .filter(|&i| pending(i))
        .map(|i| ops[i].ret)
        .min()
        .expect("some pending");
    for i in (0..ops.len()).filter(|&i| pending(i) && ops[i].call <= earliest_return) {
        for next in step(state, &ops[i].action).into_iter().flatten() {
            if search(ops, done | (1u128 << i), next, seen) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod checker_tests {
    use super::*;
    use std::time::Duration;

    fn op(call_ms: u64, ret_ms: u64, action: Action) -> Op {
        let t0 = Instant::now();
        Op {
            client: 0,
            call: t0 + Duration::from_millis(call_ms),
            ret: t0 + Duration::from_millis(ret_ms),
            action,
        }
    }

    #[test]
    fn the_checker_accepts_and_rejects_what_it_should() {
        // Sequential and correct.
        let ok = vec![
            op(
                0,
                1,
                Action::Write {
                    value: 5,
                    new_version: 1,
                },
            ),
            op(
                2,
                3,
                Action::Read {
                    value: 5,
                    version: 1,
                },
            ),
        ];
        assert!(is_linearizable(&ok));
        // A read after the write returned sees the old value: not linearizable.
        let stale = vec![
            op(
                0,
                1,
                Action::Write {
                    value: 5,
                    new_version: 1,
                },
            ),
            op(
                2,
                3,
                Action::Read {
                    value: 0,
                    version: 0,
                },
            ),
        ];
        assert!(!is_linearizable(&stale));
        // Overlapping: the read may come before the write.
        let overlap = vec![
            op(
                0,
                3,
                Action::Write {
                    value: 5,
                    new_version: 1,
                },
            ),
            op(
                1,
                2,
                Action::Read {
                    value: 0,
                    version: 0,
                },
            ),
        ];
        assert!(is_linearizable(&overlap));
        // Two CAS at the same version cannot both succeed.
        let double = vec![
            op(
                0,
                2,
                Action::Cas {
                    value: 1,
                    expected: 0,
                    outcome: Ok(1),
                },
            ),
            op(
                0,
                2,
                Action::Cas {
                    value: 2,
                    expected: 0,
                    outcome: Ok(1),
                },
            ),
        ];
        assert!(!is_linearizable(&double));
    }

    /// A lost write: never returned, so it may come anywhere after its call, and it
    /// happened once or not at all.
    fn lost(call_ms: u64, value: u64, expected: Option<u32>) -> Op {
        let t0 = Instant::now();
        let call = t0 + Duration::from_millis(call_ms);
        Op {
            client: 0,
            call,
            ret: never_returned(call),
            action: Action::Lost { value, expected },
        }
    }

    fn read(call_ms: u64, ret_ms: u64, value: u64, version: u32) -> Op {
        op(call_ms, ret_ms, Action::Read { value, version })
    }

    #[test]
    fn a_lost_write_may_have_happened_once_or_not_at_all() {
        // Seen by a later read: it happened.
        assert!(is_linearizable(&[lost(0, 7, None), read(5, 6, 7, 1)]));
        // Not seen: it did not (yet).
        assert!(is_linearizable(&[lost(0, 7, None), read(5, 6, 0, 0)]));
        // Seen, then unseen: a write cannot be undone.
        assert!(!is_linearizable(&[
            lost(0, 7, None),
            read(5, 6, 7, 1),
            read(7, 8, 0, 0)
        ]));
        // Applied twice (version 2 from one write): impossible.
        assert!(!is_linearizable(&[lost(0, 7, None), read(5, 6, 7, 2)]));
        // Not before its call.
        assert!(!is_linearizable(&[read(0, 1, 7, 1), lost(2, 7, None)]));
        // A lost compare-and-set at a version the register never had cannot apply.
        assert!(!is_linearizable(&[lost(0, 7, Some(3)), read(5, 6, 7, 1)]));
        assert!(is_linearizable(&[lost(0, 7, Some(0)), read(5, 6, 7, 1)]));
    }
}
