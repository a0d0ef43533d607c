//! Topic-data resources (`/ps/data/{topic}`, draft-ietf-core-coap-pubsub-21 §3.1, §3.2):
//! publish, read, subscribe, delete, and the loop that follows a topic's partitions for
//! this broker's subscribers.
//!
//! A publication is a record whose value is the payload, with its Content-Format as the
//! header `content-format`. Deleting the topic-data resource appends a record with the
//! header `pubsub: deleted` (and no value): the topic is HALF CREATED again until the
//! next publication. On a single-partition topic (the default) each publication is
//! appended only if the partition's log still ends where the broker read its state
//! ([`ProduceRequest::if_log_end`](pehra_shared::wire::ProduceRequest)), so 2.01 on the
//! first publication and If-Match / If-None-Match are exact even with several brokers
//! and publishers.

use super::problem::problem;
use super::{cluster_problem, data_resource, etag, no_topic, zk_problem, PubSub, Topic};
use crate::client::{records_from, ClientError};
use pehra_cluster as cluster;
use pehra_shared::coap::conditions::{Conditions, Current};
use pehra_shared::coap::{option, Code, Request, Response};
use pehra_shared::wire::{Acks, ErrorKind, Header, Record};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The record header with a publication's Content-Format (decimal).
const HEADER_CONTENT_FORMAT: &str = "content-format";
/// The record header marking the deletion of the topic-data resource.
const HEADER_PUBSUB: &str = "pubsub";
/// [`HEADER_PUBSUB`]'s value for a deletion.
const DELETED: &[u8] = b"deleted";
/// How often a conditional append is tried again when the log moved meanwhile.
const ATTEMPTS: u32 = 24;

/// A publication as subscribers get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Publication {
    value: Vec<u8>,
    format: Option<u16>,
    partition: u32,
    offset: u64,
}

impl Publication {
    /// Its ETag: where it is in the log, and what it is.
    fn etag(&self) -> [u8; 8] {
        let format = self
            .format
            .map(|f| f.to_be_bytes().to_vec())
            .unwrap_or_default();
        etag(&[
            &self.partition.to_be_bytes(),
            &self.offset.to_be_bytes(),
            &format,
            &self.value,
        ])
    }

    /// The 2.05 answer (and notification) with it.
    fn response(&self) -> Response {
        let response =
            Response::content(self.value.clone()).with_option(option::ETAG, self.etag().to_vec());
        match self.format {
            Some(f) => response.with_content_format(f),
            None => response,
        }
    }
}

/// The state of a topic-data resource (§3.1, the topic lifecycle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DataState {
    /// No publication yet, or the resource was deleted since the last one.
    HalfCreated,
    /// The latest publication.
    FullyCreated(Publication),
}

impl DataState {
    fn of(partition: u32, offset: u64, record: Record) -> DataState {
        let deleted = record
            .headers
            .iter()
            .any(|h| h.key == HEADER_PUBSUB && h.value == DELETED);
        if deleted {
            return DataState::HalfCreated;
        }
        DataState::FullyCreated(Publication {
            format: content_format(&record),
            value: record.value,
            partition,
            offset,
        })
    }

    /// Checks a request's conditions against this state (its ETag: the publication's).
    fn check(&self, conditions: &Conditions) -> Result<(), Response> {
        let tag = match self {
            DataState::HalfCreated => None,
            DataState::FullyCreated(p) => Some(p.etag()),
        };
        let current = match &tag {
            None => Current::Absent,
            Some(tag) => Current::Present(Some(tag)),
        };
        conditions
            .check(current)
            .map_err(|failed| problem(Code::PRECONDITION_FAILED, &failed.to_string()))
    }
}

/// What a write to topic-data appends.
enum Write {
    Publish(Vec<u8>, Option<u16>),
    Delete,
}

impl Write {
    fn record(&self) -> Record {
        let (value, headers) = match self {
            Write::Publish(value, format) => (
                value.clone(),
                format
                    .map(|f| {
                        vec![Header {
                            key: HEADER_CONTENT_FORMAT.into(),
                            value: f.to_string().into_bytes(),
                        }]
                    })
                    .unwrap_or_default(),
            ),
            Write::Delete => (
                Vec::new(),
                vec![Header {
                    key: HEADER_PUBSUB.into(),
                    value: DELETED.to_vec(),
                }],
            ),
        };
        Record {
            key: None,
            value,
            timestamp_ms: now_ms(),
            headers,
        }
    }
}

