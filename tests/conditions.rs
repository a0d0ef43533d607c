//! Conditional requests (RFC 7252 §5.10.8) from a standard client (aiocoap): If-Match
//! (a value, or empty = "exists") and If-None-Match on the zookeeper's znodes and the
//! broker's pub-sub resources; a failed condition is 4.12 and writes nothing.

mod common;

use common::aiocoap::{code, diag, option, requests, text};
use common::{free_udp_port, TempDir, TestCluster, Zookeeper};
use serde_json::json;
use std::time::Duration;

const IF_MATCH: u64 = 1;
const ETAG: u64 = 4;
const IF_NONE_MATCH: u64 = 5;

#[test]
fn znode_writes_obey_if_match_and_if_none_match() {
    let dir = TempDir::new("cond-zk");
    let zk = Zookeeper::start(
        &dir.path().join("zk"),
        format!("127.0.0.1:{}", free_udp_port()).parse().unwrap(),
    );
    let uri = format!("coap://{}/z/a", zk.addr);
    let set = |value: &str| format!("{{\"data\": h'{value}'}}");
    let create = json!({"method": "POST", "uri": uri,
        "payload_diag": "{\"data\": h'01', \"ephemeral\": false, \"sequential\": false}"});
    let get = json!({"method": "GET", "uri": uri});
    let r = requests(&json!([
        // Absent: If-Match (empty or a value) fails, If-None-Match on a create holds.
        {"method": "PUT", "uri": uri, "options": [[IF_MATCH, ""]], "payload_diag": set("02")},
        {"method": "DELETE", "uri": uri, "options": [[IF_MATCH, ""]]},
        create,
        // Present at version 0 (ETag 00000000).
        {"method": "PUT", "uri": uri, "options": [[IF_NONE_MATCH, ""]], "payload_diag": set("03")},
        {"method": "POST", "uri": uri, "options": [[IF_NONE_MATCH, ""]],
            "payload_diag": "{\"data\": h'04', \"ephemeral\": false, \"sequential\": false}"},
        {"method": "PUT", "uri": uri, "options": [[IF_MATCH, "00000007"]], "payload_diag": set("05")},
        {"method": "PUT", "uri": uri, "options": [[IF_MATCH, "07"]], "payload_diag": set("05")},
        get,
        // Matching conditions write.
        {"method": "PUT", "uri": uri, "options": [[IF_MATCH, ""]], "payload_diag": set("06")},
        {"method": "PUT", "uri": uri, "options": [[IF_MATCH, "09"], [IF_MATCH, "00000001"]],
            "payload_diag": set("07")},
        {"method": "DELETE", "uri": uri, "options": [[IF_MATCH, "00000001"]]},
        get,
        {"method": "DELETE", "uri": uri, "options": [[IF_MATCH, "00000002"]]},
        get,
    ]));
    let codes: Vec<&str> = r.iter().map(code).collect();
    assert_eq!(
        codes,
        [
            "4.12", "4.12", "2.01", "4.12", "4.12", "4.12", "4.12", "2.05", "2.04", "2.04", "4.12",
            "2.05", "2.02", "4.04"
        ],
        "{r:#?}"
    );
    assert!(
        r[7]["payload_diag"].as_str().unwrap().contains("h'01'"),
        "no failed condition wrote: {}",
        r[7]
    );
    assert_eq!(option(&r[7], ETAG).as_deref(), Some("00000000"));
    assert!(r[11]["payload_diag"].as_str().unwrap().contains("h'07'"));
    assert_eq!(option(&r[11], ETAG).as_deref(), Some("00000002"));

    // Writers of one version at once: one wins.
    let r = requests(&json!([create]));
    assert_eq!(code(&r[0]), "2.01");
    let writers: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            json!({"method": "PUT", "uri": uri, "options": [[IF_MATCH, "00000000"]],
            "payload_diag": set(&format!("{i:02x}"))})
        })
        .collect();
    let answers: Vec<String> = common::aiocoap::requests_together(&json!(writers))
        .iter()
        .map(|a| code(a).to_string())
        .collect();
    assert_eq!(
        answers.iter().filter(|c| *c == "2.04").count(),
        1,
        "{answers:?}"
    );
}

