//! The device gateway (`docs/devices.md`): what battery-powered nodes running
//! `device-fw` say to any broker.
//!
//! - `POST /dev/checkin`: [`CheckIn`] → [`CheckInReply`], from this broker's PEHRA view,
//!   naming the Pehredar and its address and counting the downlink records waiting. It
//!   is not traffic: a check-in never wakes the cluster.
//! - `POST /dev/{node}/readings`: [`DeviceReadings`] → [`ProduceResponse`], produced
//!   keyed by the node (traffic).
//! - `POST /dev/{node}/downlink`: [`DownlinkRequest`] → [`DownlinkResponse`], from
//!   `downlink.{node}` partition 0 at the offset of group `dev.{node}` (traffic only when
//!   records are answered).
//!
//! Every request is answered in its own task with the broker's [`ClusterClient`] (the
//! one pub-sub uses): it reads the zookeeper without this broker's session (so a
//! dormant broker answering a check-in does not renew its stretched lease), and
//! produces and fetches with the client's retries and leader following.

use super::{lookup_any, now_ms, pehra, State};
use crate::client::producer::{ProduceError, Producer};
use crate::client::{records_from, ClientError, ClusterClient};
use parking_lot::Mutex;
use pehra_cluster as cluster;
use pehra_shared::api::{cbor_response, decode_request, error_response};
use pehra_shared::coap::{Code, Request, Response};
use pehra_shared::driver::{Incoming, Responder};
use pehra_shared::wire::{
    self, Acks, CheckIn, DeviceReadings, DownlinkRequest, DownlinkResponse, ErrorKind,
    FetchResponse, NodeStatus, PartitionMetadata, Record,
};
use std::sync::Arc;
use std::time::Duration;

/// The most record bytes one downlink answer carries, so that it fits one 1 KiB CoAP
/// block with its framing (at least one record is answered, whatever its size).
pub(crate) const DOWNLINK_MAX_BYTES: u32 = 900;

/// How long a look at a partition's state (its high watermark) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The consumer group whose offset is a device's downlink position.
pub(crate) fn downlink_group(node: &str) -> String {
    format!("dev.{node}")
}

/// The topic of a device's downlink records.
pub(crate) fn downlink_topic(node: &str) -> String {
    format!("downlink.{node}")
}

