//! The recipes (election, lock, membership, barrier, config) against a real in-process
//! zookeeper on loopback, each test with its own data directory.
//!
//! No sleeps: every test waits for watch events or recipe results, each bounded by a
//! timeout.

use pehra_zookeeper::recipes::{
    Barrier, Candidate, ConfigValue, Election, Group, Lock, MembersWatch, RecipeError,
};
use pehra_zookeeper::{Client, ClientOptions, Server, ServerConfig, WatchEvent};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The session timeout of every client (the server's minimum): short, so that crashed
/// clients are noticed fast, yet three heartbeats long. Not shorter: at 500 ms a client
/// whose heartbeat task was starved for half a second on a loaded 2-core machine lost
/// its session, and with it its place in an election ("contender failed").
const SESSION: Duration = Duration::from_millis(1500);

struct Zk {
    server: Server,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Zk {
    async fn start() -> Zk {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        cfg.min_session_timeout = SESSION;
        let server = Server::start(cfg).await.expect("server starts");
        let addr = server.local_addr();
        Zk {
            server,
            addr,
            _dir: dir,
        }
    }

    async fn client(&self) -> Arc<Client> {
        let options = ClientOptions {
            session_timeout: SESSION,
            ..Default::default()
        };
        Arc::new(Client::connect(self.addr, options).await.expect("connect"))
    }

    async fn stop(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }
}

/// Runs `f`, failing the test if it takes longer than `secs`.
async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}

/// Closes a client that nobody else holds.
async fn close(client: Arc<Client>) {
    match Arc::try_unwrap(client) {
        Ok(client) => client.close().await.expect("close"),
        Err(_) => panic!("the client is still shared"),
    }
}

/// Waits (on a children watch) until `path` has `n` children; returns them.
async fn wait_children(client: &Client, path: &str, n: usize) -> Vec<String> {
    let mut watch = client.watch_children(path).await.expect("watch");
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::Children(c))) if c.children.len() == n => return c.children,
            Some(Ok(_)) => {}
            other => panic!("watch of {path} ended: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Election
// ---------------------------------------------------------------------------------------

/// The test: 10 contenders, each with its own session; the leader is killed
/// nine times, alternately by a crash (its client dropped without close: its session
/// expires) and a clean exit (close). After each kill: exactly one leader, the next in
/// sequence, and exactly one contender woken (no herd effect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_passes_leadership_in_sequence_without_herd_effect() {
    const N: usize = 10;
    let zk = Zk::start().await;
    within(40, "election", async {
        let observer = zk.client().await;
        let mut candidates: Vec<Option<Arc<Candidate>>> = Vec::new();
        for i in 0..N {
            let client = zk.client().await;
            let id = format!("contender-{i}");
            let candidate = Election::join(client, "/election", id.as_bytes())
                .await
                .unwrap();
            candidates.push(Some(Arc::new(candidate)));
        }
        let sequences: Vec<u64> = candidates
            .iter()
            .map(|c| c.as_ref().unwrap().sequence())
            .collect();
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "sequence follows join order: {sequences:?}"
        );

        // Each contender waits in its own task and reports when it leads, with how many
        // others claimed leadership at that moment.
        let claims = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel();
        for (i, candidate) in candidates.iter().enumerate() {
            let candidate = candidate.clone().unwrap();
            let (tx, claims) = (tx.clone(), claims.clone());
            tokio::spawn(async move {
                let result = candidate.wait_for_leadership().await;
                drop(candidate);
                let report = result.map(|()| (i, claims.fetch_add(1, SeqCst)));
                let _ = tx.send(report.map_err(|e| (i, e)));
            });
        }

        let mut departed_wakeups = 0;
        for round in 0..N {
            let started = Instant::now();
            let report = within(5, "the next leader", rx.recv())
                .await
                .expect("reports");
            let (leader, other_claims) =
                report.unwrap_or_else(|(i, e)| panic!("contender {i} failed: {e}"));
            let handover = started.elapsed();
            assert_eq!(leader, round, "leadership passes in sequence");
            assert_eq!(
                other_claims, 0,
                "round {round}: two contenders claimed leadership at once"
            );

            let live: Vec<(usize, &Arc<Candidate>)> = candidates
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
                .collect();
            let leaders: Vec<usize> = live
                .iter()
                .filter(|(_, c)| c.is_leader())
                .map(|(i, _)| *i)
                .collect();
            assert_eq!(leaders, vec![round], "exactly one contender leads");
            assert!(live[0].1.check_leadership().await.unwrap());
            let (path, id) = Election::leader(&observer, "/election")
                .await
                .unwrap()
                .expect("a leader");
            assert_eq!(
                (path.as_str(), id),
                (live[0].1.path(), format!("contender-{round}").into_bytes())
            );
            assert_eq!(
                Election::contenders(&observer, "/election")
                    .await
                    .unwrap()
                    .len(),
                N - round
            );

            // No herd: only the departed leader's successor (the new leader) was woken.
            let wakeups: Vec<u64> = live.iter().map(|(_, c)| c.wakeups()).collect();
            let expected: Vec<u64> = live
                .iter()
                .map(|(i, _)| u64::from(round > 0 && *i == round))
                .collect();
            assert_eq!(
                wakeups, expected,
                "round {round}: wakeups of contenders {round}..{N}"
            );
            assert_eq!(
                departed_wakeups + wakeups.iter().sum::<u64>(),
                round as u64,
                "one wakeup per kill"
            );
            eprintln!("round {round}: contender {leader} leads after {handover:?}");

            if round == N - 1 {
                break;
            }
            // Kill the leader: it stops claiming, then dies.
            claims.fetch_sub(1, SeqCst);
            let dying = candidates[round].take().unwrap();
            departed_wakeups += dying.wakeups();
            if round % 2 == 0 {
                // Crash: no close, heartbeats stop, the session expires.
                drop(dying);
            } else {
                let dying =
                    Arc::try_unwrap(dying).unwrap_or_else(|_| panic!("candidate still shared"));
                close(dying.into_client()).await;
            }
        }
        assert!(
            rx.try_recv().is_err(),
            "no contender but the last one leads"
        );
        let last = candidates[N - 1].take().unwrap();
        last.resign().await.unwrap();
        assert!(!last.is_leader());
        assert_eq!(
            Election::leader(&observer, "/election").await.unwrap(),
            None
        );
    })
    .await;
    zk.stop().await;
}

