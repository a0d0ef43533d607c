//! Conditional requests (RFC 7252 §5.10.8) from a standard client (aiocoap): If-Match
//! (a value, or empty = "exists") and If-None-Match on the zookeeper's znodes and the
//! broker's pub-sub resources; a failed condition is 4.12 and writes nothing.

mod common;

use common::{free_udp_port, TempDir, Zookeeper};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PEHRA_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(venv.exists(), "no Python with aiocoap: `python3 -m venv .venv && .venv/bin/pip install aiocoap cbor2 cbor-diag`, or set PEHRA_PYTHON");
    venv
}

/// Sends `requests` (see tests/interop/aiocoap_requests.py) one after the other with
/// aiocoap; returns each response.
pub fn aiocoap(requests: Value) -> Vec<Value> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiocoap_requests.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(requests.to_string().as_bytes())
        .unwrap();
    let out = common::wait_bounded(child, Duration::from_secs(60)).expect("aiocoap finished");
    assert!(
        out.status.success(),
        "aiocoap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn code(response: &Value) -> &str {
    response["code"].as_str().unwrap()
}

fn option(response: &Value, number: u64) -> Option<String> {
    response["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o[0] == number)
        .map(|o| o[1].as_str().unwrap().to_string())
}

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
    let r = aiocoap(json!([
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
}