/// Checks a device's name: 1 to 64 of `[A-Za-z0-9._-]`.
pub(crate) fn validate_node(node: &str) -> Result<(), String> {
    if node.is_empty()
        || node.len() > 64
        || !node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!(
            "invalid device name {node:?}: 1 to 64 of letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// The Pehredar's address as last read from its status, by (name, term).
#[derive(Default)]
pub(crate) struct PehredarCache(Mutex<Option<(String, u64, String)>>);

/// What a device route needs: the broker's state and its cluster client.
struct Gateway {
    state: Arc<State>,
    cluster: Arc<crate::pubsub::PubSub>,
}

impl Gateway {
    fn cluster(&self) -> &ClusterClient {
        self.cluster.cluster()
    }
}

/// Which device route.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route {
    CheckIn,
    Readings,
    Downlink,
}

/// Answers a device request in its own task (it may ask the zookeeper and other
/// brokers).
pub(crate) fn handle(state: &Arc<State>, route: Route, incoming: Incoming, responder: Responder) {
    let Some(pubsub) = state.pubsub.get().cloned() else {
        return responder.respond(error_response(ErrorKind::Busy, "the broker is starting"));
    };
    let gateway = Gateway {
        state: state.clone(),
        cluster: pubsub,
    };
    tokio::spawn(async move {
        let response = match route {
            Route::CheckIn => gateway.checkin(&incoming).await,
            Route::Readings => gateway.readings(&incoming).await,
            Route::Downlink => gateway.downlink(&incoming).await,
        };
        responder.respond(response);
    });
}

/// The `{node}` of the path, checked.
fn node_param(incoming: &Incoming) -> Result<String, Response> {
    let node = incoming.params.get("node").unwrap_or("");
    validate_node(node).map_err(|e| error_response(ErrorKind::Malformed, &e))?;
    Ok(node.to_string())
}

/// A client failure as the device's answer.
fn client_error(what: &str, e: ClientError) -> Response {
    match e {
        ClientError::Broker { kind, message } => {
            error_response(kind, &format!("{what}: {message}"))
        }
        ClientError::Invalid(m) => error_response(ErrorKind::Malformed, &format!("{what}: {m}")),
        ClientError::NoLeader(m) => error_response(ErrorKind::Busy, &format!("{what}: {m}")),
        other => error_response(ErrorKind::Busy, &format!("{what}: {other}")),
    }
}

impl Gateway {
    /// `POST /dev/checkin`.
    async fn checkin(&self, incoming: &Incoming) -> Response {
        let checkin: CheckIn = match decode_request(&incoming.request) {
            Ok(c) => c,
            Err(response) => return response,
        };
        if let Err(e) = validate_node(&checkin.node) {
            return error_response(ErrorKind::Malformed, &e);
        }
        let Some(node) = self.state.pehra.get() else {
            return error_response(ErrorKind::Busy, "PEHRA is not running in this broker yet");
        };
        let mut reply = node.answer_device_checkin(pehra_shared::driver::clock::now(), &checkin);
        if reply.pehredar_addr.is_none() {
            if let (Some(name), Some(term)) = (&reply.pehredar, &reply.term) {
                reply.pehredar_addr = self.pehredar_addr(name, term.number).await;
            }
        }
        reply.pending = match self.pending(&checkin.node).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(node = %checkin.node, error = %e, "device check-in: pending unknown");
                0
            }
        };
        // The gateway's clock as late as possible.
        reply.gateway_ms = Some(now_ms());
        tracing::debug!(node = %checkin.node, directive = ?reply.directive, pending = reply.pending, "device check-in answered");
        cbor_response(Code::CHANGED, &reply)
    }

    /// Where the Pehredar `name` of term `term` serves, from its status znode (cached
    /// per term).
    async fn pehredar_addr(&self, name: &str, term: u64) -> Option<String> {
        let cache = &self.state.pehredar_cache;
        if let Some((n, t, addr)) = cache.0.lock().as_ref() {
            if n == name && *t == term {
                return Some(addr.clone());
            }
        }
        let (data, _) = self
            .cluster()
            .zookeeper()
            .get_data(&cluster::pehra_node_path(name))
            .await
            .ok()?;
        let status: NodeStatus = wire::decode(&data).ok()?;
        *cache.0.lock() = Some((name.to_string(), term, status.addr.clone()));
        Some(status.addr)
    }

    /// How many downlink records wait for `node`: the committed records of
    /// `downlink.{node}`/0 beyond the offset of group `dev.{node}` (0 without the topic).
    async fn pending(&self, node: &str) -> Result<u32, ClientError> {
        let topic = downlink_topic(node);
        let Some(hw) = self.high_watermark(&topic).await? else {
            return Ok(0);
        };
        let committed = self
            .cluster()
            .committed_offset(&downlink_group(node), &topic, 0)
            .await?
            .unwrap_or(0);
        Ok(u32::try_from(hw.saturating_sub(committed)).unwrap_or(u32::MAX))
    }

    /// The high watermark of `topic`/0 (`None` if the topic does not exist), without
    /// counting as traffic anywhere: read here if this broker leads it, else asked of the
    /// leader with `GET /p/{topic}/0`.
    async fn high_watermark(&self, topic: &str) -> Result<Option<u64>, ClientError> {
        let zk = self.cluster().zookeeper();
        let data = match zk.get_data(&cluster::partition_path(topic, 0)).await {
            Ok((data, _)) => data,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {
                return match zk.exists(&cluster::topic_path(topic)).await? {
                    // Created, not assigned yet: nothing in it.
                    Some(_) => Ok(Some(0)),
                    None => Ok(None),
                };
            }
            Err(e) => return Err(e.into()),
        };
        let meta: PartitionMetadata = wire::decode(&data)
            .map_err(|e| ClientError::Invalid(format!("undecodable partition state: {e}")))?;
        let Some(leader) = meta.leader else {
            return Err(ClientError::NoLeader(format!(
                "{topic}/0 has no leader now"
            )));
        };
        if leader == self.state.id {
            if let Some(p) = lookup_any(&self.state, topic, 0) {
                let p = p.lock();
                if p.replica.leads() {
                    return Ok(Some(p.replica.high_watermark()));
                }
            }
        }
        let mut brokers = self.cluster().metadata().brokers;
        if !brokers.contains_key(&leader) {
            brokers = self.cluster().refresh().await?.brokers;
        }
        let addr: std::net::SocketAddr = brokers
            .get(&leader)
            .and_then(|b| b.addr.parse().ok())
            .ok_or_else(|| ClientError::NoLeader(format!("the leader of {topic}/0 is not live")))?;
        let handle = self
            .state
            .handle
            .get()
            .ok_or_else(|| ClientError::Invalid("the broker is starting".into()))?;
        super::access::secure_broker_peer(&self.state, leader, addr).await;
        let request = Request::get(&format!("p/{topic}/0"));
        let response = tokio::time::timeout(PROBE_TIMEOUT, handle.request(addr, request))
            .await
            .map_err(|_| ClientError::NoLeader(format!("the leader of {topic}/0 did not answer")))?
            .map_err(|source| ClientError::Unreachable { addr, source })?;
        let state: FetchResponse =
            pehra_shared::api::decode_response(&response).map_err(ClientError::from)?;
        Ok(Some(state.high_watermark))
    }

    /// `POST /dev/{node}/readings`.
    async fn readings(&self, incoming: &Incoming) -> Response {
        let node = match node_param(incoming) {
            Ok(n) => n,
            Err(response) => return response,
        };
        let readings: DeviceReadings = match decode_request(&incoming.request) {
            Ok(r) => r,
            Err(response) => return response,
        };
        if let Err(e) = cluster::validate_topic(&readings.topic) {
            return error_response(ErrorKind::Malformed, &e);
        }
        if readings.records.is_empty() {
            return error_response(
                ErrorKind::Malformed,
                "the readings hold no record: send at least one",
            );
        }
        pehra::traffic(&self.state);
        // Fresh metadata: which leaders sleep (their produces go to the Pehredar).
        let meta = match self.cluster().refresh().await {
            Ok(m) => m,
            Err(_) => self.cluster().metadata(),
        };
        let Some(topic) = meta.topics.get(&readings.topic) else {
            return error_response(
                ErrorKind::NotFound,
                &format!("no such topic: {}", readings.topic),
            );
        };
        let partitions = topic.config.partitions;
        let now = now_ms();
        let records: Vec<Record> = readings
            .records
            .into_iter()
            .map(|mut r| {
                if r.key.is_none() {
                    r.key = Some(node.as_bytes().to_vec());
                }
                if r.timestamp_ms == 0 {
                    r.timestamp_ms = now;
                }
                r
            })
            .collect();
        // A device always hears back: acks 0 is taken as 1.
        let acks = match readings.acks {
            Acks::None => Acks::Leader,
            other => other,
        };
        let producer = Producer::new(readings.topic.clone(), acks, records.len());
        let numbered = readings
            .first_seq
            .map(|seq| (device_producer_id(&node, readings.incarnation), seq));
        let sent = producer
            .send_numbered(
                self.cluster(),
                partitions,
                node.as_bytes(),
                records,
                numbered,
            )
            .await;
        let what = format!("producing to {}", readings.topic);
        match sent {
            Ok(Some(answer)) => cbor_response(Code::CHANGED, &answer),
            Ok(None) => error_response(ErrorKind::Internal, &format!("{what}: no answer")),
            Err(ProduceError::Send {
                partition, source, ..
            }) => client_error(&format!("{what}/{partition}"), source),
            Err(e) => error_response(ErrorKind::Busy, &format!("{what}: {e}")),
        }
    }

    /// `POST /dev/{node}/downlink`.
    async fn downlink(&self, incoming: &Incoming) -> Response {
        let node = match node_param(incoming) {
            Ok(n) => n,
            Err(response) => return response,
        };
        let request: DownlinkRequest = match decode_request(&incoming.request) {
            Ok(r) => r,
            Err(response) => return response,
        };
        let (topic, group) = (downlink_topic(&node), downlink_group(&node));
        let hw = match self.high_watermark(&topic).await {
            Ok(Some(hw)) => hw,
            Ok(None) => return self.create_downlink(&topic).await,
            Err(e) => return client_error(&format!("reading {topic}/0"), e),
        };
        let committed = match self.cluster().committed_offset(&group, &topic, 0).await {
            Ok(c) => c,
            Err(e) => return client_error(&format!("reading the offset of {group}"), e),
        };
        let offset = match request.from {
            Some(from) if from > hw => {
                return error_response(
                    ErrorKind::Malformed,
                    &format!("from {from} is past the end {hw} of {topic}"),
                )
            }
            Some(from) => {
                if committed != Some(from) {
                    if let Err(e) = self.cluster().commit_offset(&group, &topic, 0, from).await {
                        return client_error(&format!("committing {from} for {group}"), e);
                    }
                }
                from
            }
            // An offset beyond the end (a topic made anew): start at its end.
            None => committed.unwrap_or(0).min(hw),
        };
        if offset >= hw {
            return cbor_response(
                Code::CONTENT,
                &DownlinkResponse {
                    records: Vec::new(),
                    next: offset,
                    pending: 0,
                },
            );
        }
        pehra::traffic(&self.state);
        let max_bytes = request.max_bytes.clamp(1, DOWNLINK_MAX_BYTES);
        let fetched = match self.cluster().fetch(&topic, 0, offset, max_bytes).await {
            Ok(f) => f,
            Err(e) => return client_error(&format!("fetching {topic}/0 from {offset}"), e),
        };
        let all = match records_from(&fetched, offset) {
            Ok(r) => r,
            Err(e) => return client_error(&format!("reading {topic}/0"), e),
        };
        let records = fit(all, max_bytes as usize);
        let next = records.last().map_or(offset, |(o, _)| o + 1);
        let hw = fetched.high_watermark.max(hw);
        let pending = u32::try_from(hw.saturating_sub(next)).unwrap_or(u32::MAX);
        cbor_response(
            Code::CONTENT,
            &DownlinkResponse {
                records,
                next,
                pending,
            },
        )
    }

    /// Creates a device's downlink topic (one partition, replicated on up to three live
    /// brokers) and answers that nothing waits.
    async fn create_downlink(&self, topic: &str) -> Response {
        let live = match self.cluster().refresh().await {
            Ok(m) => m.brokers.len(),
            Err(_) => self.cluster().metadata().brokers.len(),
        };
        let replication = u32::try_from(live.clamp(1, 3)).unwrap_or(1);
        match self.cluster().create_topic(topic, 1, replication).await {
            Ok(()) => tracing::info!(%topic, replication, "created a device's downlink topic"),
            // Created meanwhile by another request.
            Err(ClientError::Invalid(m)) if m.starts_with("topic exists") => {}
            Err(e) => return client_error(&format!("creating {topic}"), e),
        }
        cbor_response(
            Code::CONTENT,
            &DownlinkResponse {
                records: Vec::new(),
                next: 0,
                pending: 0,
            },
        )
    }
}

