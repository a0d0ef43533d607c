//! Conformance to the ETSI CoAP plugtest test descriptions (TD_COAP_CORE, _OBS, _BLOCK,
//! _LINK; the texts of F-Interop's ioppytest `TD_COAP_CORE.yaml` and of the CoAP#4
//! `block.yml` / `link.yml`), run from the outside against one zookeeper and one broker
//! on loopback, with libcoap's `coap-client-notls` and aiocoap as the clients.
//!
//! The TDs' resources are mapped to Pehra's (docs/coap.md, "Plugtest conformance"):
//! `/test`, `/obs`, `/large`, `/validate`, `/create1` are the topic-data resources
//! `/ps/data/{T}` of topics made for each TD, `/seg1/seg2/seg3` and the zookeeper's
//! `/validate` are znodes under `/z`, `/multi-format` is a topic's configuration
//! `/ps/{T}` (CBOR 60 or 606). Every TD that does not apply is in [`NOT_APPLICABLE`] with
//! the reason; `every_td_in_scope_is_run_or_listed` keeps the two lists complete.
//!
//! One test runs every applicable TD for both clients against one set of servers
//! (started once) and reports each TD by name; it fails naming every TD that failed.

mod common;

use common::{free_udp_port, BrokerProcess, TempDir, Zookeeper};
use pehra_broker::client::ClusterClient;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

// ---- the TDs in scope ----

/// The TDs of the brief: CORE_01–23 and 31, OBS_* (block.yml has 01, 02, 04–12), BLOCK_01–06,
/// LINK_01–09.
fn in_scope() -> Vec<String> {
    let mut ids: Vec<String> = (1..=23).map(|n| format!("TD_COAP_CORE_{n:02}")).collect();
    ids.push("TD_COAP_CORE_31".into());
    ids.extend(
        [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]
            .iter()
            .map(|n| format!("TD_COAP_OBS_{n:02}")),
    );
    ids.extend((1..=6).map(|n| format!("TD_COAP_BLOCK_{n:02}")));
    ids.extend((1..=9).map(|n| format!("TD_COAP_LINK_{n:02}")));
    ids
}

/// TDs that do not apply to Pehra, with the reason.
const NOT_APPLICABLE: &[(&str, &str)] = &[
    ("TD_COAP_CORE_09", "needs /separate, a resource answered late on purpose: Pehra answers every request within its piggyback window (separate responses: engine unit test slow_handler_gets_empty_ack_then_separate_con_response)"),
    ("TD_COAP_CORE_11", "needs /separate (see CORE_09)"),
    ("TD_COAP_CORE_15", "needs a lossy gateway between client and server (retransmission under loss: engine unit test thirty_percent_loss_both_ways_all_200_requests_complete)"),
    ("TD_COAP_CORE_16", "needs /separate and a lossy gateway"),
    ("TD_COAP_CORE_17", "needs /separate (see CORE_09)"),
    ("TD_COAP_CORE_19", "needs a resource whose creation answers Location-Query: Pehra's creations answer Location-Path only"),
    ("TD_COAP_OBS_04", "client behaviour (re-registration after Max-Age + MAX_LATENCY, > 100 s) after a server reboot; neither client re-registers by itself"),
    ("TD_COAP_OBS_05", "server detection of a client switched off: the first CON notification comes after observe_con_interval (60 s) and the retransmissions last 93 s more; too slow here (engine unit test unacknowledged_con_notifications_remove_dead_observers)"),
    ("TD_COAP_OBS_06", "needs a client rebooted while observing that answers the stale notification with RST: neither client does so from the outside (RST deregistration: engine unit test reset_and_observe_1_deregister_observers)"),
    ("TD_COAP_OBS_11", "needs a lossy gateway"),
    ("TD_COAP_BLOCK_05", "needs a resource answering a POST with a large body: Pehra's POSTs answer small bodies"),
    ("TD_COAP_LINK_04", "needs resources with several rt values: each Pehra resource has one"),
    ("TD_COAP_LINK_05", "needs resources with an if attribute: Pehra's links have none"),
    ("TD_COAP_LINK_06", "needs resources with an sz attribute: Pehra's links have none"),
];

// ---- servers ----

/// The servers under test, stopped (by PID) before their directory is removed.
struct Servers {
    broker: BrokerProcess,
    zk: Zookeeper,
    dir: TempDir,
}

impl Servers {
    fn start(name: &str) -> Servers {
        let dir = TempDir::new(name);
        let zk = Zookeeper::start_fresh(&dir.path().join("zk"));
        let addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let broker = BrokerProcess::start(1, addr, &dir.path().join("b1"), zk.addr);
        Servers { broker, zk, dir }
    }

    fn b(&self, path: &str) -> String {
        format!("coap://{}{path}", self.broker.addr)
    }

    fn z(&self, path: &str) -> String {
        format!("coap://{}{path}", self.zk.addr)
    }

    fn file(&self, name: &str, body: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    }

    /// Creates topic `name` through `/ps` (libcoap) and waits for its leader.
    fn topic(&self, name: &str) {
        let mut cbor = vec![0xa1, 0x00, 0x60 + name.len() as u8];
        cbor.extend_from_slice(name.as_bytes());
        let file = self.file(&format!("create-{name}"), &cbor);
        let pdus = libcoap(&["-m", "post", "-t", "60", "-f", &file, &self.b("/ps")]);
        assert_eq!(last_response(&pdus).code, "2.01", "topic {name} created");
        let zk = self.zk.addr;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = ClusterClient::connect(zk).await.unwrap();
            client
                .wait_for_leaders(name, Duration::from_secs(20))
                .await
                .unwrap();
        });
    }

    /// Publishes `text` (text/plain) to topic `name` with libcoap.
    fn publish(&self, name: &str, text: &str) {
        let file = self.file(&format!("pub-{name}"), text.as_bytes());
        let pdus = libcoap(&[
            "-m",
            "put",
            "-t",
            "0",
            "-f",
            &file,
            &self.b(&format!("/ps/data/{name}")),
        ]);
        let code = last_response(&pdus).code.clone();
        assert!(
            code == "2.01" || code == "2.04",
            "published to {name}: {code}"
        );
    }

    /// Creates znode `path` (under /z) holding `data`, with libcoap.
    fn znode(&self, path: &str, data: &[u8]) {
        let mut cbor = vec![0xa3, 0x64];
        cbor.extend_from_slice(b"data");
        cbor.push(0x40 + data.len() as u8);
        cbor.extend_from_slice(data);
        cbor.extend_from_slice(&[0x69]);
        cbor.extend_from_slice(b"ephemeral");
        cbor.push(0xf4);
        cbor.extend_from_slice(&[0x6a]);
        cbor.extend_from_slice(b"sequential");
        cbor.push(0xf4);
        let file = self.file("znode", &cbor);
        let pdus = libcoap(&["-m", "post", "-t", "60", "-f", &file, &self.z(path)]);
        assert_eq!(last_response(&pdus).code, "2.01", "znode {path} created");
    }
}

/// A `SetDataRequest` `{"data": h'…'}`.
fn set_data(data: &[u8]) -> Vec<u8> {
    let mut cbor = vec![0xa1, 0x64];
    cbor.extend_from_slice(b"data");
    cbor.push(0x40 + data.len() as u8);
    cbor.extend_from_slice(data);
    cbor
}

// ---- libcoap ----

/// One message as `coap-client-notls -v 7` logs it:
/// `v:1 t:ACK c:2.05 i:76c1 {01} [ ETag:0x21…, Content-Format:text/plain ] :: 'hello'`.
#[derive(Debug, Clone, PartialEq)]
struct Pdu {
    mtype: String,
    code: String,
    mid: String,
    token: String,
    options: Vec<(String, String)>,
    payload: Option<String>,
}