/// Resigning hands leadership to the next contender; a contender whose znode is gone
/// is told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_resign_hands_over_and_lost_node_is_reported() {
    let zk = Zk::start().await;
    within(10, "resign", async {
        let (a, b) = (zk.client().await, zk.client().await);
        let first = Election::join(a, "/svc/leader", b"a").await.unwrap();
        let second = Election::join(b.clone(), "/svc/leader", b"b")
            .await
            .unwrap();
        first.wait_for_leadership().await.unwrap();
        assert!(first.is_leader() && !second.is_leader());
        assert!(!second.check_leadership().await.unwrap());
        first.resign().await.unwrap();
        assert!(!first.is_leader());
        assert!(matches!(
            first.wait_for_leadership().await,
            Err(RecipeError::NodeGone(_))
        ));
        second.wait_for_leadership().await.unwrap();
        // It was not waiting when the first resigned: it found itself first, unwoken.
        assert_eq!(second.wakeups(), 0);
        // Someone deletes a waiting contender's znode: it learns its claim is gone.
        let third = Election::join(b.clone(), "/svc/leader", b"c")
            .await
            .unwrap();
        b.delete(third.path(), None).await.unwrap();
        assert!(matches!(
            third.wait_for_leadership().await,
            Err(RecipeError::NodeGone(_))
        ));
    })
    .await;
    zk.stop().await;
}

// ---------------------------------------------------------------------------------------
// Lock
// ---------------------------------------------------------------------------------------