impl PubSub {
    /// PUT /ps/data/{topic}: publish (§3.2.1): 2.01 on the first publication (HALF →
    /// FULLY CREATED), else 2.04; 4.15 if the topic has a `topic-content-format` and
    /// the publication another; 4.04 at once if the topic does not exist (or is deleted
    /// before the publication is stored).
    pub(super) async fn publish(self: &Arc<Self>, name: &str, request: &Request) -> Response {
        // The publication goes on as one produce request, which must fit in the engine's
        // max_body_size with its framing: a larger one gets 4.13 with Size1 (RFC 7959
        // §2.9.3), a final answer, not a 5.03 that invites retries.
        if request.payload().len() > MAX_PUBLICATION_BYTES {
            let max = MAX_PUBLICATION_BYTES as u32;
            return problem(
                Code::REQUEST_ENTITY_TOO_LARGE,
                &format!("publication too large: at most {max} bytes"),
            )
            .with_option(option::SIZE1, option::encode_uint(max));
        }
        let topic = match self.load_topic(name).await {
            Ok(Some(t)) => t,
            Ok(None) => return no_topic_to_publish(name),
            Err(response) => return response,
        };
        let format = request.content_format();
        if let Some(wanted) = topic.props.topic_content_format {
            if format != Some(wanted) {
                return problem(
                    Code::UNSUPPORTED_CONTENT_FORMAT,
                    &format!(
                        "this topic's topic-content-format is {wanted}; the publication has {}",
                        format.map_or("none".into(), |f| f.to_string())
                    ),
                );
            }
        }
        let write = Write::Publish(request.payload().to_vec(), format);
        let (before, written) = match self.append(&topic, &write, request).await {
            Ok(done) => done,
            Err(response) => return response,
        };
        let code = match before {
            DataState::HalfCreated => Code::CREATED,
            DataState::FullyCreated(_) => Code::CHANGED,
        };
        let publication = Publication {
            value: request.payload().to_vec(),
            format,
            partition: written.0,
            offset: written.1,
        };
        Response::new(code).with_option(option::ETAG, publication.etag().to_vec())
    }

    /// DELETE /ps/data/{topic} (§3.2.4): back to HALF CREATED; every subscriber gets a
    /// final 4.04 (from the follow loops, which see the deletion in the log).
    pub(super) async fn delete_data(self: &Arc<Self>, name: &str, request: &Request) -> Response {
        let topic = match self.load_topic(name).await {
            Ok(Some(t)) => t,
            Ok(None) => return no_topic(name),
            Err(response) => return response,
        };
        match self.append(&topic, &Write::Delete, request).await {
            Ok(_) => Response::new(Code::DELETED),
            Err(response) => response,
        }
    }

    /// Publishes a topic's `initialize` representation, its first publication.
    pub(super) async fn initialize(
        self: &Arc<Self>,
        topic: &Topic,
        value: Vec<u8>,
        format: u16,
    ) -> Result<(), Response> {
        if let Err(e) = self
            .cluster
            .wait_for_leaders(&topic.name, Duration::from_secs(20))
            .await
        {
            return Err(cluster_problem(e));
        }
        let write = Write::Publish(value, Some(format));
        self.append(topic, &write, &Request::put(""))
            .await
            .map(drop)
    }