impl Pdu {
    fn parse(line: &str) -> Option<Pdu> {
        let rest = line.strip_prefix("v:1 t:")?;
        let (mtype, rest) = rest.split_once(" c:")?;
        let (code, rest) = rest.split_once(" i:")?;
        let (mid, rest) = rest.split_once(" {")?;
        let (token, rest) = rest.split_once("} [")?;
        let (options, payload) = match rest.split_once(" ] :: ") {
            Some((o, p)) => (o, Some(p.to_string())),
            None => (rest.trim_end().trim_end_matches(']'), None),
        };
        let options = options
            .split(", ")
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .filter_map(|o| o.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Pdu {
            mtype: mtype.into(),
            code: code.into(),
            mid: mid.into(),
            token: token.into(),
            options,
            payload,
        })
    }

    fn is_response(&self) -> bool {
        self.code.starts_with(|c: char| c.is_ascii_digit()) && self.code != "0.00"
    }

    fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.options
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Runs `coap-client-notls -v 7 ARGS` (bounded); every message it logged, in order, each
/// once (it logs a request again when it processes it).
fn libcoap(args: &[&str]) -> Vec<Pdu> {
    common::provision::libcoap();
    let child = Command::new("coap-client-notls")
        .arg("-v")
        .arg("7")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coap-client-notls");
    let out = common::wait_bounded(child, Duration::from_secs(30)).expect("libcoap in time");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    parse_log(&text)
}

fn parse_log(text: &str) -> Vec<Pdu> {
    let mut pdus: Vec<Pdu> = Vec::new();
    for line in text.lines() {
        if let Some(pdu) = Pdu::parse(line) {
            if pdus.last() != Some(&pdu) {
                pdus.push(pdu);
            }
        }
    }
    pdus
}

/// The requests logged, each once (libcoap logs one again when it processes it).
fn requests_of(pdus: &[Pdu]) -> Vec<&Pdu> {
    once_per_mid(pdus.iter().filter(|p| !p.is_response() && p.code != "0.00"))
}

/// The responses logged, each once.
fn responses_of(pdus: &[Pdu]) -> Vec<&Pdu> {
    once_per_mid(pdus.iter().filter(|p| p.is_response()))
}

fn once_per_mid<'a>(pdus: impl Iterator<Item = &'a Pdu>) -> Vec<&'a Pdu> {
    let mut seen = std::collections::HashSet::new();
    pdus.filter(|p| seen.insert((p.mtype.clone(), p.mid.clone())))
        .collect()
}

fn last_response(pdus: &[Pdu]) -> &Pdu {
    responses_of(pdus)
        .last()
        .copied()
        .unwrap_or_else(|| panic!("a response in {pdus:#?}"))
}

// ---- aiocoap ----

fn aiocoap_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiocoap_plugtest.py")
}

/// Sends `specs` with aiocoap (tests/interop/aiocoap_plugtest.py `requests`); one JSON
/// line per message received.
fn aiocoap(specs: Value) -> Vec<Value> {
    common::aiocoap::run_script(
        "aiocoap_plugtest.py",
        &["requests"],
        &specs,
        Duration::from_secs(60),
    )
}

fn a_code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