/// The first records whose encoded size stays within `max_bytes` (at least one).
fn fit(records: Vec<(u64, Record)>, max_bytes: usize) -> Vec<(u64, Record)> {
    let mut used = 0;
    let mut out = Vec::new();
    for (offset, record) in records {
        let size = wire::encode(&(offset, &record)).map_or(usize::MAX, |b| b.len());
        if !out.is_empty() && used + size > max_bytes {
            break;
        }
        used = used.saturating_add(size);
        out.push((offset, record));
    }
    out
}

/// The producer id a device's readings are produced with: FNV-1a (64 bits) of its name
/// and incarnation, with the top bit cleared (ids at and near `u64::MAX` are refused by
/// the brokers).
fn device_producer_id(node: &str, incarnation: u32) -> u64 {
    let bytes = node.bytes().chain(incarnation.to_be_bytes());
    let hash = bytes.fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash >> 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_checked() {
        assert!(validate_node("dev-1").is_ok());
        assert!(validate_node("a.B_9-z").is_ok());
        assert!(validate_node(&"x".repeat(64)).is_ok());
        assert!(validate_node("").is_err());
        assert!(validate_node(&"x".repeat(65)).is_err());
        assert!(validate_node("dev/1").is_err());
        assert!(validate_node("dev 1").is_err());
        assert!(validate_node("dév").is_err());
    }

    #[test]
    fn downlink_answers_fit_but_hold_at_least_one_record() {
        let record = |n: usize| Record {
            key: None,
            value: vec![b'x'; n],
            timestamp_ms: 1,
            headers: Vec::new(),
        };
        let big = fit(vec![(0, record(2000)), (1, record(10))], 900);
        assert_eq!(big.len(), 1, "one record even if larger than the cap");
        let small: Vec<_> = (0..100).map(|i| (i, record(100))).collect();
        let some = fit(small, 900);
        assert!(!some.is_empty() && some.len() < 10, "{}", some.len());
        let total: usize = some
            .iter()
            .map(|(o, r)| wire::encode(&(o, r)).unwrap().len())
            .sum();
        assert!(total <= 900);
    }
}
