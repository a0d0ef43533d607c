//! A zookeeper ensemble of three real `pehra zookeeper` processes on loopback: writes
//! acknowledged by the leader reach every member, the leader's death (SIGKILL) elects
//! another that takes writes with nothing acknowledged lost, and a client given every
//! member fails over with its session.

mod common;

use common::ensemble::{leader_seen_by, status_of, Ensemble};
use common::{free_udp_ports, pehra, TempDir, Zookeeper};
use pehra_shared::coap::Config;
use pehra_shared::wire::ErrorKind;
use pehra_zookeeper::{Client, ClientOptions, CreateMode, SessionState, WatchEvent};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test took too long")
}

fn options() -> ClientOptions {
    ClientOptions {
        session_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

/// Waits (on a watch of the root, so on the member's own notifications) until the member
/// at `addr` has every znode of `want` under `/`.
async fn await_children(addr: SocketAddr, want: &BTreeSet<String>) {
    let client = Client::without_session(addr, Config::default())
        .await
        .unwrap();
    let mut watch = client.watch_children("/").await.unwrap();
    loop {
        match watch.next().await {
            Some(Ok(WatchEvent::Children(children))) => {
                let have: BTreeSet<String> = children.children.into_iter().collect();
                if want.is_subset(&have) {
                    return;
                }
            }
            other => panic!("watch of / on {addr} ended: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_survive_the_leaders_death() {
    bounded(async {
        let mut ensemble = Ensemble::start("ensemble-failover");
        let client = Client::connect_any(&ensemble.addrs, options())
            .await
            .expect("a session from the ensemble's leader");
        let session = client.session_id().unwrap();
        let mut acknowledged = BTreeSet::new();
        for i in 0..20 {
            let path = client
                .create(&format!("/before{i}"), b"x", CreateMode::Persistent)
                .await
                .expect("the leader takes writes");
            acknowledged.insert(path.trim_start_matches('/').to_string());
        }
        client
            .create("/ephemeral", b"", CreateMode::Ephemeral)
            .await
            .unwrap();
        acknowledged.insert("ephemeral".into());
        let leader = client.server();
        // A member that is not the leader refuses writes, naming the leader.
        let follower = *ensemble.addrs.iter().find(|a| **a != leader).unwrap();
        let direct = Client::without_session(follower, Config::default())
            .await
            .unwrap();
        let refused = direct
            .create("/direct", b"", CreateMode::Persistent)
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), Some(ErrorKind::NotLeader));
        assert!(
            refused.to_string().contains(&leader.to_string()),
            "{refused}"
        );
        // Read-your-writes on any member: after a sync (ReadIndex through the leader),
        // a follower's read sees every write acknowledged before it.
        for addr in ensemble.addrs.iter().filter(|a| **a != leader) {
            let reader = Client::without_session(*addr, Config::default())
                .await
                .unwrap();
            for value in [&b"v2"[..], b"x"] {
                client.set_data("/before0", value, None).await.unwrap();
                reader
                    .sync()
                    .await
                    .expect("a follower syncs through the leader");
                assert_eq!(reader.get_data("/before0").await.unwrap().0, value);
            }
        }
        for addr in &ensemble.addrs {
            await_children(*addr, &acknowledged).await;
        }

        ensemble.kill(leader);
        // The same client, the same session: on to a surviving member, which becomes the
        // leader (or sends it on to the one that did).
        for i in 0..10 {
            let path = client
                .create(&format!("/after{i}"), b"y", CreateMode::Persistent)
                .await
                .expect("a new leader takes writes");
            acknowledged.insert(path.trim_start_matches('/').to_string());
        }
        assert_ne!(client.server(), leader);
        // A sync on the new leader confirms its read point with a majority.
        let zxid = client.sync().await.expect("sync on the new leader");
        assert!(zxid > 20, "zxid {zxid}");
        assert_eq!(client.session_id(), Some(session));
        assert_eq!(*client.session_state().borrow(), SessionState::Alive);
        // Nothing acknowledged is lost, the session's ephemeral znode included.
        for addr in ensemble.addrs.iter().filter(|a| **a != leader) {
            await_children(*addr, &acknowledged).await;
        }
        // The killed member comes back and catches up.
        ensemble.restart(leader);
        await_children(leader, &acknowledged).await;
        client.close().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_every_member() {
    bounded(async {
        let ensemble = Ensemble::start("ensemble-cli");
        // Listed last-first: whichever leads, the CLI finds it.
        let list = ensemble
            .addrs
            .iter()
            .rev()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let (code, out, err) = tokio::task::spawn_blocking(move || {
            pehra(&["zk", "--zookeeper", &list, "create", "/cli", "v"])
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), "/cli");
        for addr in &ensemble.addrs {
            await_children(*addr, &BTreeSet::from(["cli".to_string()])).await;
        }
        // `pehra cluster status` shows the members, the leader and the lag, learning
        // the other members from the one it is given.
        let one = ensemble.addrs[0].to_string();
        let (code, out, err) =
            tokio::task::spawn_blocking(move || pehra(&["cluster", "status", "--zookeeper", &one]))
                .await
                .unwrap();
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("zookeeper ensemble (3 members, leader "),
            "{out}"
        );
        let roles: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter(|r| ["leader", "follower"].contains(r))
            .collect();
        assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1, "{out}");
        assert_eq!(
            roles.iter().filter(|r| **r == "follower").count(),
            2,
            "{out}"
        );
        for addr in &ensemble.addrs {
            assert!(out.contains(&addr.to_string()), "{out}");
        }
        // Each member's row ends with where its log starts, its health (‰), its
        // election timeout and its heartbeat RTT (in the leader's view; `-` before the
        // leader timed a heartbeat to it).
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(2)
                    .is_some_and(|r| ["leader", "follower"].contains(&r))
            })
            .collect();
        assert_eq!(rows.len(), 3, "{out}");
        for row in rows {
            let fields: Vec<&str> = row.split_whitespace().collect();
            assert!(fields[7].ends_with('‰'), "health: {row}");
            assert_eq!(fields[9], "ms", "election timeout: {row}");
            assert!(
                fields.len() == 11 && fields[10] == "-" || fields.get(11) == Some(&"ms"),
                "heartbeat RTT: {row}"
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_speak_raft_under_oscore_and_only_they_may() {
    bounded(async {
        let dir = TempDir::new("ensemble-secure");
        let keys = dir.path().join("keys");
        let (code, _, err) = pehra(&["keys", "init", keys.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let cred = |name: &str| {
            std::sync::Arc::new(
                pehra_shared::security::credentials::Credentials::load(
                    keys.join(format!("{name}.cred")),
                )
                .unwrap(),
            )
        };
        let zk_cred = keys.join("zookeeper.cred").display().to_string();
        let ensemble = Ensemble::start_with(dir, vec!["--credentials".into(), zk_cred]);
        let client = Client::connect_any(
            &ensemble.addrs,
            ClientOptions {
                credentials: Some(cred("admin")),
                ..options()
            },
        )
        .await
        .expect("a secured ensemble elects a leader and opens a session");
        client
            .create("/secured", b"", CreateMode::Persistent)
            .await
            .unwrap();
        // Even the admin may not speak Raft to a member.
        let endpoint = pehra_shared::driver::Endpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            Config::default(),
            pehra_shared::driver::Router::new(),
        )
        .await
        .unwrap();
        pehra_shared::driver::security::secure_client(
            &endpoint.handle(),
            &cred("admin"),
            ensemble.addrs[0],
            &pehra_shared::security::zookeeper_kid(),
        )
        .await
        .unwrap();
        let response = endpoint
            .handle()
            .request(
                ensemble.addrs[0],
                pehra_shared::coap::Request::post("raft").with_payload(vec![0u8; 4]),
            )
            .await
            .unwrap();
        assert_eq!(response.code(), pehra_shared::coap::Code::FORBIDDEN);
        // Nor may it pull a snapshot of the whole tree (past every znode ACL).
        let asked = pehra_zookeeper::ensemble::snapshot::ChunkRequest {
            index: 1,
            offset: 0,
        };
        let response = endpoint
            .handle()
            .request(
                ensemble.addrs[0],
                pehra_shared::coap::Request::post("raft/snapshot")
                    .with_payload(pehra_shared::wire::encode(&asked).unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(response.code(), pehra_shared::coap::Code::FORBIDDEN);
        // Moving the leadership is the admin's: a broker or a client is refused.
        for who in ["broker-1", "client"] {
            let other =
                Client::without_session_any(&ensemble.addrs, Config::default(), Some(&cred(who)))
                    .await
                    .unwrap();
            let refused = other.transfer_leadership(None).await.unwrap_err();
            assert_eq!(
                refused.kind(),
                Some(ErrorKind::Forbidden),
                "{who}: {refused}"
            );
        }
        // Membership changes are the admin's too; a member added later speaks Raft under
        // OSCORE with the others (each side sets up the context when it learns of it).
        let refused =
            Client::without_session_any(&ensemble.addrs, Config::default(), Some(&cred("client")))
                .await
                .unwrap()
                .change_membership(&pehra_zookeeper::ensemble::MembershipRequest::Remove { id: 3 })
                .await
                .unwrap_err();
        assert_eq!(refused.kind(), Some(ErrorKind::Forbidden), "{refused}");
        let addr4: SocketAddr = format!("127.0.0.1:{}", free_udp_ports(1)).parse().unwrap();
        let peers4 = format!("{},4={addr4}", ensemble.peers());
        let zk_cred = keys.join("zookeeper.cred").display().to_string();
        let join = [
            "--id",
            "4",
            "--peers",
            &peers4,
            "--join",
            "--credentials",
            &zk_cred,
        ];
        let member4 = Zookeeper::start_with(&ensemble.dir.path().join("member4"), addr4, &join);
        let changed = client
            .change_membership(&pehra_zookeeper::ensemble::MembershipRequest::Add {
                id: 4,
                addr: addr4.to_string(),
            })
            .await
            .unwrap();
        assert_eq!((changed.voters, changed.learners), (vec![1, 2, 3], vec![4]));
        for addr in ensemble.addrs.iter().chain([&addr4]) {
            let reader =
                Client::without_session_secured(*addr, Config::default(), Some(&cred("admin")))
                    .await
                    .unwrap();
            let mut watch = reader.watch_children("/").await.unwrap();
            loop {
                match watch.next().await {
                    Some(Ok(WatchEvent::Children(c)))
                        if c.children.contains(&"secured".to_string()) =>
                    {
                        break
                    }
                    Some(Ok(_)) => {}
                    other => panic!("watch ended: {other:?}"),
                }
            }
        }
        // Member 4, caught up, votes: with one of the first three stopped, a write needs
        // three of the four votes, so member 4's.
        let mut ensemble = ensemble;
        let leader = client.server();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = client.ensemble_status().await.unwrap().unwrap();
            if status.members.iter().any(|m| m.id == 4 && !m.learner) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "member 4 is never made a voter: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stopped = *ensemble.addrs.iter().find(|a| **a != leader).unwrap();
        ensemble.kill(stopped);
        client
            .create("/with-four", b"", CreateMode::Persistent)
            .await
            .unwrap();
        member4.kill();
    })
    .await
}

/// A leader cut off with a write applied to its tree but never committed: the others
/// elect a new leader and go on; when the old one comes back, its write is void (its
/// client is told so) and its tree is the ensemble's again.
/// A write the leader applied and proposed and nobody can commit: its followers were
/// killed after it and before the write. Returns the leader, the (dead) followers and the
/// writer's task.
async fn uncommitted_write(
    ensemble: &mut Ensemble,
) -> (
    SocketAddr,
    Vec<SocketAddr>,
    tokio::task::JoinHandle<Result<String, pehra_zookeeper::ZkError>>,
) {
    // The write must reach the leader after its followers died and before it sees
    // it has lost its quorum (Raft's check-quorum, within an election timeout): if it
    // came too late (refused NotLeader), the followers come back and it is tried
    // again.
    let mut attempt = 0;
    loop {
        attempt += 1;
        assert!(attempt <= 5, "the leader never took the write in time");
        let client = Client::connect_any(&ensemble.addrs, options())
            .await
            .unwrap();
        client
            .create(&format!("/a{attempt}"), b"", CreateMode::Persistent)
            .await
            .unwrap();
        let leader = client.server();
        let followers: Vec<SocketAddr> = ensemble
            .addrs
            .iter()
            .copied()
            .filter(|a| *a != leader)
            .collect();
        for f in &followers {
            await_children(*f, &BTreeSet::from([format!("a{attempt}")])).await;
        }
        let direct = Client::without_session(leader, Config::default())
            .await
            .unwrap();
        let probe = Client::without_session(leader, Config::default())
            .await
            .unwrap();
        // The followers die (a stopped process would still find the leader's
        // messages in its socket when it resumes).
        for f in &followers {
            ensemble.kill(*f);
        }
        // A write the leader applies and proposes, which nobody can commit.
        let doomed =
            tokio::spawn(
                async move { direct.create("/doomed", b"", CreateMode::Persistent).await },
            );
        // Wait until the leader has the entry in its Raft log (its driver answers
        // `GET /ensemble` whatever its core waits for), or refused it.
        let proposed = loop {
            if doomed.is_finished() {
                break false;
            }
            let status = probe.ensemble_status().await.unwrap().unwrap();
            if status.last_index > status.commit {
                break true;
            }
            tokio::task::yield_now().await;
        };
        if proposed {
            break (leader, followers, doomed);
        }
        let refused = doomed.await.unwrap().unwrap_err();
        assert_eq!(refused.kind(), Some(ErrorKind::NotLeader), "{refused}");
        for f in &followers {
            ensemble.restart(*f);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leaders_uncommitted_write_is_rolled_back() {
    bounded(async {
        let mut ensemble = Ensemble::start("ensemble-rollback");
        let (leader, followers, doomed) = uncommitted_write(&mut ensemble).await;
        ensemble.signal(leader, "STOP");
        for f in &followers {
            ensemble.restart(*f);
        }
        // The two others elect a leader and take writes.
        let survivors = Client::connect_any(&followers, options()).await.unwrap();
        survivors
            .create("/after", b"", CreateMode::Persistent)
            .await
            .expect("the majority takes writes");
        ensemble.signal(leader, "CONT");
        let refused = doomed
            .await
            .unwrap()
            .expect_err("the write was never committed");
        // Busy: "not committed, maybe not applied" (the rollback). NotLeader is seen too,
        // rarely, under load; not yet explained (see docs/ensemble.md).
        assert!(
            matches!(refused.kind(), Some(ErrorKind::Busy | ErrorKind::NotLeader)),
            "{refused}"
        );
        // The old leader's tree is the ensemble's: /after is there, /doomed is not.
        let want = BTreeSet::from(["after".to_string()]);
        for addr in &ensemble.addrs {
            await_children(*addr, &want).await;
            let reader = Client::without_session(*addr, Config::default())
                .await
                .unwrap();
            assert_eq!(
                reader.exists("/doomed").await.unwrap(),
                None,
                "{addr} kept a write that was never committed"
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stopped_with_a_write_it_cannot_commit_stops_and_answers_it() {
    // SIGTERM to a leader whose proposal can never commit (no quorum): it stops within
    // the bound (it waited for the commit for ever), and its writer is told the write
    // may or may not be applied.
    bounded(async {
        let mut ensemble = Ensemble::start("ensemble-stop-uncommitted");
        let (leader, _followers, doomed) = uncommitted_write(&mut ensemble).await;
        let member = ensemble.take(leader);
        let stopped = tokio::task::spawn_blocking(move || member.terminate())
            .await
            .unwrap();
        assert!(
            stopped,
            "the member did not stop (exit 0) within 10 s of SIGTERM"
        );
        // Answered, not dropped: "maybe applied" if it was the batch in flight, "not
        // applied" if it waited behind another (the controller writes too).
        let refused = doomed
            .await
            .unwrap()
            .expect_err("the write was never committed");
        assert_eq!(refused.kind(), Some(ErrorKind::Busy), "{refused}");
        assert!(refused.to_string().contains("applied"), "{refused}");
    })
    .await
}

/// The member id (1-based) of the member at `addr`.
fn member_id(ensemble: &Ensemble, addr: SocketAddr) -> u64 {
    ensemble.addrs.iter().position(|a| *a == addr).unwrap() as u64 + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_handover_moves_the_zookeeper_leader_and_an_impossible_one_rolls_back() {
    bounded(async {
        let mut ensemble = Ensemble::start("ensemble-handover");
        let client = Client::connect_any(&ensemble.addrs, options())
            .await
            .expect("a session from the ensemble's leader");
        let session = client.session_id().unwrap();
        client
            .create("/before", b"x", CreateMode::Persistent)
            .await
            .unwrap();
        let old = member_id(&ensemble, client.server());
        let new = old % 3 + 1;
        let list = ensemble
            .addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let cli = |args: Vec<String>| {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                pehra(&args)
            })
        };
        let args = |to: u64, timeout: &str| {
            ["cluster", "zookeeper-handover", "--zookeeper", &list]
                .into_iter()
                .map(String::from)
                .chain([
                    "--to".into(),
                    to.to_string(),
                    "--timeout-s".into(),
                    timeout.into(),
                ])
                .collect::<Vec<String>>()
        };
        // A writer keeps writing through the handover: none of its writes may fail (the
        // old leader names the new one instead of taking them; the client follows).
        let client = std::sync::Arc::new(client);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn({
            let client = client.clone();
            async move {
                let (mut written, mut failed) = (0, Vec::new());
                while !*stopped.borrow() {
                    match client
                        .create("/w", b"", CreateMode::PersistentSequential)
                        .await
                    {
                        Ok(_) => written += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (written, failed)
            }
        });
        let (code, out, err) = cli(args(new, "20")).await.unwrap();
        stop.send_replace(true);
        let (written, failed) = writer.await.unwrap();
        assert!(
            failed.is_empty(),
            "writes failed during the handover: {failed:?}"
        );
        assert!(written > 0);
        assert_eq!(code, 0, "{out}{err}");
        println!("{} ({written} writes meanwhile, none failed)", out.trim());
        assert!(
            out.contains(&format!("member {old} → member {new} in")),
            "{out}"
        );
        // Every member agrees, and the session and its writes go on with the new leader.
        for addr in &ensemble.addrs {
            assert_eq!(leader_seen_by(*addr).await, Some(new), "as {addr} sees it");
        }
        client
            .create("/after", b"y", CreateMode::Persistent)
            .await
            .expect("the new leader takes writes");
        assert_eq!(client.server(), ensemble.addrs[new as usize - 1]);
        assert_eq!(client.session_id(), Some(session));
        assert_eq!(*client.session_state().borrow(), SessionState::Alive);

        // A handover to a member that is down never completes: Raft abandons it and the
        // leader goes on (the rollback); the command says so and exits 1.
        let down = new % 3 + 1;
        ensemble.kill(ensemble.addrs[down as usize - 1]);
        let (code, out, err) = cli(args(down, "4")).await.unwrap();
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains(&format!(
                "did not move to member {down} within 4 s; member {new} leads"
            )),
            "{err}"
        );
        client
            .create("/still", b"z", CreateMode::Persistent)
            .await
            .expect("the leader takes writes again after the abandoned transfer");
        assert_eq!(
            leader_seen_by(ensemble.addrs[new as usize - 1]).await,
            Some(new)
        );
    })
    .await
}

/// Polls (every Raft tick: the cut is proposed on a tick, nothing announces it) until the
/// member at `addr` says `ready`, for at most 20 s.
async fn until_status(
    addr: SocketAddr,
    what: &str,
    ready: impl Fn(&pehra_zookeeper::ensemble::EnsembleStatus) -> bool,
) -> pehra_zookeeper::ensemble::EnsembleStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = status_of(addr).await;
        if ready(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr}: {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 16: the Raft log is cut below what every member has made durable (bounded
/// memory and disk), a member that is down holds the cut back and catches up from what
/// the others kept, and every member restarts from its cut log with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_log_is_cut_and_members_restart_from_the_cut() {
    bounded(async {
        let mut ensemble = Ensemble::start_with(
            TempDir::new("ensemble-compaction"),
            vec!["--raft-compact-entries".into(), "20".into()],
        );
        let client = Client::connect_any(&ensemble.addrs, options())
            .await
            .unwrap();
        let mut acknowledged = BTreeSet::new();
        for i in 0..100 {
            let name = format!("a{i}");
            acknowledged.insert(name.clone());
            client
                .create(&format!("/{name}"), b"x", CreateMode::Persistent)
                .await
                .unwrap();
        }
        for addr in &ensemble.addrs {
            until_status(*addr, "the log cut past 50", |s| s.first_index > 50).await;
        }
        // A follower goes down: the others keep every entry it lacks.
        let leader = client.server();
        let down = *ensemble.addrs.iter().find(|a| **a != leader).unwrap();
        let has = status_of(down).await.applied;
        ensemble.kill(down);
        for i in 0..60 {
            let name = format!("b{i}");
            acknowledged.insert(name.clone());
            client
                .create(&format!("/{name}"), b"y", CreateMode::Persistent)
                .await
                .unwrap();
        }
        for addr in ensemble.addrs.iter().filter(|a| **a != down) {
            let status = status_of(*addr).await;
            assert!(
                status.first_index <= has + 1,
                "{addr} cut past what the member that is down has ({has}): {status:?}"
            );
        }
        // It comes back and catches up from those entries; then the cut moves on.
        ensemble.restart(down);
        await_children(down, &acknowledged).await;
        let last = status_of(leader).await.commit;
        for addr in &ensemble.addrs {
            until_status(*addr, "the log cut past the catch-up", |s| {
                s.first_index > has + 1 && s.applied >= last
            })
            .await;
        }
        // Every member restarts from its cut log and its own tree: nothing is lost.
        client.close().await.unwrap();
        for addr in ensemble.addrs.clone() {
            ensemble.kill(addr);
        }
        for addr in ensemble.addrs.clone() {
            ensemble.restart(addr);
        }
        let client = Client::connect_any(&ensemble.addrs, options())
            .await
            .unwrap();
        let name = "after-restart".to_string();
        acknowledged.insert(name.clone());
        client
            .create(&format!("/{name}"), b"z", CreateMode::Persistent)
            .await
            .unwrap();
        for addr in &ensemble.addrs {
            await_children(*addr, &acknowledged).await;
        }
    })
    .await
}

/// A member whose data directory was emptied (a replaced disk, a new machine under the
/// old id) while the others had cut their Raft logs: it cannot catch up entry by entry,
/// so the leader offers a snapshot of its tree, which the member pulls, installs durably
/// and follows on from; a restart of that member starts from the installed tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_directory_was_emptied_catches_up_from_a_snapshot() {
    bounded(async {
        let mut ensemble = Ensemble::start_with(
            TempDir::new("ensemble-snapshot"),
            vec!["--raft-compact-entries".into(), "20".into()],
        );
        let client = Client::connect_any(&ensemble.addrs, options())
            .await
            .unwrap();
        let mut acknowledged = BTreeSet::new();
        for i in 0..60 {
            let name = format!("a{i}");
            acknowledged.insert(name.clone());
            client
                .create(&format!("/{name}"), name.as_bytes(), CreateMode::Persistent)
                .await
                .unwrap();
        }
        for addr in &ensemble.addrs {
            until_status(*addr, "the log cut past 40", |s| s.first_index > 40).await;
        }
        let leader = client.server();
        let lost = *ensemble.addrs.iter().find(|a| **a != leader).unwrap();
        let n = ensemble.addrs.iter().position(|a| *a == lost).unwrap() + 1;
        ensemble.kill(lost);
        std::fs::remove_dir_all(ensemble.dir.path().join(format!("member{n}"))).unwrap();
        ensemble.restart(lost);
        await_children(lost, &acknowledged).await;
        // Later writes follow the snapshot.
        acknowledged.insert("after".into());
        client
            .create("/after", b"z", CreateMode::Persistent)
            .await
            .unwrap();
        await_children(lost, &acknowledged).await;
        // Its own disk now holds it all: a restart keeps every znode and its data.
        ensemble.kill(lost);
        ensemble.restart(lost);
        await_children(lost, &acknowledged).await;
        let reader = Client::without_session(lost, Config::default())
            .await
            .unwrap();
        let (data, _) = reader.get_data("/a7").await.unwrap();
        assert_eq!(data, b"a7");
    })
    .await
}

/// Issue 16 item 2: a fourth member started with `--join` is added (the CLI), catches
/// up from a snapshot (the log was cut), and votes; a follower is removed and the
/// ensemble writes on without it; the leader may not remove itself; the membership
/// survives a restart whatever `--peers` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_and_removed_without_downtime() {
    bounded(async {
        let mut ensemble = Ensemble::start_with(
            TempDir::new("ensemble-membership"),
            vec!["--raft-compact-entries".into(), "20".into()],
        );
        let client = Client::connect_any(&ensemble.addrs, options())
            .await
            .unwrap();
        let mut acknowledged = BTreeSet::new();
        for i in 0..40 {
            let name = format!("m{i}");
            acknowledged.insert(name.clone());
            client
                .create(&format!("/{name}"), b"x", CreateMode::Persistent)
                .await
                .unwrap();
        }
        for addr in &ensemble.addrs {
            until_status(*addr, "the log cut past 20", |s| s.first_index > 20).await;
        }
        // Member 4 starts to join: it waits, voting for nobody.
        let addr4: SocketAddr = format!("127.0.0.1:{}", free_udp_ports(1)).parse().unwrap();
        let peers4 = format!("{},4={addr4}", ensemble.peers());
        let dir4 = ensemble.dir.path().join("member4");
        let join = ["--id", "4", "--peers", &peers4, "--join"];
        let member4 = Zookeeper::start_with(&dir4, addr4, &join);
        let list = ensemble
            .addrs
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let add = format!("4={addr4}");
        let (code, out, err) = tokio::task::spawn_blocking({
            let list = list.clone();
            move || pehra(&["cluster", "zookeeper-add", &add, "--zookeeper", &list])
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("voters 1, 2, 3; learners 4"), "{out}");
        await_children(addr4, &acknowledged).await;
        let leader = client.server();
        // Caught up, the learner is made a voter by the leader.
        let status = until_status(leader, "four voters", |s| {
            s.members.iter().filter(|m| !m.learner).count() == 4
        })
        .await;
        assert!(status
            .members
            .iter()
            .any(|m| m.id == 4 && m.addr == addr4.to_string()));
        // The leader may not remove itself; a second add of a voter is refused.
        let leader_id = status.id;
        let refused = client
            .change_membership(&pehra_zookeeper::ensemble::MembershipRequest::Remove {
                id: leader_id,
            })
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("hand the leadership over"),
            "{refused}"
        );
        let refused = client
            .change_membership(&pehra_zookeeper::ensemble::MembershipRequest::Add {
                id: 4,
                addr: addr4.to_string(),
            })
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("already a member"),
            "{refused}"
        );
        // A follower is removed, then stopped: the other three write on.
        let gone = *ensemble.addrs.iter().find(|a| **a != leader).unwrap();
        let gone_id = status_of(gone).await.id;
        let changed = client
            .change_membership(&pehra_zookeeper::ensemble::MembershipRequest::Remove {
                id: gone_id,
            })
            .await
            .unwrap();
        assert!(!changed.voters.contains(&gone_id) && changed.voters.len() == 3);
        ensemble.kill(gone);
        let remaining: Vec<SocketAddr> = ensemble
            .addrs
            .iter()
            .copied()
            .filter(|a| *a != gone)
            .chain([addr4])
            .collect();
        // Two of the three may stop now and then: the quorum is 2 of 3, not 3 of 4.
        let other = *remaining
            .iter()
            .find(|a| **a != leader && **a != addr4)
            .unwrap();
        ensemble.kill(other);
        acknowledged.insert("after-removal".into());
        client
            .create("/after-removal", b"y", CreateMode::Persistent)
            .await
            .unwrap();
        await_children(addr4, &acknowledged).await;
        ensemble.restart(other);
        // Member 4 restarts with the old three-member --peers and no --join: its log's
        // membership wins, and it is still a voter of the three.
        member4.kill();
        let restart4 = ["--id", "4", "--peers", &peers4];
        let member4 = Zookeeper::start_with(&dir4, addr4, &restart4);
        await_children(addr4, &acknowledged).await;
        let status4 = status_of(addr4).await;
        let mut ids: Vec<u64> = status4.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        let mut want = changed.voters.clone();
        want.sort_unstable();
        assert_eq!(ids, want);
        member4.kill();
    })
    .await
}

/// Issue 16 item 4 with numbered writes: a leader that stops answering (SIGSTOP) may
/// have applied a write whose exchange timed out, so an unnumbered write cannot be sent
/// elsewhere; a session's numbered write can (the ensemble never applies it twice), and
/// the caller sees its write succeed on the next leader instead of an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_silent_leader_is_sent_on_and_applied_once() {
    bounded(async {
        let ensemble = Ensemble::start("ensemble-silent-leader");
        let quick = ClientOptions {
            coap: Config {
                ack_timeout: Duration::from_millis(300),
                max_retransmit: 2,
                ..Config::default()
            },
            ..options()
        };
        let client = Client::connect_any(&ensemble.addrs, quick).await.unwrap();
        client
            .create("/q", b"", CreateMode::Persistent)
            .await
            .unwrap();
        let leader = client.server();
        ensemble.signal(leader, "STOP");
        let created = client
            .create("/q/s-", b"", CreateMode::PersistentSequential)
            .await
            .expect("sent on to the next leader");
        assert_ne!(client.server(), leader);
        assert_eq!(*client.session_state().borrow(), SessionState::Alive);
        ensemble.signal(leader, "CONT");
        // Once back, the old leader has exactly the one child too (it catches up).
        let want: BTreeSet<String> = ["q".to_string()].into();
        for addr in &ensemble.addrs {
            await_children(*addr, &want).await;
            let reader = Client::without_session(*addr, Config::default())
                .await
                .unwrap();
            reader.sync().await.unwrap();
            let (children, _) = reader.get_children("/q").await.unwrap();
            assert_eq!(
                children,
                vec![created.trim_start_matches("/q/").to_string()],
                "{addr}"
            );
        }
    })
    .await
}

/// A paused leader (SIGSTOP: no ICMP refusal, no answer) with the default CoAP timing,
/// whose exchanges give up only after 45 s and more: the session's heartbeats and writes
/// move on to the other members after a third of the session timeout, so the session
/// outlives a pause longer than its timeout and its writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_a_paused_leader_with_the_default_coap_timing() {
    bounded(async {
        let ensemble = Ensemble::start("ensemble-paused-leader");
        let timeout = Duration::from_secs(3);
        let client = Client::connect_any(
            &ensemble.addrs,
            ClientOptions {
                session_timeout: timeout,
                ..ClientOptions::default()
            },
        )
        .await
        .unwrap();
        let session = client.session_id();
        client
            .create("/p", b"", CreateMode::Persistent)
            .await
            .unwrap();
        let leader = client.server();
        ensemble.signal(leader, "STOP");
        // Writes for two session timeouts, the leader paused throughout.
        let paused = tokio::time::Instant::now();
        let mut writes = 0;
        while paused.elapsed() < 2 * timeout {
            client
                .create("/p/w-", b"", CreateMode::PersistentSequential)
                .await
                .expect("a write goes on to the next leader");
            writes += 1;
        }
        assert_ne!(client.server(), leader);
        assert_eq!(client.session_id(), session);
        assert_eq!(*client.session_state().borrow(), SessionState::Alive);
        ensemble.signal(leader, "CONT");
        let (children, _) = client.get_children("/p").await.unwrap();
        assert_eq!(children.len(), writes);
    })
    .await
}

/// Three members on loopback, member N reading its health from `DIR/health-N` (written
/// `cpu=0` here), with `flags` added: their addresses and processes. Each member's flag
/// differs, so they are started here rather than by [`Ensemble`].
fn members_with_health_files(dir: &TempDir, flags: &[&str]) -> (Vec<SocketAddr>, Vec<Zookeeper>) {
    let first = free_udp_ports(3);
    let addrs: Vec<SocketAddr> = (0..3)
        .map(|i| format!("127.0.0.1:{}", first + i).parse().unwrap())
        .collect();
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let members = (1..=3)
        .map(|id| {
            let health = dir.path().join(format!("health-{id}"));
            std::fs::write(&health, "cpu=0\n").unwrap();
            let id_text = id.to_string();
            let health_text = health.display().to_string();
            let mut args = vec![
                "--id",
                &id_text,
                "--peers",
                &peers,
                "--health-file",
                &health_text,
            ];
            args.extend_from_slice(flags);
            Zookeeper::start_with(
                &dir.path().join(format!("member{id}")),
                addrs[id - 1],
                &args,
            )
        })
        .collect();
    (addrs, members)
}

/// Issue 15 for the zookeeper's own leader (seed 002): a leader whose health falls (here
/// read from its `--health-file`) hands its office over to a healthy member, and writes
/// go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_health_falls_hands_over_to_a_healthy_member() {
    bounded(async {
        let dir = TempDir::new("ensemble-health");
        let health = |id: usize| dir.path().join(format!("health-{id}"));
        let (addrs, members) = members_with_health_files(&dir, &[]);
        let client = Client::connect_any(&addrs, options()).await.unwrap();
        client
            .create("/h", b"", CreateMode::Persistent)
            .await
            .unwrap();
        let leader = addrs.iter().position(|a| *a == client.server()).unwrap() + 1;
        assert_eq!(leader_seen_by(addrs[0]).await, Some(leader as u64));
        // Its health falls to Warning (index 400: no CPU or memory left, failing).
        std::fs::write(health(leader), "cpu=1000\nmemory=1000\nfailures=5\n").unwrap();
        // Three samples 5 s apart: about 15 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        let moved_to = loop {
            let seen = leader_seen_by(addrs[leader % 3]).await;
            if let Some(now) = seen.filter(|&l| l != leader as u64) {
                break now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the unwell leader {leader} is still leading"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_ne!(moved_to, leader as u64);
        // The new leader takes writes; every member has them.
        client
            .create("/h/after", b"", CreateMode::Persistent)
            .await
            .unwrap();
        let status = status_of(addrs[moved_to as usize - 1]).await;
        assert_eq!(status.role, "leader");
        assert_eq!(status.health_index, Some(1000), "{status:?}");
        let want: BTreeSet<String> = ["h".to_string()].into();
        for addr in &addrs {
            await_children(*addr, &want).await;
        }
        drop(members);
    })
    .await
}

/// Seed 002's adaptive lease for the zookeeper leader: it gives the lease its health,
/// its load and its heartbeats' round trips make (the formula), its heartbeats carry it,
/// and its followers wait that long (to twice it) before they elect; when its health
/// changes, the lease follows within a sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_gives_the_lease_its_health_makes_and_followers_wait_it() {
    use pehra_shared::health::{system, LeaseConfig, NhiConfig};
    bounded(async {
        let dir = TempDir::new("ensemble-lease");
        let health = |id: usize| dir.path().join(format!("health-{id}"));
        // A 2 s base (the default is 1 s, which the seed's shorter leases cannot go
        // under), and no health handover: the unwell leader stays.
        let (addrs, members) = members_with_health_files(
            &dir,
            &["--leader-handover-on", "off", "--leader-lease-ms", "2000,1000,3000"],
        );
        let client = Client::connect_any(&addrs, options()).await.unwrap();
        client
            .create("/l", b"", CreateMode::Persistent)
            .await
            .unwrap();
        let leader = addrs.iter().position(|a| *a == client.server()).unwrap();
        let config = LeaseConfig {
            base_ms: 2_000,
            min_ms: 1_000,
            max_ms: 3_000,
            ..LeaseConfig::default()
        };
        // The lease of a leader with health `text`, as the leader's status shows it: its
        // factors are the formula's for that health, the network's from the heartbeats.
        let expect = |text: &str| {
            let sample = system::parse(text);
            let (_, class) = NhiConfig::default().rate(&sample);
            (config.nhi_factor(class), config.load_factor(sample.cpu_permille))
        };
        for text in ["cpu=0\n", "cpu=600\nmemory=1000\nfailures=5\n"] {
            std::fs::write(health(leader + 1), text).unwrap();
            let (nhi_factor, load_factor) = expect(text);
            // Within a sample (5 s) the leader's lease follows, and a heartbeat carries
            // it to every follower, whose election timeout is drawn from it.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let mine = status_of(addrs[leader]).await;
                assert_eq!(mine.role, "leader", "{mine:?}");
                let lease = mine.lease.expect("the leader shows its lease");
                let formula = (u64::from(config.base_ms)
                    * (1000 + lease.nhi_factor + lease.network_factor + lease.load_factor)
                        .max(0) as u64
                    / 1000)
                    .clamp(1_000, 3_000) as u32;
                assert_eq!(lease.lease_ms, formula, "{lease:?}");
                let mut followers_agree = true;
                for (i, addr) in addrs.iter().enumerate() {
                    if i == leader {
                        continue;
                    }
                    let theirs = status_of(*addr).await;
                    let Some(told) = theirs.leader_lease_ms else {
                        followers_agree = false;
                        continue;
                    };
                    // What they were told is a recent lease of the leader's: the
                    // network factor moves with every heartbeat's round trip.
                    followers_agree &= told.abs_diff(lease.lease_ms) <= 100;
                    let ticks = u64::from(told.div_ceil(100)) * 100;
                    let from = u64::from(told).clamp(1_000, 3_000) / 100 * 100;
                    assert!(
                        theirs.election_timeout_ms >= from.min(ticks)
                            && theirs.election_timeout_ms < 2 * ticks.max(from) + 100,
                        "follower {} waits {} ms for a lease of {told} ms",
                        theirs.id,
                        theirs.election_timeout_ms
                    );
                }
                if lease.nhi_factor == nhi_factor
                    && lease.load_factor == load_factor
                    && followers_agree
                {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "health {text:?}: the leader gives {lease:?}, wanted NHI factor {nhi_factor}‰ and load factor {load_factor}‰, and its followers told it"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        // The leader knows each follower's distance (its heartbeats' round trips), which
        // a health handover prefers short.
        let mine = status_of(addrs[leader]).await;
        for m in mine.members.iter().filter(|m| m.id != leader as u64 + 1) {
            assert!(m.rtt_us.is_some(), "{mine:?}");
        }
        // The status command shows it.
        let all = addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let (code, out, err) = pehra(&["cluster", "status", "--zookeeper", &all]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("gives a lease of"), "{out}");
        drop(members);
    })
    .await
}

/// A watch without a session, from a client that knows every member, goes on to another
/// member when its member dies, and reports the change made meanwhile (it used to end
/// with an error, or wait forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_without_a_session_moves_on_when_its_member_dies() {
    bounded(async {
        let mut ensemble = Ensemble::start("ensemble-sessionless-watch");
        let writer = Client::connect_any(&ensemble.addrs, options())
            .await
            .unwrap();
        writer
            .create("/watched", b"1", CreateMode::Persistent)
            .await
            .unwrap();
        let leader = writer.server();
        // The watcher starts on a follower, and knows the others.
        let mut addrs = ensemble.addrs.clone();
        addrs.sort_by_key(|a| *a == leader);
        let follower = addrs[0];
        let watcher = Client::without_session_any(&addrs, Config::default(), None)
            .await
            .unwrap();
        watcher.sync().await.unwrap();
        let mut watch = watcher.watch_data("/watched").await.unwrap();
        match watch.next().await {
            Some(Ok(WatchEvent::Data(d))) => assert_eq!(d.data, b"1"),
            other => panic!("first event: {other:?}"),
        }
        ensemble.kill(follower);
        writer.set_data("/watched", b"2", None).await.unwrap();
        match watch.next().await {
            Some(Ok(WatchEvent::Data(d))) => assert_eq!(d.data, b"2"),
            other => panic!("after the member's death: {other:?}"),
        }
        assert_ne!(watcher.server(), follower);
        writer.close().await.unwrap();
    })
    .await
}
