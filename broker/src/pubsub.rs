//! The publish-subscribe interface of draft-ietf-core-coap-pubsub, so standard CoAP
//! clients (libcoap, aiocoap) can use Pehra without its own tools:
//!
//! | resource | rt | methods |
//! |---|---|---|
//! | `/ps` topic collection | `core.ps.coll` | GET: link-format list of topics; POST `{"topic-name": T}`: create |
//! | `/ps/{topic}` topic configuration | `core.ps.conf` | GET: the configuration; DELETE |
//! | `/ps/data/{topic}` topic data | `core.ps.data` | PUT: publish; GET: latest value; GET + Observe: subscribe |
//!
//! Any broker takes a publication and produces it to a partition of the topic (round
//! robin), forwarding to that partition's leader. A subscriber may talk to any broker: for
//! each observed topic the broker follows every partition (wherever its leader is) and
//! notifies its observers of each new record. Records carry the publication's
//! Content-Format as the header `content-format`.

use crate::client::{records_from, ClusterClient};
use pehra_shared::api::{cbor_response, error_response};
use pehra_shared::coap::{link_format, Code, Response, CONTENT_FORMAT_LINK_FORMAT};
use pehra_shared::driver::{Handle, Incoming, Responder};
use pehra_shared::wire::{Acks, ErrorKind, Header, Record};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Resource type of the topic collection.
pub const RT_COLLECTION: &str = "core.ps.coll";
/// Resource type of a topic (configuration) resource.
pub const RT_TOPIC: &str = "core.ps.conf";
/// Resource type of a topic-data resource.
pub const RT_DATA: &str = "core.ps.data";

/// A publication as subscribers get it: the value and its Content-Format.
type Publication = (Vec<u8>, Option<u16>);

