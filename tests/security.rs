//! The attacks found from outside, against a cluster with security on (a zookeeper and
//! three brokers, keys from `pehra keys init`), from a plain CoAP socket and from
//! authenticated identities that are not allowed: each is refused (4.01 without
//! OSCORE, 4.03 by the ACLs) and changes nothing; the cluster's own members and its
//! client work throughout.

mod common;

use common::{pehra, TestCluster};
use pehra_broker::client::ClusterClient;
use pehra_cluster as cluster;
use pehra_shared::coap::{Code, Config, Method, Request, Response, CONTENT_FORMAT_CBOR};
use pehra_shared::driver::{security::secure_client, Endpoint, Router};
use pehra_shared::security::credentials::Credentials;
use pehra_shared::security::{broker_kid, zookeeper_kid};
use pehra_shared::wire::{
    self, CreateRequest, ErrorKind, Maintenance, MaintenanceState, PartitionMetadata,
    ReplicaFetchPartition, ReplicaFetchRequest,
};
use pehra_zookeeper::{Client, ClientOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TOPIC: &str = "guarded";

/// A request with a CBOR body.
fn cbor_request<T: serde::Serialize>(method: Method, path: &str, body: &T) -> Request {
    Request::new(method, path)
        .with_payload(wire::encode(body).unwrap())
        .with_content_format(CONTENT_FORMAT_CBOR)
}

/// A secure cluster: keys in `DIR/keys` (a zookeeper, brokers 1–3, the client `client`,
/// the device `sensor-1`, and broker-4, which never runs), every server started with its
/// credentials.
fn secure_cluster(name: &str) -> (TestCluster, PathBuf) {
    let builder = TestCluster::builder(name);
    let keys = builder.dir().join("keys");
    let (code, _, err) = pehra(&[
        "keys",
        "init",
        keys.to_str().unwrap(),
        "--devices",
        "sensor-1",
        // broker-4 has credentials but never runs: an impostor broker for the tests.
        "--brokers",
        "4",
    ]);
    assert_eq!(code, 0, "{err}");
    let cred = |name: &str| keys.join(format!("{name}.cred")).display().to_string();
    let cluster = builder
        .zookeeper_flags(&["--credentials", &cred("zookeeper")])
        .broker_flags(&["--session-timeout-ms", "3000"])
        .flags_of(1, &["--credentials", &cred("broker-1")])
        .flags_of(2, &["--credentials", &cred("broker-2")])
        .flags_of(3, &["--credentials", &cred("broker-3")])
        .start(3);
    (cluster, keys)
}

fn credentials(keys: &Path, name: &str) -> Arc<Credentials> {
    Arc::new(Credentials::load(keys.join(format!("{name}.cred"))).unwrap())
}

/// A zookeeper client speaking as `name`.
async fn zk_as(c: &TestCluster, keys: &Path, name: &str) -> Client {
    Client::without_session_secured(
        c.zk_addr,
        ClientOptions::default().coap,
        Some(&credentials(keys, name)),
    )
    .await
    .unwrap()
}

/// A CoAP endpoint: plain, or protected towards `server` (its key ID) as `name`.
async fn socket(as_name: Option<(&Path, &str)>, server: SocketAddr, kid: &[u8]) -> Endpoint {
    let endpoint = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config::default(),
        Router::new(),
    )
    .await
    .unwrap();
    if let Some((keys, name)) = as_name {
        secure_client(&endpoint.handle(), &credentials(keys, name), server, kid)
            .await
            .unwrap();
    }
    endpoint
}

async fn send(endpoint: &Endpoint, to: SocketAddr, request: Request) -> Response {
    tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.handle().request(to, request),
    )
    .await
    .expect("an answer in time")
    .expect("an answer")
}

fn reason(response: &Response) -> String {
    String::from_utf8_lossy(response.payload()).into_owned()
}

