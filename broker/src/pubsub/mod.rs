//! The publish-subscribe interface of draft-ietf-core-coap-pubsub-21, so standard CoAP
//! clients (libcoap, aiocoap) can use Pehra without its own tools:
//!
//! | resource | rt | methods |
//! |---|---|---|
//! | `/ps` topic collection | `core.ps.coll` | GET (link-format, RFC 6690 query filters), FETCH (a properties filter), POST (create) |
//! | `/ps/{topic}` topic | `core.ps.conf` | GET, FETCH (some properties), POST/PUT (replace), iPATCH (change some), DELETE |
//! | `/ps/data/{topic}` topic-data | `core.ps.data` | PUT (publish), GET (latest; + Observe: subscribe), DELETE |
//!
//! Topic representations are CBOR maps with the draft's integer keys
//! ([`properties`]); errors are RFC 9290 problem details ([`problem`]); writes obey
//! If-Match / If-None-Match. Any broker takes a publication and produces it to a
//! partition of the topic, at its leader. A subscriber may talk to any broker: for each
//! observed topic the broker follows every partition (wherever its leader is) and
//! notifies its observers of each new record ([`data`]).

mod data;
pub mod problem;
pub mod properties;

use crate::client::{pubsub_properties_path, ClientError, ClusterClient};
use parking_lot::Mutex;
use pehra_cluster as cluster;
use pehra_shared::coap::conditions::{Conditions, Current};
use pehra_shared::coap::{
    link_format, option, Code, Request, Response, CONTENT_FORMAT_CBOR, CONTENT_FORMAT_LINK_FORMAT,
};
use pehra_shared::driver::{Handle, Incoming, Responder};
use pehra_shared::wire::{self, ErrorKind, TopicConfig};
use problem::problem;
use properties::{Key, Properties, PropertyError};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

/// Resource type of the topic collection.
pub const RT_COLLECTION: &str = "core.ps.coll";
/// Resource type of a topic (configuration) resource.
pub const RT_TOPIC: &str = "core.ps.conf";
/// Resource type of a topic-data resource.
pub const RT_DATA: &str = properties::RT_DATA;
/// The Content-Format of `application/core-pubsub+cbor`: "TBD606" in draft -21, not
/// assigned by IANA yet; requests may use 60 (`application/cbor`) as well.
pub const CONTENT_FORMAT_PUBSUB: u16 = 606;

/// The pub-sub state of one broker.
pub(crate) struct PubSub {
    cluster: ClusterClient,
    handle: Handle,
    next_partition: AtomicU32,
    /// The state of each followed topic's data (kept by its follow loop), shared by
    /// every GET that reads it.
    latest: Mutex<BTreeMap<String, Arc<data::DataState>>>,
    /// Reads of a topic's data from the log in progress: GETs that miss [`Self::latest`]
    /// at the same time share one (a flood of GETs of a large value would otherwise
    /// hold a copy of it each while they wait, issue 12).
    loading: Mutex<BTreeMap<String, Arc<tokio::sync::OnceCell<Arc<data::DataState>>>>>,
    /// Topics being followed for observers: the topic's identity and the loop.
    following: Mutex<BTreeMap<String, (u64, tokio::task::JoinHandle<()>)>>,
}

/// A topic as the zookeeper has it.
#[derive(Debug, Clone)]
struct Topic {
    name: String,
    config: TopicConfig,
    /// Its identity: the zxid that created its znode (a topic deleted and created again
    /// under the same name is another topic).
    id: u64,
    /// Its full representation.
    props: Properties,
    /// The version of its properties znode, if it has one.
    props_version: Option<u32>,
    /// The ETag of its representation.
    etag: [u8; 8],
}