/// The pub-sub state of one broker.
pub(crate) struct PubSub {
    cluster: ClusterClient,
    handle: Handle,
    next_partition: AtomicU32,
    /// The latest publication seen per topic (value, Content-Format).
    latest: Mutex<HashMap<String, Publication>>,
    /// Topics being followed for observers.
    following: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl PubSub {
    pub(crate) fn new(cluster: ClusterClient, handle: Handle) -> Arc<PubSub> {
        Arc::new(PubSub {
            cluster,
            handle,
            next_partition: AtomicU32::new(0),
            latest: Mutex::default(),
            following: Mutex::default(),
        })
    }

    /// The cluster client it (and the Pehredar's forwarding) uses.
    pub(crate) fn cluster(&self) -> &ClusterClient {
        &self.cluster
    }

    /// Answers one pub-sub request (in its own task: it may ask the zookeeper).
    pub(crate) async fn handle(self: Arc<Self>, incoming: Incoming, responder: Responder) {
        let response = self.route(&incoming).await;
        responder.respond(response);
    }

    async fn route(self: &Arc<Self>, incoming: &Incoming) -> Response {
        let segments: Vec<&str> = incoming.request.path_segments().collect();
        let method = incoming.request.code();
        match (method, segments.as_slice()) {
            (Code::GET, ["ps"]) => self.list().await,
            (Code::POST, ["ps"]) => self.create(incoming).await,
            (Code::GET, ["ps", topic]) => self.configuration(topic).await,
            (Code::DELETE, ["ps", topic]) => match self.cluster.delete_topic(topic).await {
                Ok(()) => Response::new(Code::DELETED),
                Err(e) => error_response(ErrorKind::NotFound, &e.to_string()),
            },
            (Code::PUT, ["ps", "data", topic]) => self.publish(topic, incoming).await,
            (Code::GET, ["ps", "data", topic]) => {
                self.read(topic, incoming.request.observe() == Some(0))
                    .await
            }
            (_, ["ps", ..]) => error_response(
                ErrorKind::MethodNotAllowed,
                "method not allowed on this pub-sub resource",
            ),
            _ => error_response(ErrorKind::NotFound, "no such pub-sub resource"),
        }
    }

    async fn list(&self) -> Response {
        let meta = match self.cluster.refresh().await {
            Ok(m) => m,
            Err(e) => return error_response(ErrorKind::Busy, &e.to_string()),
        };
        let links: Vec<link_format::Link> = meta
            .topics
            .keys()
            .map(|t| link_format::Link::new(&format!("ps/{t}")).attr("rt", RT_TOPIC))
            .collect();
        Response::content(link_format::write(&links, &[]).into_bytes())
            .with_content_format(CONTENT_FORMAT_LINK_FORMAT)
    }

    async fn create(&self, incoming: &Incoming) -> Response {
        let config: ciborium::Value = match ciborium::from_reader(incoming.request.payload()) {
            Ok(v) => v,
            Err(e) => {
                return error_response(
                    ErrorKind::Malformed,
                    &format!("the topic configuration must be a CBOR map: {e}"),
                )
            }
        };
        let field = |name: &str| -> Option<&ciborium::Value> {
            config
                .as_map()?
                .iter()
                .find(|(k, _)| k.as_text() == Some(name))
                .map(|(_, v)| v)
        };
        let Some(name) = field("topic-name")
            .and_then(|v| v.as_text())
            .map(str::to_string)
        else {
            return error_response(
                ErrorKind::Malformed,
                "the topic configuration needs a text \"topic-name\"",
            );
        };
        if let Some(rt) = field("resource-type").and_then(|v| v.as_text()) {
            if rt != RT_TOPIC {
                return error_response(
                    ErrorKind::Malformed,
                    &format!("resource-type must be {RT_TOPIC}"),
                );
            }
        }
        let partitions = field("partitions")
            .and_then(|v| v.as_integer())
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(1);
        match self.cluster.create_topic(&name, partitions, 1).await {
            Ok(()) => {}
            Err(e) if e.to_string().starts_with("topic exists") => {
                return error_response(ErrorKind::NodeExists, &e.to_string());
            }
            Err(e) => return error_response(ErrorKind::Malformed, &e.to_string()),
        }
        let mut response = cbor_response(Code::CREATED, &configuration(&name, partitions));
        response.add_option(pehra_shared::coap::option::LOCATION_PATH, b"ps".to_vec());
        response.add_option(pehra_shared::coap::option::LOCATION_PATH, name.into_bytes());
        response
    }

    async fn configuration(&self, topic: &str) -> Response {
        let meta = self
            .cluster
            .refresh()
            .await
            .unwrap_or_else(|_| self.cluster.metadata());
        match meta.topics.get(topic) {
            Some(state) => cbor_response(
                Code::CONTENT,
                &configuration(topic, state.config.partitions),
            ),
            None => error_response(ErrorKind::NotFound, &format!("no such topic: {topic}")),
        }
    }

    async fn publish(self: &Arc<Self>, topic: &str, incoming: &Incoming) -> Response {
        // The publication goes on as one produce request, which must fit in the engine's
        // max_body_size with its framing: a larger one gets 4.13 with Size1 (RFC 7959
        // §2.9.3), a final answer, not a 5.03 that invites retries.
        if incoming.request.payload().len() > MAX_PUBLICATION_BYTES {
            let max = MAX_PUBLICATION_BYTES as u32;
            return Response::error(Code::REQUEST_ENTITY_TOO_LARGE, "publication too large")
                .with_option(
                    pehra_shared::coap::option::SIZE1,
                    pehra_shared::coap::option::encode_uint(max),
                );
        }
        let mut meta = self.cluster.metadata();
        if !meta.topics.contains_key(topic) {
            meta = self.cluster.refresh().await.unwrap_or(meta);
        }
        let Some(state) = meta.topics.get(topic) else {
            return error_response(
                ErrorKind::NotFound,
                &format!("no such topic: {topic} (create it with POST /ps)"),
            );
        };
        let partitions = state.config.partitions.max(1);
        let partition = self.next_partition.fetch_add(1, Ordering::Relaxed) % partitions;
        let format = incoming.request.content_format();
        let record = Record {
            key: None,
            value: incoming.request.payload().to_vec(),
            timestamp_ms: now_ms(),
            headers: format
                .map(|f| {
                    vec![Header {
                        key: "content-format".into(),
                        value: f.to_string().into_bytes(),
                    }]
                })
                .unwrap_or_default(),
        };
        match self
            .cluster
            .produce(topic, partition, &[record], Acks::Leader, None)
            .await
        {
            Ok(_) => Response::new(Code::CHANGED),
            Err(e) => error_response(ErrorKind::Busy, &format!("publishing to {topic}: {e}")),
        }
    }

    /// The latest value; with Observe, also starts following the topic so every new
    /// publication is notified.
    async fn read(self: &Arc<Self>, topic: &str, observe: bool) -> Response {
        let meta = self
            .cluster
            .refresh()
            .await
            .unwrap_or_else(|_| self.cluster.metadata());
        let Some(state) = meta.topics.get(topic) else {
            return error_response(ErrorKind::NotFound, &format!("no such topic: {topic}"));
        };
        if observe {
            self.follow(topic, state.config.partitions);
        }
        let latest = self.latest.lock().expect("lock").get(topic).cloned();
        let (value, format) = match latest {
            Some(v) => v,
            None => self.last_published(topic, state.config.partitions).await,
        };
        data_response(value, format)
    }

    /// The newest record over all partitions (by timestamp), or an empty value.
    async fn last_published(&self, topic: &str, partitions: u32) -> Publication {
        let mut best: Option<Record> = None;
        for p in 0..partitions {
            let Ok(head) = self.cluster.fetch(topic, p, 0, 1).await else {
                continue;
            };
            let from = head.log_end_offset.saturating_sub(1);
            let Ok(tail) = self.cluster.fetch(topic, p, from, 64 * 1024).await else {
                continue;
            };
            if let Ok(records) = records_from(&tail, from) {
                if let Some((_, r)) = records.into_iter().last() {
                    if best
                        .as_ref()
                        .is_none_or(|b| r.timestamp_ms >= b.timestamp_ms)
                    {
                        best = Some(r);
                    }
                }
            }
        }
        best.map(|r| (content_format(&r), r.value))
            .map(|(f, v)| (v, f))
            .unwrap_or_default()
    }

    fn follow(self: &Arc<Self>, topic: &str, partitions: u32) {
        let mut following = self.following.lock().expect("lock");
        if following.get(topic).is_some_and(|t| !t.is_finished()) {
            return;
        }
        let this = self.clone();
        let name = topic.to_string();
        following.insert(
            topic.to_string(),
            tokio::spawn(async move { this.follow_loop(name, partitions).await }),
        );
    }

    /// Follows every partition of a topic from its end, notifying observers of
    /// `ps/data/{topic}` with each new record.
    async fn follow_loop(&self, topic: String, partitions: u32) {
        let resource = format!("ps/data/{topic}");
        let mut next: BTreeMap<u32, u64> = BTreeMap::new();
        let (tick_tx, mut ticks) = tokio::sync::mpsc::unbounded_channel::<u32>();
        for p in 0..partitions {
            let Ok(head) = self.cluster.fetch(&topic, p, 0, 1).await else {
                return;
            };
            next.insert(p, head.log_end_offset);
            let Ok(mut observation) = self.cluster.observe_partition(&topic, p).await else {
                return;
            };
            let tx = tick_tx.clone();
            tokio::spawn(async move {
                while let Some(Ok(_)) = observation.next().await {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tick_tx);
        while let Some(p) = ticks.recv().await {
            let from = next[&p];
            let Ok(response) = self.cluster.fetch(&topic, p, from, 1024 * 1024).await else {
                continue;
            };
            let Ok(records) = records_from(&response, from) else {
                continue;
            };
            for (offset, record) in records {
                next.insert(p, offset + 1);
                let format = content_format(&record);
                self.latest
                    .lock()
                    .expect("lock")
                    .insert(topic.clone(), (record.value.clone(), format));
                self.handle
                    .notify_detached(&resource, data_response(record.value, format));
            }
        }
        tracing::debug!(%topic, "stopped following the topic");
    }
}

fn data_response(value: Vec<u8>, format: Option<u16>) -> Response {
    let response = Response::content(value);
    match format {
        Some(f) => response.with_content_format(f),
        None => response,
    }
}

fn content_format(record: &Record) -> Option<u16> {
    record
        .headers
        .iter()
        .find(|h| h.key == "content-format")
        .and_then(|h| std::str::from_utf8(&h.value).ok()?.parse().ok())
}

/// A topic's configuration as the draft describes it (text keys).
fn configuration(topic: &str, partitions: u32) -> ciborium::Value {
    use ciborium::Value;
    Value::Map(vec![
        (Value::Text("topic-name".into()), Value::Text(topic.into())),
        (
            Value::Text("resource-type".into()),
            Value::Text(RT_TOPIC.into()),
        ),
        (
            Value::Text("topic-data".into()),
            Value::Text(format!("ps/data/{topic}")),
        ),
        (
            Value::Text("partitions".into()),
            Value::Integer(partitions.into()),
        ),
    ])
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The largest publication: a produce request carries it with its record framing, and
/// must stay within the CoAP engine's default `max_body_size` (2 MiB).
pub const MAX_PUBLICATION_BYTES: usize = 2 * 1024 * 1024 - 16 * 1024;
