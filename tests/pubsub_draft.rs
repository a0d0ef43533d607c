//! Golden tests from the examples of draft-ietf-core-coap-pubsub-21, sent with aiocoap
//! (payloads in the draft's CBOR diagnostic notation, comments included) to a real
//! cluster. Where this broker's answer differs from the example it is said why (the
//! broker names topic URIs after the topic-name; topic-data lives on the broker).

mod common;

use common::aiocoap::{code, diag, option, options, request, requests, text, Observer};
use common::TestCluster;
use pehra_broker::client::ClusterClient;
use serde_json::{json, Value};
use std::time::Duration;

const ETAG: u64 = 4;
const LOCATION_PATH: u64 = 8;
const CONTENT_FORMAT: u64 = 12;
/// `application/core-pubsub+cbor`: "TBD606" in the draft.
const CF_PUBSUB: u64 = 606;
/// `application/concise-problem-details+cbor` (RFC 9290).
const CF_PROBLEM: u64 = 257;

fn hex_uint(v: u64) -> String {
    match v {
        0 => String::new(),
        v if v < 256 => format!("{v:02x}"),
        v => format!("{v:04x}"),
    }
}

fn wait_for_leaders(c: &TestCluster, topic: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = ClusterClient::connect(c.zk_addr).await.unwrap();
        client
            .wait_for_leaders(topic, Duration::from_secs(20))
            .await
            .unwrap();
    });
}