/// Two clients: the second acquires only after the first releases; a dropped guard
/// releases too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_second_client_acquires_only_after_release() {
    let zk = Zk::start().await;
    within(10, "lock handover", async {
        let (a, b, observer) = (zk.client().await, zk.client().await, zk.client().await);
        let guard_a = Lock::acquire(a.clone(), "/locks/res").await.unwrap();
        assert!(guard_a.is_held());
        assert!(Lock::is_locked(&observer, "/locks/res").await.unwrap());
        assert!(Lock::try_acquire(b.clone(), "/locks/res")
            .await
            .unwrap()
            .is_none());

        let a_holds = Arc::new(AtomicBool::new(true));
        let (tx, rx) = oneshot::channel();
        let waiter = {
            let (b, a_holds) = (b.clone(), a_holds.clone());
            tokio::spawn(async move {
                let guard = Lock::acquire(b, "/locks/res").await.unwrap();
                let _ = tx.send(a_holds.load(SeqCst));
                guard
            })
        };
        // B is queued behind A (two znodes), and has not got the lock.
        let queued = wait_children(&observer, "/locks/res", 2).await;
        assert_eq!(queued[0], guard_a.path().rsplit('/').next().unwrap());
        assert!(!waiter.is_finished(), "B got the lock while A held it");

        a_holds.store(false, SeqCst);
        guard_a.release().await.unwrap();
        assert!(!rx.await.unwrap(), "B acquired before A released");
        let guard_b = waiter.await.unwrap();
        assert!(guard_b.is_held());

        // Dropping the guard releases it (in the background): A gets the lock again.
        drop(guard_b);
        let guard_a = Lock::acquire(a, "/locks/res").await.unwrap();
        guard_a.release().await.unwrap();
        assert!(!Lock::is_locked(&observer, "/locks/res").await.unwrap());
    })
    .await;
    zk.stop().await;
}

/// Three clients take the lock four times each: never two inside at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_excludes_under_contention() {
    let zk = Zk::start().await;
    within(15, "contention", async {
        let inside = Arc::new(AtomicBool::new(false));
        let entries = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let client = zk.client().await;
            let (inside, entries) = (inside.clone(), entries.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..4 {
                    let guard = Lock::acquire(client.clone(), "/locks/counter")
                        .await
                        .unwrap();
                    assert!(!inside.swap(true, SeqCst), "two holders at once");
                    entries.fetch_add(1, SeqCst);
                    // Something that takes a round trip while holding the lock.
                    client.sync().await.unwrap();
                    inside.store(false, SeqCst);
                    guard.release().await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(entries.load(SeqCst), 12);
    })
    .await;
    zk.stop().await;
}

// ---------------------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------------------

/// Join, explicit leave, implicit leave (a crashed member disappears after its session
/// timeout); the watch stream shows each change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_tracks_join_leave_and_crash() {
    let zk = Zk::start().await;
    within(15, "membership", async {
        let observer = zk.client().await;
        let mut members = Group::watch_members(&observer, "/brokers/ids")
            .await
            .unwrap();
        assert_eq!(next(&mut members).await, Vec::<String>::new());

        let (a, b, c) = (zk.client().await, zk.client().await, zk.client().await);
        let member_a = Group::join(a.clone(), "/brokers/ids", "a", b"10.0.0.1")
            .await
            .unwrap();
        assert_eq!(next(&mut members).await, ["a"]);
        let member_b = Group::join(b.clone(), "/brokers/ids", "b", b"10.0.0.2")
            .await
            .unwrap();
        assert_eq!(next(&mut members).await, ["a", "b"]);
        let member_c = Group::join(c.clone(), "/brokers/ids", "c", b"10.0.0.3")
            .await
            .unwrap();
        assert_eq!(next(&mut members).await, ["a", "b", "c"]);

        let duplicate = Group::join(a.clone(), "/brokers/ids", "c", b"")
            .await
            .unwrap_err();
        assert_eq!(
            duplicate.kind(),
            Some(pehra_shared::wire::ErrorKind::NodeExists)
        );
        assert!(Group::join(a.clone(), "/brokers/ids", "x/y", b"")
            .await
            .is_err());
        assert_eq!(
            Group::member_data(&observer, "/brokers/ids", "b")
                .await
                .unwrap(),
            Some(b"10.0.0.2".to_vec())
        );
        member_b.set_data(b"10.0.0.22").await.unwrap();

        // Explicit leave.
        member_a.leave().await.unwrap();
        assert_eq!(next(&mut members).await, ["b", "c"]);

        // Crash: c's client goes without a close; c goes when its session expires.
        let crashed = Instant::now();
        drop(member_c);
        drop(c);
        assert_eq!(next(&mut members).await, ["b"]);
        let noticed = crashed.elapsed();
        assert!(
            noticed >= SESSION / 2,
            "c left after {noticed:?}, before its session could expire"
        );
        eprintln!("crashed member gone after {noticed:?}");

        // Session closed: b goes at once.
        assert_eq!(
            Group::members(&observer, "/brokers/ids").await.unwrap(),
            ["b"]
        );
        drop(member_b);
        close(b).await;
        assert_eq!(next(&mut members).await, Vec::<String>::new());
        assert_eq!(
            Group::member_data(&observer, "/brokers/ids", "b")
                .await
                .unwrap(),
            None
        );
        drop(a);
    })
    .await;
    zk.stop().await;
}