/// A cluster of `n` brokers with topic `t` (one partition) created through `/ps`.
fn cluster_with_topic(name: &str, n: u32) -> TestCluster {
    let c = TestCluster::builder(name).start(n);
    let created = common::aiocoap::request(json!({"method": "POST",
        "uri": format!("coap://{}/ps", c.addr(1)), "content_format": 60,
        "payload_diag": "{0: \"t\", 2: \"core.ps.data\"}"}));
    assert_eq!(code(&created), "2.01", "{created}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = pehra_broker::client::ClusterClient::connect(c.zk_addr)
            .await
            .unwrap();
        client
            .wait_for_leaders("t", Duration::from_secs(20))
            .await
            .unwrap();
    });
    c
}

#[test]
fn topic_data_writes_obey_if_match_and_if_none_match() {
    let c = cluster_with_topic("cond-data", 1);
    let uri = format!("coap://{}/ps/data/t", c.addr(1));
    let put = |value: &str, options: serde_json::Value| json!({"method": "PUT", "uri": uri, "payload": value, "content_format": 0, "options": options});
    let get = json!({"method": "GET", "uri": uri});
    let r = requests(&json!([
        // HALF CREATED: the resource does not exist.
        put("x", json!([[IF_MATCH, ""]])),
        put("a", json!([[IF_NONE_MATCH, ""]])),
        // FULLY CREATED: If-None-Match fails (it was answered 2.04 and overwrote).
        put("b", json!([[IF_NONE_MATCH, ""]])),
        put("b", json!([[IF_MATCH, "0102"]])),
        get,
    ]));
    let codes: Vec<&str> = r.iter().map(code).collect();
    assert_eq!(codes, ["4.12", "2.01", "4.12", "4.12", "2.05"], "{r:#?}");
    assert_eq!(text(&r[4]), "a", "no failed condition wrote");
    let etag = option(&r[4], ETAG).expect("topic data has an ETag");
    assert_eq!(
        option(&r[1], ETAG).as_deref(),
        Some(etag.as_str()),
        "the PUT's ETag is the representation's"
    );

    let r = requests(&json!([
        put("c", json!([[IF_MATCH, "00"], [IF_MATCH, etag]])),
        put("d", json!([[IF_MATCH, etag]])),
        put("e", json!([[IF_MATCH, ""]])),
        get,
        {"method": "DELETE", "uri": uri, "options": [[IF_MATCH, etag]]},
        {"method": "DELETE", "uri": uri, "options": [[IF_MATCH, ""]]},
        {"method": "GET", "uri": uri},
        put("f", json!([[IF_MATCH, ""]])),
        put("f", json!([[IF_NONE_MATCH, ""]])),
    ]));
    let codes: Vec<&str> = r.iter().map(code).collect();
    assert_eq!(
        codes,
        ["2.04", "4.12", "2.04", "2.05", "4.12", "2.02", "4.04", "4.12", "2.01"],
        "{r:#?}"
    );
    assert_eq!(text(&r[3]), "e");
}