    /// Appends a publication or a deletion: checks the request's conditions against
    /// the state of the topic's data and appends, as one step at the partition leader;
    /// returns the state before and where the record went. A deletion of a HALF CREATED
    /// topic-data resource is 4.04.
    async fn append(
        self: &Arc<Self>,
        topic: &Topic,
        write: &Write,
        request: &Request,
    ) -> Result<(DataState, (u32, u64)), Response> {
        let conditions = Conditions::of(request);
        let record = write.record();
        let single = topic.config.partitions <= 1;
        if !single && !conditions.is_empty() {
            return Err(problem(
                Code::NOT_IMPLEMENTED,
                "conditional requests on topic data need a single-partition topic (the latest publication of several partitions is not one log position)",
            ));
        }
        let mut backoff = Duration::from_millis(5);
        for _ in 0..ATTEMPTS {
            let (before, partition, end) = if single {
                let (state, end) = self.tail(&topic.name, 0).await.map_err(client_problem)?;
                (state, 0, Some(end))
            } else {
                let state = self.newest(&topic.name, topic.config.partitions).await;
                let p = match write {
                    Write::Delete => 0,
                    Write::Publish(..) => {
                        self.next_partition.fetch_add(1, Ordering::Relaxed)
                            % topic.config.partitions
                    }
                };
                (state, p, None)
            };
            if matches!(write, Write::Delete) && before == DataState::HalfCreated {
                return Err(problem(
                    Code::NOT_FOUND,
                    "the topic-data resource does not exist (no publication since it was created or deleted)",
                ));
            }
            before.check(&conditions)?;
            let produced = self
                .cluster
                .produce_if(
                    &topic.name,
                    partition,
                    std::slice::from_ref(&record),
                    Acks::All,
                    None,
                    end,
                )
                .await;
            match produced {
                Ok(Some(r)) => {
                    self.still_there(topic).await?;
                    return Ok((before, (partition, r.base_offset)));
                }
                Ok(None) => {
                    return Err(problem(
                        Code::INTERNAL_SERVER_ERROR,
                        "the leader did not answer an acks=all produce",
                    ))
                }
                Err(ClientError::Broker {
                    kind: ErrorKind::VersionMismatch,
                    ..
                }) => {
                    // The log moved since it was read (another publication, or one not
                    // committed yet): read the state again and decide again.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(client_problem(e)),
            }
        }
        Err(problem(
            Code::SERVICE_UNAVAILABLE,
            "the topic's data keeps changing: try again",
        )
        .with_max_age(1))
    }

    /// After an append: the topic must still be the one it was appended to, else the
    /// record went into a topic deleted meanwhile and is not answered 2.xx (a publication
    /// answered 2.xx was stored before any deletion of its topic).
    async fn still_there(&self, topic: &Topic) -> Result<(), Response> {
        match self
            .cluster
            .zookeeper()
            .exists(&cluster::topic_path(&topic.name))
            .await
        {
            Ok(Some(stat)) if stat.czxid == topic.id => Ok(()),
            Ok(_) => Err(no_topic_to_publish(&topic.name)),
            Err(e) => Err(zk_problem(&e)),
        }
    }

    /// GET /ps/data/{topic} (§3.3): the latest publication, 4.04 while HALF CREATED;
    /// with Observe 0 also subscribes (§3.2.2): this broker follows the topic and
    /// notifies each new publication, and a final 4.04 when the resource or the topic is
    /// deleted.
    pub(super) async fn read(self: &Arc<Self>, name: &str, request: &Request) -> Response {
        let topic = match self.load_topic(name).await {
            Ok(Some(t)) => t,
            Ok(None) => return no_topic(name),
            Err(response) => return response,
        };
        if request.observe() == Some(0) {
            self.follow(&topic);
        }
        let cached = self.latest.lock().get(name).cloned();
        let state = match cached {
            Some(state) => state,
            None => match self.load_shared(&topic).await {
                Ok(state) => state,
                Err(response) => return response,
            },
        };
        match &*state {
            DataState::FullyCreated(p) => p.response(),
            DataState::HalfCreated => problem(
                Code::NOT_FOUND,
                "nothing published on this topic yet (HALF CREATED): publish first, or create it with \"initialize\"",
            ),
        }
    }

    /// The state of `topic`'s data read from its partitions, by one read shared with
    /// every GET that asks meanwhile (nothing is cached: only a topic's follow loop
    /// keeps [`PubSub::latest`], which it can keep current).
    async fn load_shared(&self, topic: &Topic) -> Result<Arc<DataState>, Response> {
        let name = &topic.name;
        let slot = self.loading.lock().entry(name.clone()).or_default().clone();
        let loaded = slot
            .get_or_try_init(|| async {
                self.read_state(name, topic.config.partitions)
                    .await
                    .map(Arc::new)
            })
            .await
            .cloned();
        // Done: the next GET to miss reads afresh.
        let mut loading = self.loading.lock();
        if loading.get(name).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            loading.remove(name);
        }
        loaded
    }

