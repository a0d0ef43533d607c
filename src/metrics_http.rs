//! `--metrics-listen`: the Prometheus/OpenMetrics endpoint of the long-running commands.
//! A tiny HTTP/1.1 responder (one request per connection, `GET /metrics` only) over the
//! `prometheus-client` registry's text encoding.

use anyhow::{Context, Result};
use clap::Args;
use parking_lot::Mutex;
use pehra_shared::coap::Stats;
use pehra_shared::driver::Handle;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The metrics flag, shared by `pehra zookeeper` and `pehra broker`.
#[derive(Args, Clone, Debug)]
pub struct MetricsArgs {
    /// Serve Prometheus/OpenMetrics metrics over HTTP at http://ADDR/metrics. A bare PORT
    /// means 127.0.0.1:PORT (loopback); another host only when named (HOST:PORT, e.g.
    /// 0.0.0.0:9100): the endpoint has no authentication. Off when not given.
    #[arg(long, value_name = "[HOST:]PORT", value_parser = parse_listen)]
    metrics_listen: Option<SocketAddr>,
}

/// A `--metrics-listen` value: `PORT` (loopback) or `HOST:PORT`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse()
        .map_err(|_| format!("{text:?} is neither a PORT nor a HOST:PORT address"))
}

impl MetricsArgs {
    /// The address asked for, if any.
    pub fn listen(&self) -> Option<SocketAddr> {
        self.metrics_listen
    }
}

/// The CoAP engine's counters of a process's endpoint (retransmissions, timeouts,
/// duplicates...), read from the endpoint's task before each scrape.
#[derive(Clone, Default)]
pub struct CoapMetrics {
    /// The endpoint now serving (a broker that rejoins gets a new one).
    handle: Arc<Mutex<Option<Handle>>>,
    /// The counters read before the scrape being encoded.
    last: Arc<Mutex<Stats>>,
}

impl std::fmt::Debug for CoapMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoapMetrics")
            .field("last", &self.last)
            .finish()
    }
}

impl CoapMetrics {
    /// Reads the counters of this endpoint from now on.
    pub fn attach(&self, handle: Handle) {
        *self.handle.lock() = Some(handle);
    }

    /// Registers the counters in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    /// Asks the endpoint for its counters (bounded: a stuck endpoint keeps the last).
    async fn refresh(&self) {
        let handle = self.handle.lock().clone();
        if let Some(handle) = handle {
            if let Ok(Ok(stats)) =
                tokio::time::timeout(Duration::from_secs(1), handle.stats()).await
            {
                *self.last.lock() = stats;
            }
        }
    }
}

impl Collector for CoapMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.last.lock().clone();
        for (name, help, value) in [
            ("pehra_coap_datagrams_received", "CoAP datagrams received", stats.received),
            ("pehra_coap_datagrams_sent", "CoAP datagrams sent (retransmissions included)", stats.sent),
            ("pehra_coap_retransmissions", "CON retransmissions (a lost datagram or ACK)", stats.retransmissions),
            ("pehra_coap_timeouts", "Requests of this process that timed out (no ACK after the last retransmission, or no response)", stats.timeouts),
            ("pehra_coap_duplicates", "Duplicates received (answered from the duplicate cache or dropped)", stats.duplicates),
            ("pehra_coap_malformed", "Datagrams that were not valid CoAP", stats.malformed),
            ("pehra_coap_resets_sent", "Messages answered with Reset", stats.resets_sent),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        Ok(())
    }
}

/// Work done before each scrape (reads the encoding needs), bounded by [`REFRESH_TIMEOUT`].
pub type Refresh =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// How long a scrape waits for [`Refresh`] before answering with what it has.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// The content type of the OpenMetrics text the registry encodes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The longest request head read (a scraper's GET is a few hundred bytes).
const MAX_HEAD: usize = 8 * 1024;
/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` and serves `registry` there in the background (with `coap`'s counters
/// read before each scrape); returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    mut registry: Registry,
    coap: CoapMetrics,
    refresh: Option<Refresh>,
) -> Result<SocketAddr> {
    coap.register(&mut registry);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen: cannot listen on tcp {addr}"))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!(%local, "metrics served beyond loopback, without authentication");
    }
    let registry = Arc::new(registry);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let (registry, coap) = (registry.clone(), coap.clone());
                    let refresh = refresh.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &registry, &coap, refresh).await {
                            tracing::debug!(error = %e, "metrics connection");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}

/// Reads one request head and answers it, then closes the connection.
async fn answer(
    mut stream: TcpStream,
    registry: &Registry,
    coap: &CoapMetrics,
    refresh: Option<Refresh>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > MAX_HEAD {
                return Ok(false);
            }
        }
    })
    .await
    .unwrap_or(Ok(false))?;
    let response = if complete {
        coap.refresh().await;
        if let Some(refresh) = refresh {
            let _ = tokio::time::timeout(REFRESH_TIMEOUT, refresh()).await;
        }
        respond(&head, registry)
    } else {
        status(400, "Bad Request", "a request head of at most 8 KiB\n")
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// The whole response to a request head.
fn respond(head: &[u8], registry: &Registry) -> Vec<u8> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" && path != "/" {
        return status(404, "Not Found", "metrics are at /metrics\n");
    }
    if method != "GET" && method != "HEAD" {
        return status(405, "Method Not Allowed", "GET /metrics\n");
    }
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, registry) {
        return status(500, "Internal Server Error", &format!("{e}\n"));
    }
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method == "GET" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn status(code: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    fn registry() -> Registry {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        counter.inc_by(3);
        registry.register("things", "Things", counter);
        registry
    }

    #[test]
    fn get_metrics_answers_the_openmetrics_text() {
        let out = String::from_utf8(respond(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            &registry(),
        ))
        .unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("# TYPE things counter\n"), "{out}");
        assert!(out.contains("\nthings_total 3\n"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        let r = registry();
        let out = String::from_utf8(respond(b"GET /x HTTP/1.1\r\n\r\n", &r)).unwrap();
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
        let out = String::from_utf8(respond(b"POST /metrics HTTP/1.1\r\n\r\n", &r)).unwrap();
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    }

    #[test]
    fn a_bare_port_is_loopback() {
        assert_eq!(
            parse_listen("9100").unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert_eq!(
            parse_listen("0.0.0.0:9100").unwrap(),
            "0.0.0.0:9100".parse().unwrap()
        );
        assert!(parse_listen("nope").is_err());
    }
}