#[test]
fn libcoap_if_none_match_does_not_overwrite_topic_data() {
    common::provision::libcoap();
    let c = cluster_with_topic("cond-libcoap", 1);
    let uri = format!("coap://{}/ps/data/t", c.addr(1));
    let libcoap = |args: &[&str]| {
        let child = std::process::Command::new("coap-client-notls")
            .args(["-B", "10"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("coap-client-notls (apt-get install libcoap3-bin)");
        let out = common::wait_bounded(child, Duration::from_secs(20)).unwrap();
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
            + &String::from_utf8_lossy(&out.stderr)
    };
    libcoap(&["-m", "put", "-e", "first", &uri]);
    let refused = libcoap(&["-m", "put", "-O", "5", "-e", "second", &uri]);
    assert!(refused.contains("4.12"), "{refused}");
    assert_eq!(libcoap(&[&uri]), "first");
}

#[test]
fn concurrent_writers_with_one_etag_change_it_once() {
    let c = cluster_with_topic("cond-race", 2);
    let uri = |b: u32| format!("coap://{}/ps/data/t", c.addr(b));
    let first = common::aiocoap::request(json!({"method": "PUT", "uri": uri(1), "payload": "0"}));
    assert_eq!(code(&first), "2.01");
    let etag = option(&first, ETAG).unwrap();
    // Eight writers through both brokers, each If-Match the same ETag, sent at once.
    let writers: Vec<serde_json::Value> = (0..8)
        .map(|i| {
            json!({"method": "PUT", "uri": uri(1 + i % 2), "payload": format!("w{i}"),
                "options": [[IF_MATCH, etag]]})
        })
        .collect();
    let answers: Vec<String> = common::aiocoap::requests_together(&json!(writers))
        .iter()
        .map(|a| code(a).to_string())
        .collect();
    assert_eq!(
        answers.iter().filter(|c| *c == "2.04").count(),
        1,
        "exactly one conditional write wins: {answers:?}"
    );
    assert!(
        answers.iter().all(|c| c == "2.04" || c == "4.12"),
        "{answers:?}"
    );
}

#[test]
fn topic_configuration_writes_obey_conditions() {
    let c = cluster_with_topic("cond-conf", 1);
    let uri = format!("coap://{}/ps/t", c.addr(1));
    let got = common::aiocoap::request(json!({"method": "GET", "uri": uri}));
    assert_eq!(code(&got), "2.05");
    let etag = option(&got, ETAG).expect("a topic has an ETag");
    let patch = |options: serde_json::Value| {
        json!({"method": "iPATCH", "uri": uri, "content_format": 60,
            "payload_diag": "{4: \"temperature\"}", "options": options})
    };
    let r = requests(&json!([
        patch(json!([[IF_MATCH, "0011"]])),
        {"method": "POST", "uri": uri, "content_format": 60, "payload_diag": "{0: \"t\"}",
            "options": [[IF_NONE_MATCH, ""]]},
        {"method": "DELETE", "uri": uri, "options": [[IF_MATCH, "0011"]]},
        {"method": "GET", "uri": uri},
        patch(json!([[IF_MATCH, etag]])),
        patch(json!([[IF_MATCH, etag]])),
        {"method": "GET", "uri": uri},
    ]));
    let codes: Vec<&str> = r.iter().map(code).collect();
    assert_eq!(
        codes,
        ["4.12", "4.12", "4.12", "2.05", "2.04", "4.12", "2.05"],
        "{r:#?}"
    );
    assert!(!diag(&r[3]).contains("temperature"), "{}", diag(&r[3]));
    assert!(diag(&r[6]).contains("4:\"temperature\""), "{}", diag(&r[6]));
    assert_ne!(option(&r[6], ETAG), Some(etag.clone()), "the ETag changed");

    // Updaters of one ETag at once: one wins.
    let now = option(&r[6], ETAG).unwrap();
    let updaters: Vec<serde_json::Value> = (0..6)
        .map(|i| {
            json!({"method": "iPATCH", "uri": uri, "content_format": 60,
            "payload_diag": format!("{{4: \"t{i}\"}}"), "options": [[IF_MATCH, now]]})
        })
        .collect();
    let answers: Vec<String> = common::aiocoap::requests_together(&json!(updaters))
        .iter()
        .map(|a| code(a).to_string())
        .collect();
    assert_eq!(
        answers.iter().filter(|c| *c == "2.04").count(),
        1,
        "{answers:?}"
    );
    let r = requests(&json!([{"method": "GET", "uri": uri}]));
    let gone = common::aiocoap::request(
        json!({"method": "DELETE", "uri": uri, "options": [[IF_MATCH, option(&r[0], ETAG).unwrap()]]}),
    );
    assert_eq!(code(&gone), "2.02");
}