    /// The state of a topic's data from the ends of its partitions.
    async fn read_state(&self, topic: &str, partitions: u32) -> Result<DataState, Response> {
        if partitions <= 1 {
            return self
                .tail(topic, 0)
                .await
                .map(|(state, _)| state)
                .map_err(client_problem);
        }
        Ok(self.newest(topic, partitions).await)
    }

    /// The state of partition `p`'s data, from its last committed record, and its high
    /// watermark (where the next record goes once all before it are committed).
    async fn tail(&self, topic: &str, p: u32) -> Result<(DataState, u64), ClientError> {
        let head = self.cluster.fetch(topic, p, 0, 1).await?;
        let end = head.high_watermark;
        if end == 0 {
            return Ok((DataState::HalfCreated, 0));
        }
        let last = self.cluster.fetch(topic, p, end - 1, 64 * 1024).await?;
        let state = records_from(&last, end - 1)?
            .into_iter()
            .find(|(offset, _)| *offset == end - 1)
            .map_or(DataState::HalfCreated, |(offset, r)| {
                DataState::of(p, offset, r)
            });
        Ok((state, end))
    }

    /// The state of a multi-partition topic's data: its newest record over all
    /// partitions (by timestamp).
    async fn newest(&self, topic: &str, partitions: u32) -> DataState {
        let mut best: Option<(u64, DataState)> = None;
        for p in 0..partitions {
            let Ok(head) = self.cluster.fetch(topic, p, 0, 1).await else {
                continue;
            };
            let from = head.high_watermark.saturating_sub(1);
            if head.high_watermark == 0 {
                continue;
            }
            let Ok(tail) = self.cluster.fetch(topic, p, from, 64 * 1024).await else {
                continue;
            };
            if let Ok(records) = records_from(&tail, from) {
                if let Some((offset, r)) = records.into_iter().last() {
                    if best.as_ref().is_none_or(|(t, _)| r.timestamp_ms >= *t) {
                        best = Some((r.timestamp_ms, DataState::of(p, offset, r)));
                    }
                }
            }
        }
        best.map_or(DataState::HalfCreated, |(_, s)| s)
    }

    /// Starts following `topic` for this broker's subscribers, unless it is already.
    fn follow(self: &Arc<Self>, topic: &Topic) {
        let mut following = self.following.lock();
        if let Some((id, task)) = following.get(&topic.name) {
            if *id == topic.id && !task.is_finished() {
                return;
            }
            task.abort(); // an earlier topic of the same name
            self.latest.lock().remove(&topic.name);
        }
        let this = self.clone();
        let (name, id, partitions) = (topic.name.clone(), topic.id, topic.config.partitions);
        let expires = topic.props.expiration_date;
        following.insert(
            topic.name.clone(),
            (
                id,
                tokio::spawn(async move { this.follow_loop(name, id, partitions, expires).await }),
            ),
        );
    }

