//! Standard CoAP clients for tests: aiocoap (the venv's Python) sending any request, and
//! observing until the server ends the observation.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Python with aiocoap and its OSCORE support (provisioned on first use).
pub fn python() -> PathBuf {
    super::provision::python()
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// Sends `requests` (a JSON array, see tests/interop/aiocoap_requests.py) one after
/// the other with aiocoap; returns each response as JSON (`code`, `options`,
/// `payload_hex`, `payload_diag`).
pub fn requests(requests: &Value) -> Vec<Value> {
    run_requests(requests, false)
}

/// [`requests`], all sent at once (each from its own endpoint); the answers in the
/// order of the requests.
pub fn requests_together(requests: &Value) -> Vec<Value> {
    run_requests(requests, true)
}

fn run_requests(requests: &Value, together: bool) -> Vec<Value> {
    let args: &[&str] = if together { &["--together"] } else { &[] };
    run_script(
        "aiocoap_requests.py",
        args,
        requests,
        Duration::from_secs(90),
    )
}

/// Runs the aiocoap script `name` (under tests/interop) with `args`, `input` as JSON on
/// its stdin, bounded by `limit`; one JSON value per line of its output.
pub fn run_script(name: &str, args: &[&str], input: &Value, limit: Duration) -> Vec<Value> {
    let mut child = Command::new(python())
        .arg(script(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = super::wait_bounded(child, limit).expect("aiocoap finished in time");
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

/// One request with aiocoap.
pub fn request(request: Value) -> Value {
    requests(&Value::Array(vec![request])).remove(0)
}

/// A response's code, `"2.05"`.
pub fn code(response: &Value) -> &str {
    response["code"].as_str().unwrap()
}

/// A response's option `number` (its first value, hex).
pub fn option(response: &Value, number: u64) -> Option<String> {
    response["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o[0] == number)
        .map(|o| o[1].as_str().unwrap().to_string())
}

/// Every value of a response's option `number` (hex).
pub fn options(response: &Value, number: u64) -> Vec<String> {
    response["options"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o[0] == number)
        .map(|o| o[1].as_str().unwrap().to_string())
        .collect()
}

/// A response's payload as CBOR diagnostic notation without white space (`{0:"t"}`),
/// if it is CBOR.
pub fn diag(response: &Value) -> String {
    response["payload_diag"]
        .as_str()
        .unwrap_or("")
        .split_whitespace()
        .collect()
}

/// A response's payload as text.
pub fn text(response: &Value) -> String {
    let bytes = hex::decode(response["payload_hex"].as_str().unwrap()).unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An aiocoap observation (tests/interop/aiocoap_observe.py): its lines are `first
/// CODE PAYLOAD`, `notification CODE PAYLOAD`, and at the end `ended CODE` (an error
/// notification ended it), `ended` or `timeout`. Killed by PID on drop.
pub struct Observer {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Observer {
    /// Registers on `uri`; returns once the first response is in.
    pub fn start(uri: &str) -> (Observer, String) {
        let mut child = Command::new(python())
            .arg(script("aiocoap_observe.py"))
            .arg(uri)
            .arg("25")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a first response").unwrap();
        (Observer { child, lines }, first)
    }

    /// The next line (bounded by the script's own 25 s timeout).
    pub fn next(&mut self) -> Option<String> {
        self.lines.next().map(|l| l.unwrap())
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