/// The next member set, within 5 s.
async fn next(members: &mut MembersWatch) -> Vec<String> {
    within(5, "member set", members.next())
        .await
        .expect("watch goes on")
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Barrier
// ---------------------------------------------------------------------------------------

/// Four participants: none passes `enter` before the fourth arrives; none returns from
/// `leave` before the last one leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_enters_together_and_leaves_together() {
    const N: usize = 4;
    let zk = Zk::start().await;
    within(15, "barrier", async {
        let observer = zk.client().await;
        // The barrier znode exists before anyone watches it.
        pehra_zookeeper::recipes::ensure_path(&observer, "/barriers/b1")
            .await
            .unwrap();
        let last_arrived = Arc::new(AtomicBool::new(false));
        let last_leaving = Arc::new(AtomicBool::new(false));
        let passed = Arc::new(AtomicUsize::new(0));

        let participant =
            |client: Arc<Client>, last: Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>| {
                let (last_arrived, last_leaving, passed) =
                    (last_arrived.clone(), last_leaving.clone(), passed.clone());
                tokio::spawn(async move {
                    let mut barrier = Barrier::new(client, "/barriers/b1", N);
                    barrier.enter().await.unwrap();
                    assert!(
                        last_arrived.load(SeqCst),
                        "passed enter before the last participant arrived"
                    );
                    passed.fetch_add(1, SeqCst);
                    if let Some((entered, go_leave)) = last {
                        entered.send(()).unwrap();
                        go_leave.await.unwrap();
                    }
                    barrier.leave().await.unwrap();
                    assert!(
                        last_leaving.load(SeqCst),
                        "left before the last participant left"
                    );
                })
            };

        let mut tasks = Vec::new();
        for _ in 0..N - 1 {
            tasks.push(participant(zk.client().await, None));
        }
        // Three have entered (three znodes) and wait.
        wait_children(&observer, "/barriers/b1", N - 1).await;
        assert_eq!(passed.load(SeqCst), 0);
        assert!(tasks.iter().all(|t| !t.is_finished()));

        // The fourth arrives (it holds back its leave until told).
        let (entered_tx, entered) = oneshot::channel();
        let (go, go_leave) = oneshot::channel();
        last_arrived.store(true, SeqCst);
        let last = participant(zk.client().await, Some((entered_tx, go_leave)));
        within(5, "the fourth passes enter", entered).await.unwrap();

        // The first three pass and leave, and wait for the fourth: the lowest keeps its
        // znode (watching the highest, the fourth's), the other two delete theirs, which
        // leaves two participant znodes.
        let remaining = within(5, "three leave", async {
            let mut watch = observer.watch_children("/barriers/b1").await.unwrap();
            loop {
                match watch.next().await {
                    Some(Ok(WatchEvent::Children(c))) => {
                        let participants: Vec<String> = c
                            .children
                            .into_iter()
                            .filter(|p| p.starts_with("p-"))
                            .collect();
                        if participants.len() == 2 {
                            return participants;
                        }
                    }
                    other => panic!("watch ended: {other:?}"),
                }
            }
        })
        .await;
        assert_eq!(remaining.len(), 2);
        assert!(
            tasks.iter().all(|t| !t.is_finished()),
            "left before the last participant left"
        );

        last_leaving.store(true, SeqCst);
        go.send(()).unwrap();
        last.await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(passed.load(SeqCst), N);
        // Nothing is left behind: the barrier can be used again.
        let (children, _) = observer.get_children("/barriers/b1").await.unwrap();
        assert!(children.is_empty(), "left behind: {children:?}");
    })
    .await;
    zk.stop().await;
}