/// The topic, created and led, with the client's credentials.
async fn topic(c: &TestCluster, keys: &Path) -> ClusterClient {
    let client = ClusterClient::connect_secured(c.zk_addr, Some(credentials(keys, "client")))
        .await
        .unwrap();
    client.create_topic(TOPIC, 1, 3).await.unwrap();
    client
        .wait_for_leaders(TOPIC, Duration::from_secs(20))
        .await
        .unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_socket_can_do_nothing() {
    let (c, keys) = secure_cluster("sec-plain");
    topic(&c, &keys).await;
    let plain = socket(None, c.zk_addr, &[]).await;
    // The remote shell: an order znode for broker 2.
    let order = wire::encode(&Maintenance {
        id: 1,
        command: Some("reboot".into()),
        state: MaintenanceState::Requested,
        message: None,
    })
    .unwrap();
    let create = CreateRequest {
        data: order,
        ephemeral: false,
        sequential: false,
        session: None,
        request: None,
    };
    let answer = send(
        &plain,
        c.zk_addr,
        cbor_request(Method::Post, "z/pehra/maintenance/broker-2", &create),
    )
    .await;
    assert_eq!(answer.code(), Code::UNAUTHORIZED, "{}", reason(&answer));
    assert!(reason(&answer).contains("OSCORE"));
    // Reads, deletes, sessions, the PEHRA switch: all refused.
    for request in [
        Request::get("z/brokers/ids"),
        Request::delete("z/topics/guarded"),
        Request::post("session"),
        Request::post("pehra/mode"),
    ] {
        let answer = send(&plain, c.zk_addr, request).await;
        assert_eq!(answer.code(), Code::UNAUTHORIZED);
    }
    // Brokers alike: a forged replica fetch, a produce, a topic delete through /ps.
    let forged = ReplicaFetchRequest {
        replica: 2,
        max_wait_ms: 0,
        max_bytes: 1024,
        partitions: vec![ReplicaFetchPartition {
            topic: TOPIC.into(),
            partition: 0,
            offset: u64::MAX,
            leader_epoch: u32::MAX,
            last_fetched_epoch: None,
            high_watermark: None,
        }],
    };
    for id in 1..=3 {
        let answer = send(
            &plain,
            c.addr(id),
            cbor_request(Method::Post, "replica", &forged),
        )
        .await;
        assert_eq!(answer.code(), Code::UNAUTHORIZED);
        let answer = send(&plain, c.addr(id), Request::delete(&format!("ps/{TOPIC}"))).await;
        assert_eq!(answer.code(), Code::UNAUTHORIZED);
        // The Pehredar's wake call: a stranger cannot keep the cluster awake either.
        let answer = send(&plain, c.addr(id), Request::post("pehra/wake")).await;
        assert_eq!(answer.code(), Code::UNAUTHORIZED);
    }
    // Nothing changed.
    let zk = zk_as(&c, &keys, "admin").await;
    assert!(zk
        .exists(&cluster::pehra_maintenance_path("broker-2"))
        .await
        .unwrap()
        .is_none());
    assert!(zk
        .exists(&cluster::topic_path(TOPIC))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_identities_may_do_only_what_their_role_allows() {
    let (c, keys) = secure_cluster("sec-acl");
    topic(&c, &keys).await;
    let client = zk_as(&c, &keys, "client").await;
    // A client may not touch the cluster's own znodes.
    for path in [
        "/brokers/ids/9",
        "/pehra/maintenance/broker-2",
        "/pehra/admin",
    ] {
        let err = client
            .create(path, b"x", pehra_zookeeper::CreateMode::Persistent)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("may not"), "{path}: {err}");
    }
    let err = client
        .set_data(&cluster::partition_path(TOPIC, 0), b"x", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("may not"), "{err}");
    // Nor use a broker's session (its id is public: the owner of its registration).
    let owner = client
        .exists(&cluster::broker_path(1))
        .await
        .unwrap()
        .unwrap()
        .ephemeral_owner
        .expect("a broker's registration is ephemeral");
    let admin_socket = socket(Some((&keys, "client")), c.zk_addr, &zookeeper_kid()).await;
    let answer = send(
        &admin_socket,
        c.zk_addr,
        Request::delete(&format!("session/{owner}")),
    )
    .await;
    assert_eq!(answer.code(), Code::FORBIDDEN, "{}", reason(&answer));
    assert!(
        reason(&answer).contains("belongs to broker-1"),
        "{}",
        reason(&answer)
    );
    let answer = send(
        &admin_socket,
        c.zk_addr,
        Request::post(&format!("session/{owner}/hb")),
    )
    .await;
    assert_eq!(answer.code(), Code::FORBIDDEN);
    // A client may not fetch as a replica; broker 2 may not fetch as broker 3.
    let state: PartitionMetadata = {
        let (data, _) = client
            .get_data(&cluster::partition_path(TOPIC, 0))
            .await
            .unwrap();
        wire::decode(&data).unwrap()
    };
    let leader = state.leader.unwrap();
    let impostor = *state.replicas.iter().find(|&&r| r != leader).unwrap();
    let victim = *state
        .replicas
        .iter()
        .find(|&&r| r != leader && r != impostor)
        .unwrap();
    let fetch = |replica: u32| ReplicaFetchRequest {
        replica,
        max_wait_ms: 0,
        max_bytes: 1024,
        partitions: vec![ReplicaFetchPartition {
            topic: TOPIC.into(),
            partition: 0,
            offset: 0,
            leader_epoch: state.leader_epoch,
            last_fetched_epoch: None,
            high_watermark: None,
        }],
    };
    let leader_addr = c.addr(leader);
    let as_client = socket(Some((&keys, "client")), leader_addr, &broker_kid(leader)).await;
    let answer = send(
        &as_client,
        leader_addr,
        cbor_request(Method::Post, "replica", &fetch(victim)),
    )
    .await;
    assert_eq!(answer.code(), Code::FORBIDDEN, "{}", reason(&answer));
    let as_broker = socket(
        Some((&keys, &format!("broker-{impostor}"))),
        leader_addr,
        &broker_kid(leader),
    )
    .await;
    let answer = send(
        &as_broker,
        leader_addr,
        cbor_request(Method::Post, "replica", &fetch(victim)),
    )
    .await;
    assert_eq!(answer.code(), Code::FORBIDDEN, "{}", reason(&answer));
    assert!(reason(&answer).contains(&format!("only broker {victim} itself")));
    // A device may publish its readings but not delete a topic.
    let as_device = socket(Some((&keys, "sensor-1")), leader_addr, &broker_kid(leader)).await;
    let answer = send(
        &as_device,
        leader_addr,
        Request::delete(&format!("ps/{TOPIC}")),
    )
    .await;
    assert_eq!(answer.code(), Code::FORBIDDEN, "{}", reason(&answer));
    // It may check in with PEHRA, but not make the Pehredar's wake call: a device could
    // otherwise keep every broker from sleeping.
    let answer = send(&as_device, leader_addr, Request::post("pehra/wake")).await;
    assert_eq!(answer.code(), Code::FORBIDDEN, "{}", reason(&answer));
    assert!(
        reason(&answer).contains("/pehra/wake"),
        "{}",
        reason(&answer)
    );
    // A broker may write partition states (a leader's in-sync set), but not name itself
    // leader of a partition, nor touch one it is not a replica of; the zookeeper checks
    // the change against the state as it stands (the leader's own changes: unit tests
    // in `cluster::broker_writes`).
    let impostor = zk_as(&c, &keys, "broker-4").await;
    let path = cluster::partition_path(TOPIC, 0);
    let (data, _) = impostor.get_data(&path).await.unwrap();
    let mut state: PartitionMetadata = wire::decode(&data).unwrap();
    state.leader = Some(4);
    state.leader_epoch += 1;
    state.isr = vec![4];
    let err = impostor
        .set_data(&path, &wire::encode(&state).unwrap(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Forbidden), "{err}");
    assert!(err.to_string().contains("not a replica"), "{err}");
    let now: PartitionMetadata = wire::decode(&impostor.get_data(&path).await.unwrap().0).unwrap();
    assert_ne!(now.leader, Some(4), "nothing changed");
    // The topic, its partition and the brokers' registrations are all still there.
    let zk = zk_as(&c, &keys, "admin").await;
    assert!(zk
        .exists(&cluster::topic_path(TOPIC))
        .await
        .unwrap()
        .is_some());
    assert!(zk.exists(&cluster::broker_path(1)).await.unwrap().is_some());
    assert!(zk.exists("/brokers/ids/9").await.unwrap().is_none());
}

/// `POST /suspect/PATH` with security on: a client may report a broker (it may read its
/// registration), the zookeeper's pings reach it and its Reset comes back (a live broker
/// keeps its session), and neither a plain socket nor a device may report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_report_a_broker_and_a_live_one_answers_the_probe() {
    let (c, keys) = secure_cluster("sec-suspect");
    topic(&c, &keys).await;
    let client = zk_as(&c, &keys, "client").await;
    let path = cluster::broker_path(1);
    let owner = |stat: Option<wire::Stat>| stat.and_then(|s| s.ephemeral_owner);
    let before = owner(client.exists(&path).await.unwrap());
    assert!(before.is_some());
    client
        .suspect(&path)
        .await
        .expect("a client may report a broker");
    // The probe's window is one second: a broker whose Reset did not come back would
    // lose its session in it (its own lease is 3 s, renewed by heartbeats).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        owner(client.exists(&path).await.unwrap()),
        before,
        "the same session"
    );

    let plain = socket(None, c.zk_addr, &zookeeper_kid()).await;
    let answer = send(&plain, c.zk_addr, Request::post(&format!("suspect{path}"))).await;
    assert_eq!(answer.code(), Code::UNAUTHORIZED, "{}", reason(&answer));
    let device = zk_as(&c, &keys, "sensor-1").await;
    let err = device.suspect(&path).await.unwrap_err();
    assert!(err.to_string().contains("may not"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_cluster_serves_its_client_and_the_cli_end_to_end() {
    let (c, keys) = secure_cluster("sec-e2e");
    let client = topic(&c, &keys).await;
    let records: Vec<wire::Record> = (0..20)
        .map(|i| wire::Record {
            key: None,
            value: format!("r{i}").into_bytes(),
            timestamp_ms: 0,
            headers: Vec::new(),
        })
        .collect();
    let ack = client
        .produce(TOPIC, 0, &records, wire::Acks::All, Some((7, 0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.record_count, 20);
    // The CLI with the client's credentials, and without.
    let z = c.zk_addr.to_string();
    let cred = keys.join("client.cred").display().to_string();
    let (code, out, err) = pehra(&[
        "consume",
        TOPIC,
        "--from-beginning",
        "--max",
        "20",
        "--zookeeper",
        &z,
        "--credentials",
        &cred,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 20, "{out}");
    let (code, _, err) = pehra(&["topic", "list", "--zookeeper", &z]);
    assert_ne!(code, 0);
    assert!(err.contains("OSCORE"), "{err}");
    // Raw CoAP with the payload protected: a 2.04 on a PUT to pub-sub topic data.
    let leader = client.metadata().leader(TOPIC, 0).unwrap();
    let id = client
        .metadata()
        .brokers
        .values()
        .find(|b| b.addr.parse::<SocketAddr>().ok() == Some(leader))
        .unwrap()
        .id;
    let s = socket(Some((&keys, "client")), leader, &broker_kid(id)).await;
    let put = Request::new(Method::Put, &format!("ps/data/{TOPIC}"))
        .with_payload(*b"21.5")
        .with_content_format(CONTENT_FORMAT_CBOR);
    let answer = send(&s, leader, put).await;
    assert!(
        answer.code().is_success(),
        "{:?} {}",
        answer.code(),
        reason(&answer)
    );
}

/// The pub-sub interface with security on: an authorized client creates, publishes to
/// and deletes a topic through a broker (the broker writes the topic's znodes as the
/// requester's deputy, after checking the requester's own right); a device, which may
/// not create topics, is refused 4.03 and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pubsub_interface_works_for_an_authorized_client_and_refuses_a_device() {
    let (c, keys) = secure_cluster("sec-pubsub");
    let broker = c.addr(1);
    let properties = |name: &str| {
        let map = ciborium::Value::Map(vec![
            (0.into(), name.into()),
            (2.into(), "core.ps.data".into()),
        ]);
        Request::post("ps")
            .with_payload(wire::encode(&map).unwrap())
            .with_content_format(CONTENT_FORMAT_CBOR)
    };
    let device = socket(Some((&keys, "sensor-1")), broker, &broker_kid(1)).await;
    let answer = send(&device, broker, properties("ps-by-device")).await;
    assert_eq!(answer.code(), Code::FORBIDDEN, "{}", reason(&answer));

    let client = socket(Some((&keys, "client")), broker, &broker_kid(1)).await;
    let answer = send(&client, broker, properties("ps-sec")).await;
    assert_eq!(answer.code(), Code::CREATED, "{}", reason(&answer));
    let zk = zk_as(&c, &keys, "client").await;
    assert!(zk.exists("/topics/ps-sec").await.unwrap().is_some());
    assert!(zk.exists("/topics/ps-by-device").await.unwrap().is_none());

    let publish = Request::put("ps/data/ps-sec").with_payload(b"21.5".to_vec());
    let answer = send(&client, broker, publish).await;
    assert!(answer.code().is_success(), "{}", reason(&answer));
    let answer = send(&client, broker, Request::get("ps/data/ps-sec")).await;
    assert_eq!(answer.code(), Code::CONTENT, "{}", reason(&answer));
    assert_eq!(answer.payload(), b"21.5");

    let answer = send(&client, broker, Request::delete("ps/ps-sec")).await;
    assert_eq!(answer.code(), Code::DELETED, "{}", reason(&answer));
    assert!(zk.exists("/topics/ps-sec").await.unwrap().is_none());
}

/// Sends `request` until the answer's code is `code` (the servers install reloaded
/// keys asynchronously after SIGHUP), for at most 15 s; the last answer.
async fn until_code(endpoint: &Endpoint, to: SocketAddr, path: &str, code: Code) -> Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = send(endpoint, to, Request::get(path)).await;
        if answer.code() == code || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_is_locked_out_of_running_servers_on_sighup_and_an_added_one_let_in() {
    let (c, keys) = secure_cluster("sec-reload");
    let zk_kid = zookeeper_kid();
    let as_client_zk = socket(Some((&keys, "client")), c.zk_addr, &zk_kid).await;
    let as_client_broker = socket(Some((&keys, "client")), c.addr(1), &broker_kid(1)).await;
    let as_admin_zk = socket(Some((&keys, "admin")), c.zk_addr, &zk_kid).await;
    for (endpoint, to, path) in [
        (&as_client_zk, c.zk_addr, "z/brokers/ids"),
        (&as_client_broker, c.addr(1), "ps"),
        (&as_admin_zk, c.zk_addr, "z/brokers/ids"),
    ] {
        let answer = send(endpoint, to, Request::get(path)).await;
        assert_eq!(answer.code(), Code::CONTENT, "{path}: {}", reason(&answer));
    }
    let dir = keys.to_str().unwrap();
    let (code, _, err) = pehra(&["keys", "revoke", dir, "client"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = pehra(&["keys", "add", dir, "carol", "--role", "client"]);
    assert_eq!(code, 0, "{err}");
    // The servers' files were rewritten in place; SIGHUP makes them load them again.
    common::unsafe_kill(c.zookeeper.as_ref().unwrap().child.id(), "HUP");
    for id in 1..=3 {
        common::unsafe_kill(c.pid(id), "HUP");
    }
    let refused = until_code(
        &as_client_zk,
        c.zk_addr,
        "z/brokers/ids",
        Code::UNAUTHORIZED,
    )
    .await;
    assert_eq!(refused.code(), Code::UNAUTHORIZED, "{}", reason(&refused));
    let refused = until_code(&as_client_broker, c.addr(1), "ps", Code::UNAUTHORIZED).await;
    assert_eq!(refused.code(), Code::UNAUTHORIZED, "{}", reason(&refused));
    // Everyone else goes on in the contexts they had; the new identity is let in.
    let answer = send(&as_admin_zk, c.zk_addr, Request::get("z/brokers/ids")).await;
    assert_eq!(answer.code(), Code::CONTENT, "{}", reason(&answer));
    let as_carol_zk = socket(Some((&keys, "carol")), c.zk_addr, &zk_kid).await;
    let answer = send(&as_carol_zk, c.zk_addr, Request::get("z/brokers/ids")).await;
    assert_eq!(answer.code(), Code::CONTENT, "{}", reason(&answer));
    let as_carol_broker = socket(Some((&keys, "carol")), c.addr(1), &broker_kid(1)).await;
    let answer = send(&as_carol_broker, c.addr(1), Request::get("ps")).await;
    assert_eq!(answer.code(), Code::CONTENT, "{}", reason(&answer));
    // Every server is still running (a reload is no restart).
    assert!(send(&as_admin_zk, c.zk_addr, Request::get("z/brokers/ids"))
        .await
        .code()
        .is_success());
}