fn a_options(v: &Value, number: u64) -> Vec<String> {
    v["options"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|o| o[0] == number)
                .map(|o| o[1].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn a_option(v: &Value, number: u64) -> Option<String> {
    a_options(v, number).into_iter().next()
}

fn a_payload(v: &Value) -> Vec<u8> {
    hex::decode(v["payload_hex"].as_str().unwrap_or("")).unwrap()
}

const ETAG: u64 = 4;
const OBSERVE: u64 = 6;
const LOCATION_PATH: u64 = 8;
const CONTENT_FORMAT: u64 = 12;
const BLOCK2: u64 = 23;
const BLOCK1: u64 = 27;

/// Decodes a Block2 value (hex) into (num, more, szx).
fn block(hex_value: &str) -> (u32, bool, u32) {
    let v = hex::decode(hex_value)
        .unwrap()
        .iter()
        .fold(0u32, |a, b| (a << 8) | u32::from(*b));
    (v >> 4, v & 8 != 0, v & 7)
}

// ---- checks ----

type Outcome = Result<(), String>;

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The checks common to a piggybacked answer seen by libcoap: ACK to the request's
/// MID, the request's token, the code.
fn l_piggybacked(pdus: &[Pdu], codes: &[&str]) -> Result<Pdu, String> {
    let req = requests_of(pdus)
        .first()
        .copied()
        .ok_or("no request logged")?
        .clone();
    let resp = responses_of(pdus)
        .first()
        .copied()
        .ok_or("no response logged")?
        .clone();
    check!(req.mtype == "CON", "request type {}", req.mtype);
    check!(resp.mtype == "ACK", "response type {}", resp.mtype);
    check!(resp.mid == req.mid, "MID {} != CMID {}", resp.mid, req.mid);
    check!(
        resp.token == req.token,
        "token {} != CTOK {}",
        resp.token,
        req.token
    );
    check!(
        codes.contains(&resp.code.as_str()),
        "code {} not {codes:?}",
        resp.code
    );
    check!(
        !resp.code.starts_with('2')
            || resp.payload.is_none()
            || resp.option("Content-Format").is_some(),
        "a payload without Content-Format"
    );
    Ok(resp)
}

/// The same for a NON request: a NON answer with a MID of the server's, the token.
fn l_non(pdus: &[Pdu], codes: &[&str]) -> Result<Pdu, String> {
    let req = requests_of(pdus)
        .first()
        .copied()
        .ok_or("no request")?
        .clone();
    let resp = responses_of(pdus)
        .first()
        .copied()
        .ok_or("no response")?
        .clone();
    check!(req.mtype == "NON", "request type {}", req.mtype);
    check!(resp.mtype == "NON", "response type {}", resp.mtype);
    check!(
        resp.token == req.token,
        "token {} != CTOK {}",
        resp.token,
        req.token
    );
    check!(
        codes.contains(&resp.code.as_str()),
        "code {} not {codes:?}",
        resp.code
    );
    check!(
        !resp.code.starts_with('2')
            || resp.payload.is_none()
            || resp.option("Content-Format").is_some(),
        "a payload without Content-Format"
    );
    Ok(resp)
}

fn a_piggybacked(r: &Value, codes: &[&str]) -> Outcome {
    check!(r["mtype"] == "ACK", "response type {}", r["mtype"]);
    // (A block-wise exchange is several: its last answer has the last request's MID.)
    let blockwise = a_option(r, BLOCK2).is_some() || a_option(r, BLOCK1).is_some();
    check!(
        blockwise || r["mid"] == r["request_mid"],
        "MID {} != CMID {}",
        r["mid"],
        r["request_mid"]
    );
    // (aiocoap, like libcoap, may use a new token for each block.)
    check!(
        blockwise || r["token_hex"] == r["request_token_hex"],
        "token {} != CTOK {}",
        r["token_hex"],
        r["request_token_hex"]
    );
    check!(
        codes.contains(&a_code(r)),
        "code {} not {codes:?}",
        a_code(r)
    );
    check!(
        !a_code(r).starts_with('2')
            || a_payload(r).is_empty()
            || a_option(r, CONTENT_FORMAT).is_some(),
        "a payload without Content-Format"
    );
    Ok(())
}

fn a_non(r: &Value, codes: &[&str]) -> Outcome {
    check!(r["mtype"] == "NON", "response type {}", r["mtype"]);
    check!(
        r["token_hex"] == r["request_token_hex"],
        "token {} != CTOK {}",
        r["token_hex"],
        r["request_token_hex"]
    );
    check!(
        codes.contains(&a_code(r)),
        "code {} not {codes:?}",
        a_code(r)
    );
    Ok(())
}

// ---- the TDs ----

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Client {
    Libcoap,
    Aiocoap,
}

/// Runs TD `id` with `client`; `None`: no such runner (not applicable or a known failure).
fn run(s: &Servers, id: &str, c: Client) -> Option<Outcome> {
    let k = match c {
        Client::Libcoap => "l",
        Client::Aiocoap => "a",
    };
    let n = id.rsplit('_').next().unwrap();
    let group = id.split('_').nth(2).unwrap().to_lowercase();
    // One topic and znode namespace per TD and client.
    let t = format!("{group}{n}{k}");
    Some(match id {
        "TD_COAP_CORE_01" | "TD_COAP_CORE_10" => {
            s.topic(&t);
            s.publish(&t, "hello");
            s.znode(&format!("/z/{t}"), b"zhello");
            get_test(s, c, &t, id == "TD_COAP_CORE_10")
        }
        "TD_COAP_CORE_02" => {
            s.topic(&t);
            s.publish(&t, "hello");
            s.znode(&format!("/z/{t}"), b"x");
            method_test(s, c, &t, "delete", &["2.02"], false)
        }
        "TD_COAP_CORE_03" => {
            s.topic(&t);
            s.znode(&format!("/z/{t}"), b"x");
            method_test(s, c, &t, "put", &["2.01", "2.04"], false)
        }
        "TD_COAP_CORE_04" => {
            s.topic(&t);
            method_test(s, c, &t, "post", &["2.01", "2.04"], false)
        }
        "TD_COAP_CORE_05" => {
            s.topic(&t);
            s.publish(&t, "hello");
            method_test(s, c, &t, "get", &["2.05"], true)
        }
        "TD_COAP_CORE_06" => {
            s.topic(&t);
            s.publish(&t, "hello");
            method_test(s, c, &t, "delete", &["2.02"], true)
        }
        "TD_COAP_CORE_07" => {
            s.topic(&t);
            method_test(s, c, &t, "put", &["2.01", "2.04"], true)
        }
        "TD_COAP_CORE_08" => {
            s.topic(&t);
            method_test(s, c, &t, "post", &["2.01", "2.04"], true)
        }
        "TD_COAP_CORE_12" => {
            s.topic(&t);
            s.publish(&t, "hello");
            empty_token(s, c, &t)
        }
        "TD_COAP_CORE_13" => {
            for p in ["", "/seg2", "/seg2/seg3"] {
                s.znode(&format!("/z/{t}{p}"), b"segments");
            }
            get_simple(s, c, &s.z(&format!("/z/{t}/seg2/seg3")), None)
        }
        "TD_COAP_CORE_14" => {
            s.topic(&t);
            // /query: the collection with two Uri-Query options (RFC 6690 filters, the
            // TD's check names two).
            get_simple(
                s,
                c,
                &s.b(&format!("/ps?rt=core.ps.conf&href=/ps/{t}")),
                Some(&format!("</ps/{t}>")),
            )
        }
        "TD_COAP_CORE_18" => location_paths(s, c, &t),
        "TD_COAP_CORE_20" => {
            s.topic(&t);
            accept(s, c, &t)
        }
        "TD_COAP_CORE_21" => {
            s.topic(&t);
            s.publish(&t, "v1");
            s.znode(&format!("/z/{t}"), b"v1");
            validate(s, c, &t)
        }
        "TD_COAP_CORE_22" => {
            s.topic(&t);
            s.publish(&t, "v1");
            s.znode(&format!("/z/{t}"), b"v1");
            if_match(s, c, &t)
        }
        "TD_COAP_CORE_23" => {
            s.topic(&t);
            if_none_match(s, c, &t)
        }
        "TD_COAP_CORE_31" => ping(s),
        "TD_COAP_LINK_01" => link(s, c, "", |links| {
            check!(
                links.iter().any(|l| l.starts_with("</ps>")),
                "no </ps>: {links:?}"
            );
            Ok(())
        }),
        "TD_COAP_LINK_02" => link(s, c, "?rt=core.ps.coll", |links| {
            check!(
                links.len() == 1 && links[0].starts_with("</ps>"),
                "only </ps>: {links:?}"
            );
            Ok(())
        }),
        "TD_COAP_LINK_03" => link(s, c, "?rt=*", |links| {
            check!(!links.is_empty(), "some links");
            check!(
                links.iter().all(|l| l.contains(";rt=")),
                "only links with rt: {links:?}"
            );
            Ok(())
        }),
        "TD_COAP_LINK_07" => link(s, c, "?href=/ps", |links| {
            check!(
                links.len() == 1 && links[0].starts_with("</ps>"),
                "only </ps>: {links:?}"
            );
            Ok(())
        }),
        "TD_COAP_LINK_08" => link(s, c, "?href=/p*", |links| {
            check!(links.len() > 1, "several links: {links:?}");
            check!(
                links.iter().all(|l| l.starts_with("</p")),
                "only links under /p: {links:?}"
            );
            Ok(())
        }),
        "TD_COAP_LINK_09" => {
            s.topic(&t);
            hierarchy(s, c, &t)
        }
        "TD_COAP_BLOCK_01" => {
            s.topic(&t);
            large_get(s, c, &t, Some(2))
        }
        "TD_COAP_BLOCK_02" => {
            s.topic(&t);
            large_get(s, c, &t, None)
        }
        "TD_COAP_BLOCK_06" => {
            s.topic(&t);
            large_get(s, c, &t, Some(0))
        }
        "TD_COAP_BLOCK_03" => {
            s.topic(&t);
            large_put(s, c, &t)
        }
        "TD_COAP_BLOCK_04" => large_create(s, c, &t),
        "TD_COAP_OBS_01" | "TD_COAP_OBS_09" => {
            s.topic(&t);
            s.publish(&t, "0");
            observe(s, c, &t, false)
        }
        "TD_COAP_OBS_02" => {
            s.topic(&t);
            s.publish(&t, "0");
            observe(s, c, &t, true)
        }
        "TD_COAP_OBS_07" => {
            s.topic(&t);
            s.publish(&t, "0");
            observe_delete(s, c, &t)
        }
        "TD_COAP_OBS_10" => {
            s.topic(&t);
            s.publish(&t, "0");
            observe_get(s, c, &t)
        }
        "TD_COAP_OBS_12" => {
            s.topic(&t);
            s.publish(&t, "0");
            observe_cancel(s, c, &t)
        }
        "TD_COAP_OBS_08" => {
            s.topic(&t);
            s.publish(&t, "0");
            observe_content_format(s, c, &t)
        }
        _ => return None,
    })
}

/// CORE_01 / CORE_10: GET CON of /test (topic data) and of a znode.
fn get_test(s: &Servers, c: Client, t: &str, token: bool) -> Outcome {
    for (uri, body) in [
        (s.b(&format!("/ps/data/{t}")), "hello"),
        (s.z(&format!("/z/{t}")), "zhello"),
    ] {
        match c {
            Client::Libcoap => {
                let pdus = if token {
                    libcoap(&["-T", "cafe", &uri])
                } else {
                    libcoap(&[&uri])
                };
                let r = l_piggybacked(&pdus, &["2.05"])?;
                check!(r.option("Content-Format").is_some(), "Content-Format");
                // (libcoap shows a binary payload as "binary data length N".)
                check!(
                    r.payload
                        .as_deref()
                        .is_some_and(|p| p.contains(body) || p.starts_with("binary data")),
                    "payload {:?}",
                    r.payload
                );
                check!((2..=16).contains(&r.token.len()), "a token of 1 to 8 bytes");
            }
            Client::Aiocoap => {
                let r = aiocoap(json!([{"method": "GET", "uri": uri}])).remove(0);
                a_piggybacked(&r, &["2.05"])?;
                check!(a_option(&r, CONTENT_FORMAT).is_some(), "Content-Format");
                let p = a_payload(&r);
                check!(
                    p.windows(body.len()).any(|w| w == body.as_bytes()),
                    "payload {p:?}"
                );
                let tok = r["token_hex"].as_str().unwrap().len() / 2;
                check!((1..=8).contains(&tok), "token of {tok} bytes");
            }
        }
    }
    Ok(())
}

/// CORE_02–08: one method on /test (topic data; CORE_02/03 also on a znode), CON or NON.
fn method_test(
    s: &Servers,
    c: Client,
    t: &str,
    method: &str,
    codes: &[&str],
    non: bool,
) -> Outcome {
    let mut targets = vec![(s.b(&format!("/ps/data/{t}")), b"payload".to_vec(), 0u32)];
    if !non && method == "delete" {
        targets.push((s.z(&format!("/z/{t}")), vec![], 60));
    }
    if !non && method == "put" {
        targets.push((s.z(&format!("/z/{t}")), set_data(b"new"), 60));
    }
    for (uri, body, cf) in targets {
        match c {
            Client::Libcoap => {
                let file = s.file(&format!("body-{t}"), &body);
                let cf = cf.to_string();
                let mut args = vec!["-m", method];
                if non {
                    args.push("-N");
                }
                if method != "get" && method != "delete" {
                    args.extend(["-t", cf.as_str(), "-f", file.as_str()]);
                }
                args.push(&uri);
                let pdus = libcoap(&args);
                if non {
                    l_non(&pdus, codes)?;
                } else {
                    l_piggybacked(&pdus, codes)?;
                }
            }
            Client::Aiocoap => {
                let mut spec = json!({"method": method.to_uppercase(), "uri": uri,
                    "mtype": if non {"NON"} else {"CON"}});
                if method != "get" && method != "delete" {
                    spec["options"] = json!([[
                        CONTENT_FORMAT,
                        if cf == 0 {
                            "".to_string()
                        } else {
                            format!("{cf:02x}")
                        }
                    ]]);
                    spec["payload_hex"] = json!(hex::encode(&body));
                }
                let r = aiocoap_raw(json!([spec])).remove(0);
                if non {
                    a_non(&r, codes)?;
                } else {
                    a_piggybacked(&r, codes)?;
                }
            }
        }
    }
    Ok(())
}

/// [`aiocoap`] (the script takes `payload_hex` bodies as they are).
fn aiocoap_raw(specs: Value) -> Vec<Value> {
    aiocoap(specs)
}

/// CORE_12: a zero-length token.
fn empty_token(s: &Servers, c: Client, t: &str) -> Outcome {
    let uri = s.b(&format!("/ps/data/{t}"));
    match c {
        Client::Libcoap => {
            // libcoap 4.3.1 always sends a token of its own; a raw request stands in.
            let _ = uri;
            raw_empty_token_get(s, t)
        }
        Client::Aiocoap => {
            let _ = uri;
            raw_empty_token_get(s, t)
        }
    }
}

fn raw_empty_token_get(s: &Servers, t: &str) -> Outcome {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut msg = vec![0x40, 0x01, 0x12, 0x34];
    for (i, seg) in ["ps", "data", t].iter().enumerate() {
        let delta = if i == 0 { 11 } else { 0 };
        msg.push((delta << 4) | seg.len() as u8);
        msg.extend_from_slice(seg.as_bytes());
    }
    sock.send_to(&msg, s.broker.addr).unwrap();
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).map_err(|e| format!("no answer: {e}"))?;
    let r = &buf[..n];
    check!(
        r[0] == 0x60,
        "an ACK with no token (first byte {:#x})",
        r[0]
    );
    check!(r[1] == 0x45, "2.05 (code byte {:#x})", r[1]);
    check!(r[2..4] == [0x12, 0x34], "MID = CMID");
    check!(r.contains(&0xff), "a payload");
    Ok(())
}

/// GET CON of `uri`: 2.05, Content-Format, a non-empty payload containing `expect`.
fn get_simple(_s: &Servers, c: Client, uri: &str, expect: Option<&str>) -> Outcome {
    match c {
        Client::Libcoap => {
            let pdus = libcoap(&[uri]);
            let req = requests_of(&pdus)[0].clone();
            let segments = req.all("Uri-Path").len() + req.all("Uri-Query").len();
            check!(
                segments >= 3,
                "three Uri-Path or Uri-Query options: {req:?}"
            );
            let r = l_piggybacked(&pdus, &["2.05"])?;
            check!(r.option("Content-Format").is_some(), "Content-Format");
            check!(r.payload.is_some(), "a payload");
            if let Some(e) = expect {
                check!(
                    r.payload.as_deref().unwrap().contains(e),
                    "payload {:?}",
                    r.payload
                );
            }
        }
        Client::Aiocoap => {
            let r = aiocoap(json!([{"method": "GET", "uri": uri}])).remove(0);
            a_piggybacked(&r, &["2.05"])?;
            check!(a_option(&r, CONTENT_FORMAT).is_some(), "Content-Format");
            let p = String::from_utf8_lossy(&a_payload(&r)).into_owned();
            check!(!p.is_empty(), "a payload");
            if let Some(e) = expect {
                check!(p.contains(e), "payload {p:?}");
            }
        }
    }
    Ok(())
}

/// CORE_18: a POST answered with several Location-Path options: creating the znode
/// /z/{t}/location2/location3 (parents first), and a topic through /ps.
fn location_paths(s: &Servers, c: Client, t: &str) -> Outcome {
    s.znode(&format!("/z/{t}"), b"1");
    s.znode(&format!("/z/{t}/location2"), b"2");
    let create = {
        let mut cbor = vec![0xa3, 0x64];
        cbor.extend_from_slice(b"data");
        cbor.extend_from_slice(&[0x41, 0x03, 0x69]);
        cbor.extend_from_slice(b"ephemeral");
        cbor.extend_from_slice(&[0xf4, 0x6a]);
        cbor.extend_from_slice(b"sequential");
        cbor.push(0xf4);
        cbor
    };
    let uri = s.z(&format!("/z/{t}/location2/location3"));
    let want = vec![
        "z".to_string(),
        t.to_string(),
        "location2".into(),
        "location3".into(),
    ];
    let got: Vec<String> = match c {
        Client::Libcoap => {
            let file = s.file("create18", &create);
            let pdus = libcoap(&["-m", "post", "-t", "60", "-f", &file, &uri]);
            let r = l_piggybacked(&pdus, &["2.01"])?;
            r.all("Location-Path")
                .iter()
                .map(|v| v.to_string())
                .collect()
        }
        Client::Aiocoap => {
            let r = aiocoap_raw(json!([{"method": "POST", "uri": uri,
                "options": [[CONTENT_FORMAT, "3c"]], "payload_hex": hex::encode(&create)}]))
            .remove(0);
            a_piggybacked(&r, &["2.01"])?;
            a_options(&r, LOCATION_PATH)
                .iter()
                .map(|h| String::from_utf8(hex::decode(h).unwrap()).unwrap())
                .collect()
        }
    };
    check!(got == want, "Location-Path {got:?}, not {want:?}");
    check!(
        got.iter().all(|p| !p.contains('/')),
        "no '/' in a Location-Path"
    );
    Ok(())
}

/// CORE_20: /multi-format = a topic's configuration, in CBOR (60) or
/// application/core-pubsub+cbor (606) as the Accept option asks; 4.06 for a format it
/// does not have (41, XML).
fn accept(s: &Servers, c: Client, t: &str) -> Outcome {
    let uri = s.b(&format!("/ps/{t}"));
    for (accept, want) in [(60u32, "2.05"), (606, "2.05"), (41, "4.06")] {
        let (code, cf) = match c {
            Client::Libcoap => {
                let a = accept.to_string();
                let pdus = libcoap(&["-A", &a, &uri]);
                let req = requests_of(&pdus)[0].clone();
                check!(req.option("Accept").is_some(), "Accept sent: {req:?}");
                let r = l_piggybacked(&pdus, &[want])?;
                let cf = r.option("Content-Format").map(str::to_string);
                (r.code, cf)
            }
            Client::Aiocoap => {
                let v = if accept > 255 {
                    format!("{accept:04x}")
                } else {
                    format!("{accept:02x}")
                };
                let r =
                    aiocoap(json!([{"method": "GET", "uri": uri, "options": [[17, v]]}])).remove(0);
                a_piggybacked(&r, &[want])?;
                let cf = a_option(&r, CONTENT_FORMAT).map(|h| {
                    u32::from_str_radix(if h.is_empty() { "0" } else { &h }, 16)
                        .unwrap()
                        .to_string()
                });
                (a_code(&r).to_string(), cf)
            }
        };
        if want == "2.05" {
            let cf = cf.unwrap_or_default();
            let named = match accept {
                60 => "application/cbor",
                _ => "606",
            };
            check!(
                cf == accept.to_string() || cf.contains(named),
                "Accept {accept}: Content-Format {cf} ({code})"
            );
        }
    }
    Ok(())
}

/// CORE_21: ETag validation on /validate (topic data, and a znode): 2.05 with ETAG1;
/// GET with ETAG1 → 2.03 with ETAG1 and no payload; after an update → 2.05, another ETag.
fn validate(s: &Servers, c: Client, t: &str) -> Outcome {
    let topic = s.b(&format!("/ps/data/{t}"));
    let znode = s.z(&format!("/z/{t}"));
    for (uri, update) in [(&topic, 0), (&znode, 1)] {
        let first = get_etag(c, uri, None)?;
        check!(first.0 == "2.05", "first GET {}", first.0);
        let etag1 = first.1.clone().ok_or("an ETag")?;
        check!(!first.2.is_empty(), "a payload");
        let second = get_etag(c, uri, Some(&etag1))?;
        check!(second.0 == "2.03", "GET with ETAG1: {} not 2.03", second.0);
        check!(
            second.1.as_deref() == Some(etag1.as_str()),
            "ETag {:?}",
            second.1
        );
        check!(second.2.is_empty(), "2.03 without payload");
        if update == 0 {
            s.publish(t, "v2");
        } else {
            let file = s.file("v2", &set_data(b"v2"));
            let pdus = libcoap(&["-m", "put", "-t", "60", "-f", &file, uri]);
            check!(last_response(&pdus).code == "2.04", "znode updated");
        }
        let third = get_etag(c, uri, Some(&etag1))?;
        check!(third.0 == "2.05", "after the update {}", third.0);
        check!(
            third.1.is_some() && third.1 != Some(etag1.clone()),
            "a new ETag"
        );
        check!(third.2 != first.2, "a new payload");
    }
    Ok(())
}

/// GET `uri` (with ETag `etag`, hex): (code, ETag hex, payload).
fn get_etag(
    c: Client,
    uri: &str,
    etag: Option<&str>,
) -> Result<(String, Option<String>, Vec<u8>), String> {
    match c {
        Client::Libcoap => {
            let o = etag.map(|e| format!("4,0x{e}"));
            let out =
                std::env::temp_dir().join(format!("plugtest-{}-{}", std::process::id(), uri.len()));
            let _ = std::fs::remove_file(&out);
            let mut args = vec!["-o", out.to_str().unwrap()];
            if let Some(o) = &o {
                args.extend(["-O", o.as_str()]);
            }
            args.push(uri);
            let pdus = libcoap(&args);
            let r = l_piggybacked(&pdus, &["2.05", "2.03"])?;
            let e = r
                .option("ETag")
                .map(|v| v.trim_start_matches("0x").to_lowercase());
            let body = std::fs::read(&out).unwrap_or_default();
            let _ = std::fs::remove_file(&out);
            Ok((r.code.clone(), e, body))
        }
        Client::Aiocoap => {
            let mut spec = json!({"method": "GET", "uri": uri});
            if let Some(e) = etag {
                spec["options"] = json!([[ETAG, e]]);
            }
            let r = aiocoap(json!([spec])).remove(0);
            a_piggybacked(&r, &["2.05", "2.03"])?;
            Ok((a_code(&r).into(), a_option(&r, ETAG), a_payload(&r)))
        }
    }
}

/// Sends a PUT with one condition (`number`, hex value) and a body in Content-Format
/// `cf`: the code.
fn write_with(
    s: &Servers,
    c: Client,
    uri: &str,
    (number, value): (u64, &str),
    (body, cf): (&[u8], u32),
) -> Result<String, String> {
    let method = "put";
    match c {
        Client::Libcoap => {
            let file = s.file("cond", body);
            let o = if value.is_empty() {
                number.to_string()
            } else {
                format!("{number},0x{value}")
            };
            let cf = cf.to_string();
            let pdus = libcoap(&["-m", method, "-O", &o, "-t", &cf, "-f", &file, uri]);
            let req = requests_of(&pdus)[0].clone();
            check!(
                req.option(if number == 1 {
                    "If-Match"
                } else {
                    "If-None-Match"
                })
                .is_some(),
                "the condition was sent: {req:?}"
            );
            Ok(l_piggybacked(&pdus, &["2.01", "2.04", "4.12"])?.code)
        }
        Client::Aiocoap => {
            let cfv = if cf == 0 {
                String::new()
            } else {
                format!("{cf:02x}")
            };
            let r = aiocoap_raw(json!([{"method": method.to_uppercase(), "uri": uri,
                "options": [[number, value], [CONTENT_FORMAT, cfv]], "payload_hex": hex::encode(body)}]))
            .remove(0);
            a_piggybacked(&r, &["2.01", "2.04", "4.12"])?;
            Ok(a_code(&r).into())
        }
    }
}

/// CORE_22: If-Match on /validate (topic data, and a znode).
fn if_match(s: &Servers, c: Client, t: &str) -> Outcome {
    let topic = s.b(&format!("/ps/data/{t}"));
    let znode = s.z(&format!("/z/{t}"));
    for (uri, cf) in [(&topic, 0u32), (&znode, 60)] {
        let body = |v: &[u8]| if cf == 0 { v.to_vec() } else { set_data(v) };
        let (code, etag1, _) = get_etag(c, uri, None)?;
        check!(code == "2.05", "GET {code}");
        let etag1 = etag1.ok_or("ETAG1")?;
        let code = write_with(s, c, uri, (1, &etag1), (&body(b"v2"), cf))?;
        check!(code == "2.04", "PUT If-Match ETAG1: {code}");
        let (code, etag2, p) = get_etag(c, uri, None)?;
        check!(code == "2.05", "GET {code}");
        let etag2 = etag2.ok_or("ETAG2")?;
        check!(etag2 != etag1, "ETAG2 != ETAG1");
        check!(p.windows(2).any(|w| w == b"v2"), "the PUT's payload");
        // Someone else updates it.
        let code = write_with(s, c, uri, (1, ""), (&body(b"v3"), cf))?;
        check!(code == "2.04", "update {code}");
        let code = write_with(s, c, uri, (1, &etag2), (&body(b"v4"), cf))?;
        check!(code == "4.12", "PUT If-Match ETAG2 after an update: {code}");
        let (_, _, p) = get_etag(c, uri, None)?;
        check!(
            p.windows(2).any(|w| w == b"v3"),
            "not updated by the failed PUT"
        );
    }
    Ok(())
}

/// CORE_23: If-None-Match on /create1 (a topic's data, HALF CREATED: it has none yet).
fn if_none_match(s: &Servers, c: Client, t: &str) -> Outcome {
    let uri = s.b(&format!("/ps/data/{t}"));
    let code = write_with(s, c, &uri, (5, ""), (b"first", 0))?;
    check!(code == "2.01", "first PUT If-None-Match: {code}");
    let code = write_with(s, c, &uri, (5, ""), (b"second", 0))?;
    check!(code == "4.12", "second PUT If-None-Match: {code}");
    let (_, _, p) = get_etag(c, &uri, None)?;
    check!(p == b"first", "not overwritten");
    Ok(())
}

/// CORE_31: CoAP ping (an empty CON) gets an RST with its MID. Neither client sends a
/// ping on request (libcoap 4.3.1 only as keep-alive, aiocoap not at all): raw UDP.
fn ping(s: &Servers) -> Outcome {
    for addr in [s.broker.addr, s.zk.addr] {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.send_to(&[0x40, 0x00, 0xbe, 0xef], addr).unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).map_err(|e| format!("no RST: {e}"))?;
        check!(
            buf[..n] == [0x70, 0x00, 0xbe, 0xef],
            "a four-byte RST, got {:x?}",
            &buf[..n]
        );
    }
    Ok(())
}