#[test]
fn the_drafts_examples_from_discovery_to_deletion() {
    let c = TestCluster::builder("ps-draft").start(2);
    let base = format!("coap://{}", c.addr(1));
    let uri = |path: &str| format!("{base}/{path}");
    let topic = uri("ps/living-room-sensor");
    let data = uri("ps/data/living-room-sensor");

    // §2.3.2 Topic collection discovery.
    let found = request(json!({"method": "GET", "uri": uri(".well-known/core?rt=core.ps.coll")}));
    assert_eq!(text(&found), r#"</ps>;rt="core.ps.coll";ct=40"#);

    // §2.4.3 Creating a topic.
    let created = request(
        json!({"method": "POST", "uri": uri("ps"), "content_format": CF_PUBSUB,
        "payload_diag": r#"{
            / topic-name /         0: "living-room-sensor",
            / resource-type /      2: "core.ps.data"
        }"#}),
    );
    assert_eq!(code(&created), "2.01", "{created}");
    assert_eq!(
        options(&created, LOCATION_PATH),
        [hex::encode("ps"), hex::encode("living-room-sensor")]
    );
    assert_eq!(option(&created, CONTENT_FORMAT), Some(hex_uint(CF_PUBSUB)));
    assert_eq!(
        diag(&created),
        r#"{0:"living-room-sensor",1:"/ps/data/living-room-sensor",2:"core.ps.data",-65537:1,-65538:1}"#
    );
    wait_for_leaders(&c, "living-room-sensor");

    // §2.4.1 Retrieving all topics; §2.3.4 topic-data discovery; §2.4.2 FETCH filter.
    let r = requests(&json!([
        {"method": "GET", "uri": uri("ps")},
        {"method": "GET", "uri": uri("ps?rt=core.ps.data")},
        {"method": "GET", "uri": uri("ps?rt=core.ps.conf")},
        {"method": "GET", "uri": uri("ps?href=/ps/data/living*")},
        {"method": "FETCH", "uri": uri("ps"), "content_format": CF_PUBSUB, "payload_diag": r#"{
            / topic-name /         0: "temperature",
            / resource-type /      2: "core.ps.data"
        }"#},
        {"method": "FETCH", "uri": uri("ps"), "content_format": CF_PUBSUB, "payload_diag": r#"{
            / topic-name /         0: "living-room-sensor",
            / resource-type /      2: "core.ps.data"
        }"#},
    ]));
    assert!(r.iter().all(|r| code(r) == "2.05"), "{r:#?}");
    assert_eq!(text(&r[0]), r#"</ps/living-room-sensor>;rt="core.ps.conf""#);
    assert_eq!(
        text(&r[1]),
        r#"</ps/data/living-room-sensor>;rt="core.ps.data";obs"#
    );
    assert_eq!(text(&r[2]), r#"</ps/living-room-sensor>;rt="core.ps.conf""#);
    assert_eq!(
        text(&r[3]),
        r#"</ps/data/living-room-sensor>;rt="core.ps.data";obs"#
    );
    assert_eq!(text(&r[4]), "", "no topic is called temperature");
    assert_eq!(text(&r[5]), "</ps/living-room-sensor>");
    assert_eq!(option(&r[5], CONTENT_FORMAT), Some(hex_uint(40)));

    // (cbor-diag shows tag 1, an epoch date, as DT'...'.)
    // §2.5.3 Updating the topic (POST replaces): the example, with this broker's
    // topic-data URI (immutable) and an expiration-date still in the future.
    let updated = request(
        json!({"method": "POST", "uri": topic, "content_format": CF_PUBSUB,
        "payload_diag": r#"{
            / topic-name /            0: "living-room-sensor",
            / topic-data /            1: "/ps/data/living-room-sensor",
            / resource-type /         2: "core.ps.data",
            / topic-content-format /  3: 112,
            / topic-type /            4: "temperature",
            / expiration-date /       5: 1(4102444799)
        }"#}),
    );
    assert_eq!(code(&updated), "2.04", "{updated}");
    assert_eq!(
        diag(&updated),
        r#"{0:"living-room-sensor",1:"/ps/data/living-room-sensor",2:"core.ps.data",3:112,4:"temperature",5:DT'2099-12-31T23:59:59+00:00',-65537:1,-65538:1}"#
    );

    // §2.5.4 iPATCH: only what is given changes (max-subscribers is a hint this broker
    // does not store, as -21 allows).
    let patched = request(
        json!({"method": "iPATCH", "uri": topic, "content_format": CF_PUBSUB,
        "payload_diag": r#"{
            / expiration-date /  5: 1(4102444800),
            / max-subscribers /  6: 5
        }"#}),
    );
    assert_eq!(code(&patched), "2.04", "{patched}");
    assert!(
        diag(&patched).contains(r#"4:"temperature",5:DT'2100-01-01T00:00:00+00:00',"#),
        "{}",
        diag(&patched)
    );

    // §2.5.1 Getting a topic; §2.5.2 getting part of it.
    let r = requests(&json!([
        {"method": "GET", "uri": topic},
        {"method": "FETCH", "uri": topic, "content_format": 60, "payload_diag": "[1, 3]"},
    ]));
    assert_eq!(code(&r[0]), "2.05");
    assert_eq!(diag(&r[0]), diag(&patched));
    assert_eq!(option(&r[0], ETAG), option(&patched, ETAG));
    assert_eq!(code(&r[1]), "2.05");
    assert_eq!(diag(&r[1]), r#"{1:"/ps/data/living-room-sensor",3:112}"#);

    // §3.1: HALF CREATED until the first publication: no reading, no subscribing.
    let (_, first) = Observer::start(&data);
    assert!(first.starts_with("first 4.04"), "{first}");

    // §3.2.1 Publish: the examples use Content-Format 110, the topic says 112: 4.15.
    let senml = |t: u64, v: &str| {
        format!(
            r#"{{ "n": "coaps://dev1.example.com/temperature", "u": "Cel", "t": {t}, "v": {v} }}"#
        )
    };
    let r = requests(&json!([
        {"method": "PUT", "uri": data, "content_format": 110, "payload_diag": senml(1621452122, "23.5")},
        {"method": "iPATCH", "uri": topic, "content_format": CF_PUBSUB, "payload_diag": "{3: 110}"},
        {"method": "PUT", "uri": data, "content_format": 110, "payload_diag": senml(1621452122, "23.5")},
    ]));
    let codes: Vec<&str> = r.iter().map(code).collect();
    assert_eq!(codes, ["4.15", "2.04", "2.01"], "{r:#?}");
    assert_eq!(option(&r[0], CONTENT_FORMAT), Some(hex_uint(CF_PROBLEM)));

    // §3.2.2 Subscribe, and a subsequent publication (2.04) is notified.
    let (mut subscriber, first) = Observer::start(&data);
    assert!(first.starts_with("first 2.05"), "{first}");
    let second = request(json!({"method": "PUT", "uri": data, "content_format": 110,
        "payload_diag": senml(1621452149, "22.5")}));
    assert_eq!(code(&second), "2.04");
    assert!(subscriber.next().unwrap().starts_with("notification 2.05"));

    // §3.3 Read the latest data (the same bytes: 22.5 went as a half float, `_1`).
    let latest = request(json!({"method": "GET", "uri": data}));
    assert_eq!(code(&latest), "2.05");
    assert_eq!(option(&latest, CONTENT_FORMAT), Some(hex_uint(110)));
    assert_eq!(
        diag(&latest),
        r#"{"n":"coaps://dev1.example.com/temperature","u":"Cel","t":1621452149,"v":22.5_1}"#
    );
    assert_eq!(option(&latest, ETAG), option(&second, ETAG));

    // §3.2.4 Delete topic-data: subscribers get a final 4.04; back to HALF CREATED.
    let r = requests(&json!([
        {"method": "DELETE", "uri": data},
        {"method": "GET", "uri": data},
    ]));
    assert_eq!(code(&r[0]), "2.02");
    assert_eq!(code(&r[1]), "4.04");
    assert_eq!(subscriber.next().as_deref(), Some("ended 4.04"));

    // §2.5.5 Deleting a topic; again: 4.04 (a successful deletion, the draft says).
    let r = requests(&json!([
        {"method": "DELETE", "uri": topic},
        {"method": "DELETE", "uri": topic},
        {"method": "GET", "uri": topic},
    ]));
    let codes: Vec<&str> = r.iter().map(code).collect();
    assert_eq!(codes, ["2.02", "4.04", "4.04"], "{r:#?}");
}

/// A refused creation: its code, and the title and detail of the RFC 9290 problem
/// details it carries (`{-1: title, -2: detail}`).
fn refused(body: Value) -> (String, String) {
    let answer = request(body);
    assert_eq!(
        option(&answer, CONTENT_FORMAT),
        Some(hex_uint(CF_PROBLEM)),
        "{answer}"
    );
    let bytes = hex::decode(answer["payload_hex"].as_str().unwrap()).unwrap();
    let problem: ciborium::Value = ciborium::from_reader(bytes.as_slice()).unwrap();
    let field = |key: i64| {
        problem
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_integer() == Some(key.into()))
            .and_then(|(_, v)| v.as_text())
            .unwrap_or_default()
            .to_string()
    };
    (
        code(&answer).to_string(),
        format!("{}: {}", field(-1), field(-2)),
    )
}

#[test]
fn bad_creations_are_refused_with_problem_details() {
    let c = TestCluster::builder("ps-draft-bad").start(1);
    let ps = format!("coap://{}/ps", c.addr(1));
    let create = |cf: u64, body: &str| json!({"method": "POST", "uri": ps, "content_format": cf, "payload_diag": body});
    let good = r#"{0: "t", 2: "core.ps.data"}"#;
    // A CBOR body said to be text, or JSON: 4.15 (it was created, or 4.00).
    assert_eq!(refused(create(0, good)).0, "4.15");
    assert_eq!(refused(create(50, good)).0, "4.15");
    assert_eq!(
        refused(create(CF_PUBSUB, r#"{0: "t", 99: 1}"#)),
        (
            "4.00".into(),
            "Bad Request: unrecognized topic property 99".into()
        )
    );
    assert_eq!(
        refused(create(
            CF_PUBSUB,
            r#"{"topic-name": "t", "colour": "blue"}"#
        ))
        .0,
        "4.00"
    );
    assert_eq!(
        refused(create(CF_PUBSUB, r#"{2: "core.ps.data"}"#)).0,
        "4.00",
        "no name"
    );
    assert_eq!(
        refused(create(CF_PUBSUB, r#"{0: 7}"#)).0,
        "4.00",
        "a name must be text"
    );
    assert_eq!(
        refused(create(CF_PUBSUB, r#"{0: "a/b"}"#)).0,
        "4.00",
        "not a topic name"
    );
    assert_eq!(
        refused(create(CF_PUBSUB, r#"{0: "t", 8: h'80'}"#)).0,
        "4.00",
        "initialize needs topic-content-format"
    );
    assert_eq!(
        refused(create(CF_PUBSUB, r#"{0: "t", 5: 1(1680393599)}"#)).0,
        "4.00",
        "expired already"
    );
    assert_eq!(
        refused(create(CF_PUBSUB, r#"{0: "t", 1: "/elsewhere"}"#)).0,
        "4.00",
        "topic-data is hosted here"
    );
    // Nothing was created; then a good one is, once.
    let listing = request(json!({"method": "GET", "uri": ps}));
    assert_eq!(text(&listing), "");
    assert_eq!(code(&request(create(CF_PUBSUB, good))), "2.01");
    assert_eq!(
        refused(create(CF_PUBSUB, good)).0,
        "4.00",
        "topic-name in use"
    );
}

#[test]
fn initialize_text_keys_and_the_replication_extension() {
    let c = TestCluster::builder("ps-draft-init").start(2);
    let ps = format!("coap://{}/ps", c.addr(2));
    // "initialize" (§2.2.1): subscribable at once, with the given representation.
    let created = request(
        json!({"method": "POST", "uri": ps, "content_format": CF_PUBSUB,
        "payload_diag": r#"{0: "init", 2: "core.ps.data", 3: 60, 8: h'80'}"#}),
    );
    assert_eq!(code(&created), "2.01", "{created}");
    let (_, first) = Observer::start(&format!("coap://{}/ps/data/init", c.addr(1)));
    assert!(first.starts_with("first 2.05"), "{first}");
    let latest =
        request(json!({"method": "GET", "uri": format!("coap://{}/ps/data/init", c.addr(1))}));
    assert_eq!(latest["payload_hex"], "80");
    assert_eq!(option(&latest, CONTENT_FORMAT), Some(hex_uint(60)));

    // Text keys, an alternative resource-type, and the extension properties.
    let created = request(json!({"method": "POST", "uri": ps, "content_format": 60,
        "payload_diag": r#"{"topic-name": "wide", "resource-type": "example.data",
            "partitions": 2, "replication-factor": 2}"#}));
    assert_eq!(code(&created), "2.01", "{created}");
    assert_eq!(
        option(&created, CONTENT_FORMAT),
        Some(hex_uint(60)),
        "answered in the request's format"
    );
    assert_eq!(
        diag(&created),
        r#"{0:"wide",1:"/ps/data/wide",2:"example.data",-65537:2,-65538:2}"#
    );
    wait_for_leaders(&c, "wide");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = rt.block_on(async {
        let client = ClusterClient::connect(c.zk_addr).await.unwrap();
        client.refresh().await.unwrap().topics["wide"].config
    });
    assert_eq!((config.partitions, config.replication_factor), (2, 2));
    let listing = request(json!({"method": "GET", "uri": format!("{ps}?rt=example.data")}));
    assert_eq!(text(&listing), r#"</ps/data/wide>;rt="example.data";obs"#);
    // Immutable after creation.
    let changed = request(
        json!({"method": "iPATCH", "uri": format!("{ps}/wide"), "content_format": 60,
        "payload_diag": "{-65538: 1}"}),
    );
    assert_eq!(code(&changed), "4.00");
}

#[test]
fn an_expired_topic_is_deleted_and_its_subscribers_are_told() {
    let c = TestCluster::builder("ps-draft-expiry").start(1);
    let ps = format!("coap://{}/ps", c.addr(1));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // "expiration-date" (§2.2.1): the topic is deleted then (§2.5.5).
    let created = request(
        json!({"method": "POST", "uri": ps, "content_format": CF_PUBSUB,
        "payload_diag": format!("{{0: \"brief\", 5: 1({}), 3: 0, 8: h'6869'}}", now + 6)}),
    );
    assert_eq!(code(&created), "2.01", "{created}");
    let (mut subscriber, first) = Observer::start(&format!("{ps}/data/brief"));
    assert_eq!(first, "first 2.05 hi");
    assert_eq!(subscriber.next().as_deref(), Some("ended 4.04"));
    let r = requests(&json!([
        {"method": "GET", "uri": format!("{ps}/brief")},
        {"method": "GET", "uri": ps},
    ]));
    assert_eq!(code(&r[0]), "4.04");
    assert_eq!(text(&r[1]), "", "no topic left");
}