// ---------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------

/// A watcher sees the initial value and each updated one; a watcher that starts before
/// the value exists sees "not set", then the value; deletion and re-creation are seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_watch_sees_initial_and_each_new_value() {
    let zk = Zk::start().await;
    within(10, "config", async {
        let (writer, reader) = (zk.client().await, zk.client().await);
        ConfigValue::set(&writer, "/config/app/threshold", b"v0")
            .await
            .unwrap();
        let mut threshold = ConfigValue::watch(reader.clone(), "/config/app/threshold")
            .await
            .unwrap();
        let mut missing = ConfigValue::watch(reader.clone(), "/config/app/mode")
            .await
            .unwrap();

        assert_eq!(threshold.next().await.unwrap(), Some(b"v0".to_vec()));
        assert_eq!(missing.next().await.unwrap(), None);
        for v in ["v1", "v2", "v3", "v3"] {
            let stat = ConfigValue::set(&writer, "/config/app/threshold", v.as_bytes())
                .await
                .unwrap();
            assert_eq!(
                threshold.next().await.unwrap(),
                Some(v.as_bytes().to_vec()),
                "stat {stat:?}"
            );
        }
        assert_eq!(
            ConfigValue::get(&reader, "/config/app/threshold")
                .await
                .unwrap(),
            Some(b"v3".to_vec())
        );

        // Compare-and-set.
        let (_, stat) = writer.get_data("/config/app/threshold").await.unwrap();
        let stale =
            ConfigValue::set_if(&writer, "/config/app/threshold", b"x", stat.version + 1).await;
        assert_eq!(
            stale.unwrap_err().kind(),
            Some(pehra_shared::wire::ErrorKind::VersionMismatch)
        );
        ConfigValue::set_if(&writer, "/config/app/threshold", b"v4", stat.version)
            .await
            .unwrap();
        assert_eq!(threshold.next().await.unwrap(), Some(b"v4".to_vec()));

        // A value that did not exist appears.
        ConfigValue::set(&writer, "/config/app/mode", b"eco")
            .await
            .unwrap();
        assert_eq!(missing.next().await.unwrap(), Some(b"eco".to_vec()));

        // Removed, then set again.
        ConfigValue::unset(&writer, "/config/app/threshold")
            .await
            .unwrap();
        assert_eq!(threshold.next().await.unwrap(), None);
        assert_eq!(
            ConfigValue::get(&reader, "/config/app/threshold")
                .await
                .unwrap(),
            None
        );
        ConfigValue::set(&writer, "/config/app/threshold", b"v5")
            .await
            .unwrap();
        assert_eq!(threshold.next().await.unwrap(), Some(b"v5".to_vec()));
    })
    .await;
    zk.stop().await;
}