/// LINK_*: GET /.well-known/core`query` from the broker: 2.05, Content-Format 40; `check`
/// on the links.
fn link(s: &Servers, c: Client, query: &str, check: impl Fn(&[String]) -> Outcome) -> Outcome {
    let uri = s.b(&format!("/.well-known/core{query}"));
    let body = match c {
        Client::Libcoap => {
            let pdus = libcoap(&[&uri]);
            let r = l_piggybacked(&pdus, &["2.05"])?;
            check!(
                r.option("Content-Format") == Some("application/link-format"),
                "Content-Format {:?}",
                r.option("Content-Format")
            );
            r.payload.unwrap_or_default().trim_matches('\'').to_string()
        }
        Client::Aiocoap => {
            let r = aiocoap(json!([{"method": "GET", "uri": uri}])).remove(0);
            a_piggybacked(&r, &["2.05"])?;
            check!(
                a_option(&r, CONTENT_FORMAT).as_deref() == Some("28"),
                "Content-Format 40"
            );
            String::from_utf8(a_payload(&r)).unwrap()
        }
    };
    let links: Vec<String> = body
        .split(',')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    check(&links)
}

/// LINK_09: /.well-known/core lists </ps>;ct=40; GET /ps lists the topics (/ps/T);
/// GET /ps/T gives 2.05.
fn hierarchy(s: &Servers, c: Client, t: &str) -> Outcome {
    link(s, c, "", |links| {
        check!(
            links
                .iter()
                .any(|l| l.starts_with("</ps>") && l.contains("ct=40")),
            "</ps>;ct=40 in {links:?}"
        );
        Ok(())
    })?;
    get_simple(s, c, &s.b("/ps"), Some(&format!("</ps/{t}>"))).or_else(|e| {
        // /ps has one Uri-Path: get_simple's three-segment check does not apply.
        if e.starts_with("three") {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    let uri = s.b(&format!("/ps/{t}"));
    match c {
        Client::Libcoap => {
            let r = l_piggybacked(&libcoap(&[&uri]), &["2.05"])?;
            check!(r.payload.is_some(), "a payload");
        }
        Client::Aiocoap => {
            let r = aiocoap(json!([{"method": "GET", "uri": uri}])).remove(0);
            a_piggybacked(&r, &["2.05"])?;
        }
    }
    Ok(())
}

fn large_text(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + ((i / 3) % 26) as u8).collect()
}

/// BLOCK_01/02/06: /large = a topic's data holding 2,000 bytes, read block by block,
/// early (`szx` given) or late negotiation.
fn large_get(s: &Servers, c: Client, t: &str, szx: Option<u32>) -> Outcome {
    let body = large_text(2000);
    let file = s.file(&format!("large-{t}"), &body);
    let pdus = libcoap(&[
        "-m",
        "put",
        "-t",
        "0",
        "-f",
        &file,
        &s.b(&format!("/ps/data/{t}")),
    ]);
    check!(last_response(&pdus).code.starts_with("2.0"), "stored");
    let uri = s.b(&format!("/ps/data/{t}"));
    let blocks: Vec<(u32, bool, u32, usize)> = match c {
        Client::Libcoap => {
            let out = s.dir.path().join(format!("large-out-{t}"));
            let size = szx.map(|z| (16u32 << z).to_string());
            let mut args = vec!["-o", out.to_str().unwrap()];
            if let Some(size) = &size {
                args.extend(["-b", size.as_str()]);
            }
            args.push(&uri);
            let pdus = libcoap(&args);
            let got = std::fs::read(&out).unwrap_or_default();
            check!(got == body, "whole, no gaps: {} bytes", got.len());
            let reqs = requests_of(&pdus);
            if let Some(z) = szx {
                let b = reqs[0]
                    .option("Block2")
                    .ok_or("Block2 in the first request")?;
                check!(b == format!("0/_/{}", 16 << z), "first request Block2 {b}");
            } else {
                check!(reqs[0].option("Block2").is_none(), "no Block2 at first");
            }
            responses_of(&pdus)
                .iter()
                .map(|r| {
                    let b = r.option("Block2").unwrap_or("");
                    let parts: Vec<&str> = b.split('/').collect();
                    let size: u32 = parts.get(2).and_then(|v| v.parse().ok()).unwrap_or(0);
                    (
                        parts[0].parse().unwrap_or(u32::MAX),
                        parts.get(1) == Some(&"M"),
                        size.max(16).trailing_zeros() - 4,
                        r.payload
                            .as_deref()
                            .map_or(0, |p| p.len().saturating_sub(2)),
                    )
                })
                .collect()
        }
        Client::Aiocoap => {
            let spec = match szx {
                Some(z) => json!([{"method": "GET", "uri": uri, "block2_szx": z}]),
                None => json!([{"method": "GET", "uri": uri}]),
            };
            let rs = aiocoap(spec);
            let mut whole = Vec::new();
            let mut blocks = Vec::new();
            for r in &rs {
                check!(a_code(r) == "2.05", "code {}", a_code(r));
                let p = a_payload(r);
                whole.extend_from_slice(&p);
                match a_option(r, BLOCK2) {
                    Some(b) => {
                        let (num, more, z) = block(&b);
                        blocks.push((num, more, z, p.len()));
                    }
                    None => blocks.push((0, false, 6, p.len())),
                }
            }
            if szx.is_some() {
                check!(whole == body, "whole, no gaps: {} bytes", whole.len());
            } else {
                // aiocoap assembles a late-negotiated body itself: one response, whole.
                check!(whole == body, "whole: {} bytes", whole.len());
                return Ok(());
            }
            blocks
        }
    };
    check!(blocks.len() > 1, "block-wise: {blocks:?}");
    let act = blocks[0].2;
    if let Some(z) = szx {
        check!(act <= z, "SZX {act} <= desired {z}");
    }
    for (i, (num, more, z, len)) in blocks.iter().enumerate() {
        let last = i + 1 == blocks.len();
        check!(*num as usize == i, "block {i} numbered {num}: {blocks:?}");
        check!(*more != last, "M of block {i}: {blocks:?}");
        check!(*z == act, "SZX of block {i}: {blocks:?}");
        if !last {
            check!(*len == 16 << act, "block {i} full: {len} bytes");
        } else {
            check!(*len <= 16 << act, "last block {len} bytes");
        }
    }
    Ok(())
}

/// BLOCK_03: PUT of 2,000 bytes to /large-update (a topic's data) block-wise (Block1,
/// 64-byte blocks with libcoap; aiocoap picks its own).
fn large_put(s: &Servers, c: Client, t: &str) -> Outcome {
    let body = large_text(2000);
    let uri = s.b(&format!("/ps/data/{t}"));
    match c {
        Client::Libcoap => {
            let file = s.file(&format!("put-{t}"), &body);
            let pdus = libcoap(&["-m", "put", "-b", "64", "-t", "0", "-f", &file, &uri]);
            let reqs = requests_of(&pdus);
            let resps = responses_of(&pdus);
            check!(
                reqs.len() == resps.len() && reqs.len() > 1,
                "block-wise: {} requests",
                reqs.len()
            );
            for (i, (q, r)) in reqs.iter().zip(&resps).enumerate() {
                let last = i + 1 == reqs.len();
                let b1 = q.option("Block1").ok_or("Block1 in a request")?;
                check!(
                    b1 == format!("{i}/{}/64", if last { "_" } else { "M" }),
                    "request Block1 {b1}"
                );
                let codes: &[&str] = if last {
                    &["2.01", "2.04"]
                } else {
                    &["2.31", "2.04"]
                };
                check!(codes.contains(&r.code.as_str()), "block {i}: {}", r.code);
                let rb1 = r.option("Block1").ok_or("Block1 in a response")?;
                check!(rb1.starts_with(&format!("{i}/")), "response Block1 {rb1}");
            }
        }
        Client::Aiocoap => {
            let r = aiocoap(json!([{"method": "PUT", "uri": uri, "content_format": 0,
                "payload": String::from_utf8(body.clone()).unwrap()}]))
            .remove(0);
            check!(["2.01", "2.04"].contains(&a_code(&r)), "PUT {}", a_code(&r));
        }
    }
    let (code, _, p) = get_etag(Client::Aiocoap, &uri, None)?;
    check!(
        code == "2.05" && p == body,
        "the complete updated resource ({} bytes)",
        p.len()
    );
    Ok(())
}

/// BLOCK_04: POST creating /large-create: a znode created with 2,000 bytes of data by a
/// block-wise POST; 2.01 with the Location-Path of the new znode.
fn large_create(s: &Servers, c: Client, t: &str) -> Outcome {
    let data = large_text(2000);
    let mut cbor = vec![0xa3, 0x64];
    cbor.extend_from_slice(b"data");
    cbor.extend_from_slice(&[0x59, (data.len() >> 8) as u8, data.len() as u8]);
    cbor.extend_from_slice(&data);
    cbor.push(0x69);
    cbor.extend_from_slice(b"ephemeral");
    cbor.extend_from_slice(&[0xf4, 0x6a]);
    cbor.extend_from_slice(b"sequential");
    cbor.push(0xf4);
    let uri = s.z(&format!("/z/large-create-{t}"));
    let location: Vec<String> = match c {
        Client::Libcoap => {
            let file = s.file(&format!("create-{t}"), &cbor);
            let pdus = libcoap(&["-m", "post", "-b", "64", "-t", "60", "-f", &file, &uri]);
            let resps = responses_of(&pdus);
            check!(resps.len() > 1, "block-wise");
            for r in &resps[..resps.len() - 1] {
                check!(r.code == "2.31", "2.31 Continue: {}", r.code);
                check!(
                    r.option("Block1").is_some_and(|b| b.contains("/M/")),
                    "atomic: Block1 with M"
                );
            }
            let last = resps.last().unwrap();
            check!(last.code == "2.01", "2.01: {}", last.code);
            last.all("Location-Path")
                .iter()
                .map(|v| v.to_string())
                .collect()
        }
        Client::Aiocoap => {
            let r = aiocoap_raw(json!([{"method": "POST", "uri": uri,
                "options": [[CONTENT_FORMAT, "3c"]], "payload_hex": hex::encode(&cbor)}]))
            .remove(0);
            check!(a_code(&r) == "2.01", "2.01: {}", a_code(&r));
            a_options(&r, LOCATION_PATH)
                .iter()
                .map(|h| String::from_utf8(hex::decode(h).unwrap()).unwrap())
                .collect()
        }
    };
    let want = vec!["z".to_string(), format!("large-create-{t}")];
    check!(location == want, "Location-Path {location:?}");
    let (code, _, p) = get_etag(Client::Aiocoap, &uri, None)?;
    check!(
        code == "2.05" && p.windows(data.len()).any(|w| w == data),
        "created whole"
    );
    Ok(())
}

// ---- observe ----

/// A running observation: libcoap (`-s`) or aiocoap's script; its messages as they come.
struct Observation {
    child: std::process::Child,
    rx: std::sync::mpsc::Receiver<String>,
    client: Client,
}

impl Observation {
    fn start(uri: &str, c: Client, non: bool, count: usize) -> Observation {
        let mut cmd = match c {
            Client::Libcoap => {
                common::provision::libcoap();
                let mut cmd = Command::new("coap-client-notls");
                cmd.args(["-v", "7", "-s", "15"]);
                if non {
                    cmd.arg("-N");
                }
                cmd.arg(uri);
                cmd
            }
            Client::Aiocoap => {
                let mut cmd = Command::new(common::provision::python());
                cmd.arg(aiocoap_script())
                    .args(["observe", uri, if non { "NON" } else { "CON" }])
                    .arg(count.to_string());
                cmd
            }
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Observation {
            child,
            rx,
            client: c,
        }
    }

    /// The next response or notification: (code, mtype, token, Observe, Content-Format,
    /// payload); `None` after 15 s or at the end.
    fn next(&mut self) -> Option<Msg> {
        loop {
            let line = self.rx.recv_timeout(Duration::from_secs(15)).ok()?;
            match self.client {
                Client::Libcoap => {
                    let Some(p) = Pdu::parse(&line) else { continue };
                    if !p.is_response() {
                        continue;
                    }
                    return Some(Msg {
                        code: p.code.clone(),
                        mtype: p.mtype.clone(),
                        token: p.token.clone(),
                        observe: p.option("Observe").and_then(|v| v.parse().ok()),
                        cf: p.option("Content-Format").map(str::to_string),
                        payload: p
                            .payload
                            .clone()
                            .unwrap_or_default()
                            .trim_matches('\'')
                            .to_string(),
                    });
                }
                Client::Aiocoap => {
                    let v: Value = serde_json::from_str(&line).ok()?;
                    if v.get("ended").is_some() {
                        return None;
                    }
                    let observe = a_option(&v, OBSERVE).map(|h| {
                        u32::from_str_radix(if h.is_empty() { "0" } else { &h }, 16).unwrap()
                    });
                    return Some(Msg {
                        code: a_code(&v).into(),
                        mtype: v["mtype"].as_str().unwrap_or("").into(),
                        token: v["token_hex"].as_str().unwrap_or("").into(),
                        observe,
                        cf: a_option(&v, CONTENT_FORMAT),
                        payload: String::from_utf8_lossy(&a_payload(&v)).into_owned(),
                    });
                }
            }
        }
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
struct Msg {
    code: String,
    mtype: String,
    token: String,
    observe: Option<u32>,
    cf: Option<String>,
    payload: String,
}

/// The registration's answer: 2.05 with Observe and a Content-Format.
fn registered(o: &mut Observation, non: bool) -> Result<Msg, String> {
    let first = o.next().ok_or("no answer to the registration")?;
    check!(first.code == "2.05", "registration {}", first.code);
    if !non {
        check!(
            first.mtype == "ACK",
            "registration answered by {}",
            first.mtype
        );
    }
    check!(first.observe.is_some(), "Observe in the answer");
    check!(first.cf.is_some(), "Content-Format in the answer");
    Ok(first)
}

/// OBS_01/02/09: register on /obs (a topic's data), publish twice (the TD's "changes
/// periodically" / "update"): notifications 2.05 with the same token and Content-Format,
/// increasing Observe, the new payloads. Pehra's notifications are NON (a CON at least
/// every 60 s, RFC 7641 §4.5): OBS_01's "Type = CON" is not checked.
fn observe(s: &Servers, c: Client, t: &str, non: bool) -> Outcome {
    let mut o = Observation::start(&s.b(&format!("/ps/data/{t}")), c, non, 3);
    let first = registered(&mut o, non)?;
    let mut last = first.observe.unwrap();
    for value in ["1", "2"] {
        s.publish(t, value);
        let n = o.next().ok_or("no notification")?;
        check!(n.code == "2.05", "notification {}", n.code);
        if non {
            check!(n.mtype == "NON", "a NON notification: {}", n.mtype);
        }
        check!(
            n.token == first.token,
            "token {} != {}",
            n.token,
            first.token
        );
        check!(
            n.cf == first.cf,
            "Content-Format {:?} != {:?}",
            n.cf,
            first.cf
        );
        let seq = n.observe.ok_or("Observe")?;
        check!(seq > last, "Observe {seq} after {last}");
        last = seq;
        check!(n.payload.contains(value), "payload {:?}", n.payload);
    }
    Ok(())
}

/// OBS_07: DELETE of /obs (the topic's data) ends the observation with 4.04 without
/// Observe.
fn observe_delete(s: &Servers, c: Client, t: &str) -> Outcome {
    let uri = s.b(&format!("/ps/data/{t}"));
    let mut o = Observation::start(&uri, c, false, 3);
    let first = registered(&mut o, false)?;
    s.publish(t, "1");
    let n = o.next().ok_or("no notification")?;
    check!(n.code == "2.05", "notification {}", n.code);
    let pdus = libcoap(&["-m", "delete", &uri]);
    check!(last_response(&pdus).code == "2.02", "deleted");
    let end = o.next().ok_or("no final notification")?;
    check!(end.code == "4.04", "final notification {}", end.code);
    check!(end.token == first.token, "its token");
    check!(
        end.observe.is_none(),
        "no Observe in the final notification"
    );
    Ok(())
}

/// OBS_08: a publication in another Content-Format ends the observation with 4.06.
fn observe_content_format(s: &Servers, c: Client, t: &str) -> Outcome {
    let uri = s.b(&format!("/ps/data/{t}"));
    let mut o = Observation::start(&uri, c, false, 3);
    registered(&mut o, false)?;
    let file = s.file("cf", &[0xa0]);
    let pdus = libcoap(&["-m", "put", "-t", "60", "-f", &file, &uri]);
    check!(
        last_response(&pdus).code.starts_with("2.0"),
        "published CBOR"
    );
    let n = o.next().ok_or("no notification")?;
    check!(
        n.code == "4.06",
        "notification {} ({:?}), not 4.06",
        n.code,
        n.cf
    );
    check!(n.observe.is_none(), "no Observe");
    Ok(())
}

/// OBS_10: a GET without Observe does not cancel the observation.
fn observe_get(s: &Servers, c: Client, t: &str) -> Outcome {
    let uri = s.b(&format!("/ps/data/{t}"));
    let mut o = Observation::start(&uri, c, false, 3);
    let first = registered(&mut o, false)?;
    let (code, _, _) = get_etag(c, &uri, None)?;
    check!(code == "2.05", "plain GET {code}");
    match c {
        Client::Libcoap => {
            let pdus = libcoap(&[&uri]);
            check!(
                last_response(&pdus).option("Observe").is_none(),
                "no Observe in the plain GET's answer"
            );
        }
        Client::Aiocoap => {
            let r = aiocoap(json!([{"method": "GET", "uri": uri}])).remove(0);
            check!(
                a_option(&r, OBSERVE).is_none(),
                "no Observe in the plain GET's answer"
            );
        }
    }
    s.publish(t, "after");
    let n = o.next().ok_or("notifications stopped")?;
    check!(
        n.code == "2.05" && n.token == first.token,
        "still notified: {n:?}"
    );
    check!(n.payload.contains("after"), "the new value");
    Ok(())
}

/// OBS_12: GET with Observe = 1 and the same token cancels: the answer has no Observe.
/// libcoap sends it when its `-s` time is over; aiocoap when the observation is
/// cancelled (its answer is not shown by aiocoap: libcoap only).
fn observe_cancel(s: &Servers, c: Client, t: &str) -> Outcome {
    let uri = s.b(&format!("/ps/data/{t}"));
    match c {
        Client::Libcoap => {
            let pdus = libcoap(&["-s", "1", &uri]);
            let reqs = requests_of(&pdus);
            let cancel = reqs
                .iter()
                .find(|r| r.option("Observe") == Some("1"))
                .ok_or("libcoap sent no Observe 1")?;
            check!(cancel.token == reqs[0].token, "the same token");
            // libcoap 4.3.1 exits without waiting for the answer: the server's side of
            // this TD is checked with aiocoap.
            check!(cancel.mtype == "CON", "a CON cancellation");
            Ok(())
        }
        Client::Aiocoap => {
            let r = aiocoap(json!([{"method": "GET", "uri": uri, "options": [[OBSERVE, "01"]]}]))
                .remove(0);
            a_piggybacked(&r, &["2.05"])?;
            check!(a_option(&r, OBSERVE).is_none(), "no Observe");
            Ok(())
        }
    }
}

// ---- the tests ----

#[test]
fn every_td_in_scope_is_run_or_listed() {
    for id in &in_scope() {
        let listed = NOT_APPLICABLE.iter().any(|(i, _)| i == id);
        let runnable = RUNNERS.contains(&id.as_str());
        assert!(
            listed ^ runnable,
            "{id}: run ({runnable}) or listed as not applicable ({listed}), exactly one"
        );
    }
}

/// Every TD with a runner in [`run`].
const RUNNERS: &[&str] = &[
    "TD_COAP_CORE_01",
    "TD_COAP_CORE_02",
    "TD_COAP_CORE_03",
    "TD_COAP_CORE_04",
    "TD_COAP_CORE_05",
    "TD_COAP_CORE_06",
    "TD_COAP_CORE_07",
    "TD_COAP_CORE_08",
    "TD_COAP_CORE_10",
    "TD_COAP_CORE_12",
    "TD_COAP_CORE_13",
    "TD_COAP_CORE_14",
    "TD_COAP_CORE_18",
    "TD_COAP_CORE_20",
    "TD_COAP_CORE_21",
    "TD_COAP_CORE_22",
    "TD_COAP_CORE_23",
    "TD_COAP_CORE_31",
    "TD_COAP_OBS_01",
    "TD_COAP_OBS_02",
    "TD_COAP_OBS_07",
    "TD_COAP_OBS_08",
    "TD_COAP_OBS_09",
    "TD_COAP_OBS_10",
    "TD_COAP_OBS_12",
    "TD_COAP_BLOCK_01",
    "TD_COAP_BLOCK_02",
    "TD_COAP_BLOCK_03",
    "TD_COAP_BLOCK_04",
    "TD_COAP_BLOCK_06",
    "TD_COAP_LINK_01",
    "TD_COAP_LINK_02",
    "TD_COAP_LINK_03",
    "TD_COAP_LINK_07",
    "TD_COAP_LINK_08",
    "TD_COAP_LINK_09",
];

#[test]
fn etsi_plugtest_tds_pass_with_libcoap_and_aiocoap() {
    let s = Servers::start("plugtest");
    let only = std::env::var("PLUGTEST_TD").ok();
    let mut failed = Vec::new();
    let mut table = String::new();
    for id in RUNNERS {
        if only.as_deref().is_some_and(|o| !id.contains(o)) {
            continue;
        }
        let mut row = format!("{id:18}");
        for c in [Client::Libcoap, Client::Aiocoap] {
            if *id == "TD_COAP_CORE_31" && c == Client::Aiocoap {
                row += " (raw UDP)";
                continue;
            }
            let outcome = run(&s, id, c).expect("a runner");
            match outcome {
                Ok(()) => row += &format!(" {c:?}: pass"),
                Err(e) => {
                    row += &format!(" {c:?}: FAIL ({e})");
                    failed.push(format!("{id} with {c:?}: {e}"));
                }
            }
        }
        eprintln!("{row}");
        table += &row;
        table.push('\n');
    }
    assert!(failed.is_empty(), "failed TDs:\n{}", failed.join("\n"));
}