impl PubSub {
    pub(crate) fn new(cluster: ClusterClient, handle: Handle) -> Arc<PubSub> {
        Arc::new(PubSub {
            cluster,
            handle,
            next_partition: AtomicU32::new(0),
            latest: Mutex::default(),
            loading: Mutex::default(),
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
        let request = &incoming.request;
        match (method, segments.as_slice()) {
            (Code::GET, ["ps"]) => self.list(request).await,
            (Code::FETCH, ["ps"]) => self.filter(request).await,
            (Code::POST, ["ps"]) => self.create(request).await,
            (Code::PUT | Code::POST, ["ps", "data", topic]) => self.publish(topic, request).await,
            (Code::GET, ["ps", "data", topic]) => self.read(topic, request).await,
            (Code::DELETE, ["ps", "data", topic]) => self.delete_data(topic, request).await,
            (Code::GET, ["ps", topic]) => self.get_topic(topic, request).await,
            (Code::FETCH, ["ps", topic]) => self.fetch_topic(topic, request).await,
            (Code::POST | Code::PUT, ["ps", topic]) => self.update(topic, request, true).await,
            (c, ["ps", topic]) if c == pehra_shared::coap::Method::IPatch.code() => {
                self.update(topic, request, false).await
            }
            (Code::DELETE, ["ps", topic]) => self.delete_topic(topic, request).await,
            (_, ["ps", ..]) => problem(
                Code::METHOD_NOT_ALLOWED,
                "method not allowed on this pub-sub resource",
            ),
            _ => problem(Code::NOT_FOUND, "no such pub-sub resource"),
        }
    }

    /// GET /ps: links to the topics; with RFC 6690 query filters (`rt=core.ps.data`,
    /// `href=...`, `ct=...`, `obs`), over the topics' and their topic-data resources'
    /// links.
    async fn list(&self, request: &Request) -> Response {
        let names = match self.topic_names().await {
            Ok(n) => n,
            Err(response) => return response,
        };
        let filters: Vec<&str> = request.queries().collect();
        let mut links = Vec::new();
        for name in names {
            links.push(link_format::Link::new(&format!("ps/{name}")).attr("rt", RT_TOPIC));
            if filters.is_empty() {
                continue;
            }
            let Ok(Some(topic)) = self.load_topic(&name).await else {
                continue;
            };
            let rt = topic.props.resource_type.as_deref().unwrap_or(RT_DATA);
            let mut link = link_format::Link::new(&data_resource(&name))
                .attr("rt", rt)
                .flag("obs");
            if let Some(ct) = topic.props.topic_content_format {
                link = link.attr("ct", &ct.to_string());
            }
            links.push(link);
        }
        Response::content(link_format::write(&links, &filters).into_bytes())
            .with_content_format(CONTENT_FORMAT_LINK_FORMAT)
    }

    /// FETCH /ps: the topics whose representation has every property of the filter
    /// with the same value (§2.4.2), as links.
    async fn filter(&self, request: &Request) -> Response {
        if let Err(response) = properties_body_format(request) {
            return response;
        }
        let wanted = match Properties::decode(request.payload()) {
            Ok(f) => f,
            Err(e) => return problem(Code::BAD_REQUEST, &e.to_string()),
        };
        let names = match self.topic_names().await {
            Ok(n) => n,
            Err(response) => return response,
        };
        let mut links = Vec::new();
        for name in names {
            if let Ok(Some(topic)) = self.load_topic(&name).await {
                if wanted.matches(&topic.props) {
                    links.push(link_format::Link::new(&format!("ps/{name}")));
                }
            }
        }
        Response::content(link_format::write(&links, &[]).into_bytes())
            .with_content_format(CONTENT_FORMAT_LINK_FORMAT)
    }

    /// POST /ps: creates a topic from its initial representation (§2.4.3).
    async fn create(self: &Arc<Self>, request: &Request) -> Response {
        if let Err(failed) = Conditions::of(request).check(Current::Present(None)) {
            return problem(Code::PRECONDITION_FAILED, &failed.to_string());
        }
        if let Err(response) = properties_body_format(request) {
            return response;
        }
        let given = match Properties::decode(request.payload()) {
            Ok(p) => p,
            Err(e) => return problem(Code::BAD_REQUEST, &e.to_string()),
        };
        let Some(name) = given.topic_name.clone() else {
            return problem(
                Code::BAD_REQUEST,
                &PropertyError::Missing(Key::TopicName.name()).to_string(),
            );
        };
        if let Some(uri) = &given.topic_data {
            if *uri != format!("/{}", data_resource(&name)) {
                return problem(
                    Code::BAD_REQUEST,
                    &format!(
                        "topic-data {uri:?}: this broker hosts the topic-data resource at /{}",
                        data_resource(&name)
                    ),
                );
            }
        }
        if let Err(e) = given.check_initialize() {
            return problem(Code::BAD_REQUEST, &e.to_string());
        }
        if let Err(response) = not_expired(&given) {
            return response;
        }
        let config = TopicConfig {
            partitions: given.partitions.unwrap_or(1),
            replication_factor: given.replication_factor.unwrap_or(1),
            min_insync_replicas: None,
        };
        let stored = given.stored();
        match self
            .cluster
            .create_topic_with_properties(&name, config, stored.encode())
            .await
        {
            Ok(()) => {}
            Err(ClientError::Invalid(message)) if message.starts_with("topic exists") => {
                return problem(Code::BAD_REQUEST, &format!("topic-name {name:?} is in use"));
            }
            Err(e @ (ClientError::Invalid(_) | ClientError::UnderReplicated { .. })) => {
                return problem(Code::BAD_REQUEST, &e.to_string())
            }
            Err(e) => return cluster_problem(e),
        }
        let topic = match self.load_topic(&name).await {
            Ok(Some(t)) => t,
            Ok(None) => return problem(Code::NOT_FOUND, "the topic was deleted at once"),
            Err(response) => return response,
        };
        if let (Some(value), Some(format)) = (&given.initialize, given.topic_content_format) {
            if let Err(response) = self.initialize(&topic, value.clone(), format).await {
                return response;
            }
        }
        let mut response = representation(Code::CREATED, &topic, request);
        response.add_option(option::LOCATION_PATH, b"ps".to_vec());
        response.add_option(option::LOCATION_PATH, name.into_bytes());
        response
    }

    /// GET /ps/{topic}.
    async fn get_topic(&self, name: &str, request: &Request) -> Response {
        match self.load_topic(name).await {
            Ok(Some(topic)) => representation(Code::CONTENT, &topic, request),
            Ok(None) => no_topic(name),
            Err(response) => response,
        }
    }

    /// FETCH /ps/{topic}: the properties a CBOR array of keys names (§2.5.2).
    async fn fetch_topic(&self, name: &str, request: &Request) -> Response {
        match request.content_format() {
            None | Some(CONTENT_FORMAT_CBOR) | Some(CONTENT_FORMAT_PUBSUB) => {}
            Some(other) => return unsupported_format(other, "application/cbor (60)"),
        }
        let keys = match properties::decode_key_list(request.payload()) {
            Ok(k) => k,
            Err(e) => return problem(Code::BAD_REQUEST, &e.to_string()),
        };
        match self.load_topic(name).await {
            Ok(Some(topic)) => Response::new(Code::CONTENT)
                .with_payload(properties::encode(&topic.props.to_value(&keys)))
                .with_content_format(representation_format(request))
                .with_option(option::ETAG, topic.etag.to_vec()),
            Ok(None) => no_topic(name),
            Err(response) => response,
        }
    }

    /// POST or PUT (`replace`: what is not given goes back to its default) or iPATCH
    /// (only what is given changes) on /ps/{topic} (§2.5.3, §2.5.4). The check of the
    /// conditions and the write are one step: the write is conditional on the version
    /// of the properties the check saw.
    async fn update(&self, name: &str, request: &Request, replace: bool) -> Response {
        if let Err(response) = properties_body_format(request) {
            return response;
        }
        let given = match Properties::decode(request.payload()) {
            Ok(p) => p,
            Err(e) => return problem(Code::BAD_REQUEST, &e.to_string()),
        };
        let conditions = Conditions::of(request);
        for _ in 0..8 {
            let topic = match self.load_topic(name).await {
                Ok(Some(t)) => t,
                Ok(None) => return no_topic(name),
                Err(response) => return response,
            };
            if let Err(failed) = conditions.check(Current::Present(Some(&topic.etag))) {
                return problem(Code::PRECONDITION_FAILED, &failed.to_string());
            }
            let next = match given.update(&topic.props, replace) {
                Ok(n) => n,
                Err(e) => return problem(Code::BAD_REQUEST, &e.to_string()),
            };
            if let Err(response) = not_expired(&given) {
                return response;
            }
            match self.write_properties(&topic, &next.stored()).await {
                Ok(true) => {}
                Ok(false) => continue, // changed meanwhile: check again
                Err(response) => return response,
            }
            return match self.load_topic(name).await {
                Ok(Some(topic)) => representation(Code::CHANGED, &topic, request),
                Ok(None) => no_topic(name),
                Err(response) => response,
            };
        }
        problem(
            Code::SERVICE_UNAVAILABLE,
            "the topic keeps changing: try again",
        )
    }

    /// Writes a topic's properties if they are still at the version `topic` saw;
    /// `Ok(false)` if they are not.
    async fn write_properties(&self, topic: &Topic, stored: &Properties) -> Result<bool, Response> {
        let zk = self.cluster.zookeeper();
        let path = pubsub_properties_path(&topic.name);
        let written = match topic.props_version {
            Some(version) => zk
                .set_data(&path, &stored.encode(), Some(version))
                .await
                .map(drop),
            None => zk
                .create(
                    &path,
                    &stored.encode(),
                    pehra_zookeeper::CreateMode::Persistent,
                )
                .await
                .map(drop),
        };
        match written {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    Some(ErrorKind::VersionMismatch | ErrorKind::NodeExists)
                ) =>
            {
                Ok(false)
            }
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Err(no_topic(&topic.name)),
            Err(e) => Err(zk_problem(&e)),
        }
    }

    /// DELETE /ps/{topic} (§2.5.5): the topic and its data go; every subscriber gets a
    /// final 4.04. With conditions, the topic's properties are first written at the
    /// version the check saw (so nothing changed it between the check and the delete).
    async fn delete_topic(&self, name: &str, request: &Request) -> Response {
        let conditions = Conditions::of(request);
        if !conditions.is_empty() {
            let topic = match self.load_topic(name).await {
                Ok(Some(t)) => t,
                Ok(None) => return no_topic(name),
                Err(response) => return response,
            };
            if let Err(failed) = conditions.check(Current::Present(Some(&topic.etag))) {
                return problem(Code::PRECONDITION_FAILED, &failed.to_string());
            }
            match self.write_properties(&topic, &topic.props.stored()).await {
                Ok(true) => {}
                Ok(false) => {
                    return problem(
                        Code::PRECONDITION_FAILED,
                        "the topic changed while it was being deleted",
                    )
                }
                Err(response) => return response,
            }
        }
        match self.cluster.delete_topic(name).await {
            Ok(()) => {
                self.end_topic(name, "the topic was deleted");
                Response::new(Code::DELETED)
            }
            Err(ClientError::Invalid(m)) if m.starts_with("no such topic") => no_topic(name),
            Err(e) => cluster_problem(e),
        }
    }

    /// The names of the topics.
    async fn topic_names(&self) -> Result<Vec<String>, Response> {
        match self.cluster.zookeeper().get_children(cluster::TOPICS).await {
            Ok((names, _)) => Ok(names),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(Vec::new()),
            Err(e) => Err(zk_problem(&e)),
        }
    }

    /// A topic as the zookeeper has it now; `None` if there is none (an expired topic
    /// is deleted now and is none).
    async fn load_topic(&self, name: &str) -> Result<Option<Topic>, Response> {
        let zk = self.cluster.zookeeper();
        let unavailable = |e: pehra_zookeeper::ZkError| match e.kind() {
            Some(ErrorKind::NotFound | ErrorKind::Malformed) => Ok(None),
            _ => Err(zk_problem(&e)),
        };
        let (bytes, stat) = match zk.get_data(&cluster::topic_path(name)).await {
            Ok(found) => found,
            Err(e) => return unavailable(e),
        };
        let Ok(config) = wire::decode::<TopicConfig>(&bytes) else {
            return Ok(None);
        };
        let (stored, props_version) = match zk.get_data(&pubsub_properties_path(name)).await {
            Ok((bytes, stat)) => (
                Properties::decode(&bytes).unwrap_or_default(),
                Some(stat.version),
            ),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => (Properties::default(), None),
            Err(e) => return unavailable(e),
        };
        let props = Properties {
            topic_name: Some(name.into()),
            topic_data: Some(format!("/{}", data_resource(name))),
            resource_type: Some(stored.resource_type.clone().unwrap_or(RT_DATA.into())),
            partitions: Some(config.partitions),
            replication_factor: Some(config.replication_factor),
            ..stored
        };
        if props
            .expiration_date
            .is_some_and(|at| at <= data::now_ms() / 1000)
        {
            tracing::info!(
                topic = name,
                "the topic's expiration-date has come: deleted"
            );
            if self.cluster.delete_topic(name).await.is_ok() {
                self.end_topic(name, "the topic expired");
            }
            return Ok(None);
        }
        let version = props_version.map_or(u64::MAX, u64::from);
        Ok(Some(Topic {
            name: name.into(),
            config,
            id: stat.czxid,
            etag: etag(&[&stat.czxid.to_be_bytes(), &version.to_be_bytes()]),
            props,
            props_version,
        }))
    }

    /// Ends everything this broker does for a topic that is gone: its follow loop, what
    /// it knows of its data, and every observation of its data (a final 4.04, RFC 7641
    /// §3.2).
    fn end_topic(&self, name: &str, why: &str) {
        if let Some((_, task)) = self.following.lock().remove(name) {
            task.abort();
        }
        self.latest.lock().remove(name);
        self.handle
            .notify_detached(&data_resource(name), problem(Code::NOT_FOUND, why));
    }
}

/// The path (no leading slash) of a topic's topic-data resource.
fn data_resource(topic: &str) -> String {
    format!("ps/data/{topic}")
}

/// A topic's representation, with its ETag.
fn representation(code: Code, topic: &Topic, request: &Request) -> Response {
    Response::new(code)
        .with_payload(topic.props.encode())
        .with_content_format(representation_format(request))
        .with_option(option::ETAG, topic.etag.to_vec())
}

/// The Content-Format a representation is sent in: `application/cbor` (60) if the
/// client asks for it (Accept) or wrote in it, else `application/core-pubsub+cbor`.
fn representation_format(request: &Request) -> u16 {
    match request
        .uint_option(option::ACCEPT)
        .or(request.uint_option(option::CONTENT_FORMAT))
    {
        Some(60) => CONTENT_FORMAT_CBOR,
        _ => CONTENT_FORMAT_PUBSUB,
    }
}

/// A body of topic properties must be `application/core-pubsub+cbor` (or
/// `application/cbor`, or say nothing): else 4.15.
fn properties_body_format(request: &Request) -> Result<(), Response> {
    match request.content_format() {
        None | Some(CONTENT_FORMAT_PUBSUB) | Some(CONTENT_FORMAT_CBOR) => Ok(()),
        Some(other) => Err(unsupported_format(
            other,
            "application/core-pubsub+cbor (606) or application/cbor (60)",
        )),
    }
}

fn unsupported_format(given: u16, wanted: &str) -> Response {
    problem(
        Code::UNSUPPORTED_CONTENT_FORMAT,
        &format!("Content-Format {given} is not accepted here: send {wanted}"),
    )
}

/// An `expiration-date` given in a request must be in the future (4.00).
fn not_expired(given: &Properties) -> Result<(), Response> {
    match given.expiration_date {
        Some(at) if at <= data::now_ms() / 1000 => Err(problem(
            Code::BAD_REQUEST,
            &format!("expiration-date {at} is not in the future"),
        )),
        _ => Ok(()),
    }
}

/// A zookeeper refusal or failure as the client's answer: 4.03 if this broker may not
/// do it (its ACL), else 5.03 (try again).
fn zk_problem(e: &pehra_zookeeper::ZkError) -> Response {
    match e.kind() {
        Some(ErrorKind::Forbidden | ErrorKind::Unauthorized) => {
            problem(Code::FORBIDDEN, &e.to_string())
        }
        _ => problem(Code::SERVICE_UNAVAILABLE, &e.to_string()).with_max_age(1),
    }
}

/// A failed cluster call as the client's answer.
fn cluster_problem(e: ClientError) -> Response {
    match e {
        ClientError::NoSuchTopic(topic) => no_topic(&topic),
        e @ (ClientError::Invalid(_) | ClientError::UnderReplicated { .. }) => {
            problem(Code::BAD_REQUEST, &e.to_string())
        }
        ClientError::Zookeeper(e) => zk_problem(&e),
        ClientError::Broker {
            kind: ErrorKind::Forbidden | ErrorKind::Unauthorized,
            message,
        } => problem(Code::FORBIDDEN, &message),
        e => problem(Code::SERVICE_UNAVAILABLE, &e.to_string()).with_max_age(1),
    }
}

fn no_topic(name: &str) -> Response {
    problem(Code::NOT_FOUND, &format!("no such topic: {name}"))
}

/// An 8-byte ETag: FNV-1a (64-bit) over the parts.
fn etag(parts: &[&[u8]]) -> [u8; 8] {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for b in (part.len() as u64).to_be_bytes().iter().chain(part.iter()) {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_when_any_part_does() {
        let a = etag(&[b"ab", b"c"]);
        assert_eq!(a, etag(&[b"ab", b"c"]));
        assert_ne!(a, etag(&[b"a", b"bc"]), "parts are delimited");
        assert_ne!(a, etag(&[b"ab", b"d"]));
    }

    #[test]
    fn representations_are_sent_as_asked() {
        let plain = Request::get("ps/t");
        assert_eq!(representation_format(&plain), CONTENT_FORMAT_PUBSUB);
        let cbor = Request::get("ps/t").with_option(option::ACCEPT, [60u8]);
        assert_eq!(representation_format(&cbor), CONTENT_FORMAT_CBOR);
        let text = Request::post("ps").with_content_format(0);
        assert_eq!(
            properties_body_format(&text).unwrap_err().code(),
            Code::UNSUPPORTED_CONTENT_FORMAT
        );
        let json = Request::post("ps").with_content_format(50);
        assert_eq!(
            properties_body_format(&json).unwrap_err().code(),
            Code::UNSUPPORTED_CONTENT_FORMAT
        );
        assert!(properties_body_format(&Request::post("ps")).is_ok());
    }
}