    /// Follows every partition of a topic from its end, notifying the observers of its
    /// topic-data resource of each new publication (a deletion of the resource: a
    /// final 4.04), until the topic is deleted: then what the partitions still serve is
    /// notified, and a final 4.04 ends every observation. When the partitions stop
    /// answering (their leader moved, or the topic is being deleted: its partitions go
    /// first) it waits a moment for the topic's deletion, else observes them again from
    /// where it was.
    async fn follow_loop(
        self: Arc<Self>,
        topic: String,
        id: u64,
        partitions: u32,
        mut expires: Option<u64>,
    ) {
        let zk = self.cluster.zookeeper();
        let path = cluster::topic_path(&topic);
        let mut watch = zk.watch_data(&path).await.ok();
        let mut next: BTreeMap<u32, u64> = BTreeMap::new();
        loop {
            let mut ticks = self.observe_partitions(&topic, partitions, &mut next).await;
            let known = self.latest.lock().contains_key(&topic);
            if ticks.is_some() && !known {
                // The state as of where the partitions are followed from (or later: the
                // records after that are notified next and replace it), for the GETs.
                if let Ok(state) = self.read_state(&topic, partitions).await {
                    self.latest
                        .lock()
                        .entry(topic.clone())
                        .or_insert_with(|| Arc::new(state));
                }
            }
            for p in 0..partitions {
                self.catch_up(&topic, p, &mut next).await;
            }
            let deleted = loop {
                let Some(ticks) = ticks.as_mut() else {
                    break false;
                };
                tokio::select! {
                    tick = ticks.recv() => match tick {
                        Some(p) => self.catch_up(&topic, p, &mut next).await,
                        None => break false,
                    },
                    event = next_event(&mut watch) => match event {
                        Some(Ok(pehra_zookeeper::WatchEvent::Data(d))) if d.stat.czxid == id => {}
                        Some(Ok(_)) => break true,
                        None | Some(Err(_)) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            watch = zk.watch_data(&path).await.ok();
                        }
                    },
                    () = until(expires) => {
                        // The expiration-date has come, or was moved: loading the topic
                        // deletes it if it has expired.
                        match self.load_topic(&topic).await {
                            Ok(Some(t)) if t.id == id => expires = t.props.expiration_date,
                            Ok(_) => break true,
                            Err(_) => expires = Some(now_ms() / 1000 + 1),
                        }
                    },
                }
            };
            let deleted = deleted || {
                // Give a deletion in progress the time to reach the topic znode.
                let wait = async {
                    loop {
                        match next_event(&mut watch).await {
                            Some(Ok(pehra_zookeeper::WatchEvent::Data(d)))
                                if d.stat.czxid == id => {}
                            Some(Ok(_)) => return true,
                            None | Some(Err(_)) => return false,
                        }
                    }
                };
                match tokio::time::timeout(Duration::from_secs(2), wait).await {
                    Ok(true) => true,
                    _ => !matches!(zk.exists(&path).await, Ok(Some(stat)) if stat.czxid == id),
                }
            };
            if deleted {
                break;
            }
            if watch.is_none() {
                watch = zk.watch_data(&path).await.ok();
            }
        }
        // Notify what the partitions still serve, so a publication answered before the
        // deletion reaches the subscribers, then end.
        for p in 0..partitions {
            self.catch_up(&topic, p, &mut next).await;
        }
        self.stop_following(&topic, id).await;
    }

    /// Observes every partition of `topic`; a partition seen for the first time is
    /// followed from its end. `None` if one cannot be observed now.
    async fn observe_partitions(
        &self,
        topic: &str,
        partitions: u32,
        next: &mut BTreeMap<u32, u64>,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<u32>> {
        let (tick_tx, ticks) = tokio::sync::mpsc::unbounded_channel::<u32>();
        for p in 0..partitions {
            if let std::collections::btree_map::Entry::Vacant(from) = next.entry(p) {
                let head = self.cluster.fetch(topic, p, 0, 1).await.ok()?;
                from.insert(head.high_watermark);
            }
            let mut observation = self.cluster.observe_partition(topic, p).await.ok()?;
            let tx = tick_tx.clone();
            tokio::spawn(async move {
                while let Some(Ok(_)) = observation.next().await {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
            });
        }
        Some(ticks)
    }

    /// Notifies the records of partition `p` from `next[p]` on.
    async fn catch_up(&self, topic: &str, p: u32, next: &mut BTreeMap<u32, u64>) {
        let resource = data_resource(topic);
        let from = next.get(&p).copied().unwrap_or(0);
        let Ok(response) = self.cluster.fetch(topic, p, from, 1024 * 1024).await else {
            return;
        };
        let Ok(records) = records_from(&response, from) else {
            return;
        };
        for (offset, record) in records {
            next.insert(p, offset + 1);
            let state = Arc::new(DataState::of(p, offset, record));
            self.latest.lock().insert(topic.to_string(), state.clone());
            let notification = match &*state {
                DataState::FullyCreated(p) => p.response(),
                DataState::HalfCreated => problem(
                    Code::NOT_FOUND,
                    "the topic-data resource was deleted (HALF CREATED)",
                ),
            };
            self.handle.notify_detached(&resource, notification);
        }
    }

    /// The topic `id` was deleted: its follow loop ends, and every observation of its
    /// data with a final 4.04.
    async fn stop_following(&self, topic: &str, id: u64) {
        {
            let mut following = self.following.lock();
            if following.get(topic).is_some_and(|(i, _)| *i == id) {
                following.remove(topic);
            }
        }
        self.latest.lock().remove(topic);
        tracing::debug!(%topic, "the topic was deleted: its subscribers are told");
        self.handle.notify_detached(
            &data_resource(topic),
            problem(Code::NOT_FOUND, "the topic was deleted"),
        );
    }
}

/// The next event of a watch (never, without one).
async fn next_event(
    watch: &mut Option<pehra_zookeeper::Watch>,
) -> Option<Result<pehra_zookeeper::WatchEvent, pehra_zookeeper::ZkError>> {
    match watch.as_mut() {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// Waits until the wall clock reaches `at` (seconds since the Unix epoch); never
/// without one.
async fn until(at: Option<u64>) {
    match at {
        Some(at) => {
            let wait = at.saturating_mul(1000).saturating_sub(now_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await
        }
        None => std::future::pending().await,
    }
}

/// A failed cluster call as the client's answer.
fn client_problem(e: ClientError) -> Response {
    match e {
        ClientError::NoSuchTopic(topic) => no_topic_to_publish(&topic),
        e => cluster_problem(e),
    }
}

fn no_topic_to_publish(name: &str) -> Response {
    problem(
        Code::NOT_FOUND,
        &format!("no such topic: {name} (create it with POST /ps); nothing was published"),
    )
}

fn content_format(record: &Record) -> Option<u16> {
    record
        .headers
        .iter()
        .find(|h| h.key == HEADER_CONTENT_FORMAT)
        .and_then(|h| std::str::from_utf8(&h.value).ok()?.parse().ok())
}

/// Milliseconds since the Unix epoch (the drivers' one wall clock).
pub(super) fn now_ms() -> u64 {
    pehra_shared::driver::clock::unix_ms()
}

/// The largest publication: a produce request carries it with its record framing, and
/// must stay within the CoAP engine's default `max_body_size` (2 MiB).
pub const MAX_PUBLICATION_BYTES: usize = 2 * 1024 * 1024 - 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_record_makes_the_topic_half_created() {
        let publication = Write::Publish(b"21.5".to_vec(), Some(0)).record();
        let DataState::FullyCreated(p) = DataState::of(0, 7, publication) else {
            panic!("a publication");
        };
        assert_eq!(
            (p.value.as_slice(), p.format, p.offset),
            (&b"21.5"[..], Some(0), 7)
        );
        assert_eq!(
            DataState::of(0, 8, Write::Delete.record()),
            DataState::HalfCreated
        );
    }

    #[test]
    fn conditions_see_the_publication_etag() {
        let state = DataState::of(0, 3, Write::Publish(b"x".to_vec(), None).record());
        let DataState::FullyCreated(p) = &state else {
            panic!()
        };
        let matching = Conditions {
            if_match: vec![p.etag().to_vec()],
            if_none_match: false,
        };
        assert!(state.check(&matching).is_ok());
        let other = Conditions {
            if_match: vec![vec![1, 2, 3]],
            if_none_match: false,
        };
        assert_eq!(
            state.check(&other).unwrap_err().code(),
            Code::PRECONDITION_FAILED
        );
        let create_only = Conditions {
            if_match: vec![],
            if_none_match: true,
        };
        assert!(DataState::HalfCreated.check(&create_only).is_ok());
        assert!(state.check(&create_only).is_err());
        let exists = Conditions {
            if_match: vec![vec![]],
            if_none_match: false,
        };
        assert!(DataState::HalfCreated.check(&exists).is_err());
        assert!(state.check(&exists).is_ok());
    }

    #[test]
    fn etags_name_one_publication() {
        let a = Publication {
            value: b"x".to_vec(),
            format: None,
            partition: 0,
            offset: 1,
        };
        let b = Publication {
            offset: 2,
            ..a.clone()
        };
        assert_ne!(a.etag(), b.etag());
        assert_eq!(a.response().option(option::ETAG), Some(&a.etag()[..]));
    }
}
