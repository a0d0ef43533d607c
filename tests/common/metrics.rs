//! Reading a process's `--metrics-listen` endpoint in tests: a scrape over HTTP/1.1, a
//! strict parser of the OpenMetrics text format, and one sample's value.

use super::free_udp_port;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A loopback port free for a metrics listener: a free UDP port number (from the test
/// process's own range, see [`free_udp_port`]) that is also free over TCP.
pub fn free_tcp_port() -> u16 {
    loop {
        let port = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The value of the sample `name` (with `labels`) that `addr` serves now.
pub fn scrape_value(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, _, body) = scrape(addr);
    value(&parse(&body), name, labels)
}

/// `GET /metrics` over HTTP/1.1: the status line, the headers and the body.
pub fn scrape(addr: SocketAddr) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a head and a body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// One sample: its name, its labels, its value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the OpenMetrics text format: `# TYPE`/`# HELP`/`# UNIT` lines, samples
/// `name{label="value",…} value`, and the final `# EOF`. Every sample must belong to a
/// family declared by a `# TYPE` line before it (its name, or the name with a suffix its
/// type allows).
pub fn parse(body: &str) -> Vec<Sample> {
    assert!(
        body.ends_with("# EOF\n"),
        "the exposition ends with # EOF:\n{body}"
    );
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in body.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            assert!(
                [
                    "counter",
                    "gauge",
                    "histogram",
                    "info",
                    "stateset",
                    "summary",
                    "unknown",
                    "gaugehistogram"
                ]
                .contains(&kind),
                "unknown type in {line:?}"
            );
            families.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        assert!(!line.starts_with('#'), "an unknown comment line {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("a number in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, parse_labels(labels.strip_suffix('}').expect("}"))),
            None => (series, BTreeMap::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "a metric name {name:?}"
        );
        let family = families
            .iter()
            .filter(|(f, _)| name == f.as_str() || name.starts_with(&format!("{f}_")))
            .max_by_key(|(f, _)| f.len())
            .unwrap_or_else(|| panic!("{name} has no # TYPE before it"));
        let suffix = &name[family.0.len()..];
        let allowed: &[&str] = match family.1.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        assert!(
            allowed.contains(&suffix),
            "{name}: suffix {suffix:?} for a {}",
            family.1
        );
        samples.push((name.to_string(), labels, value));
    }
    samples
}

/// `a="x",b="y"` (values without escapes: topic names and kinds here).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("label=value");
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .expect("a quoted value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .2
}
