//! Who may call what on a broker with security on, and the broker's own OSCORE contexts
//! towards the other brokers it talks to.
//!
//! The guard runs before every handler: a request without a verified identity gets 4.01;
//! one whose identity the ACL policy does not allow gets 4.03 (logged). Topic names are
//! read from the request where they travel in the body (`produce`, `fetch`, pub-sub
//! creation). `/replica` is further bound to the identity: a fetch in the name of broker
//! N must come from broker N itself.

use super::State;
use pehra_shared::api::{decode_request, error_response};
use pehra_shared::coap::{Method, Response};
use pehra_shared::driver::security::PolicyCell;
use pehra_shared::driver::Incoming;
use pehra_shared::security::acl::{Action, ClusterResource, Policy, Resource};
use pehra_shared::security::{self, Role};
use pehra_shared::wire::{ErrorKind, ReplicaFetchRequest};
use std::net::SocketAddr;
use std::sync::Arc;

/// The router's guard for the policy in `policy` (as it stands at each request); with
/// `plain_devices`, the device gateway routes (`/dev/*`) are served to plain CoAP as
/// well (devices without OSCORE).
pub(super) fn guard(
    policy: Arc<PolicyCell>,
    plain_devices: bool,
) -> impl Fn(&Incoming) -> Result<(), Response> {
    move |incoming| {
        if plain_devices
            && incoming.identity.is_none()
            && incoming.request.path().starts_with("dev/")
        {
            return Ok(());
        }
        check(&policy.current(), incoming)
    }
}

fn check(policy: &Policy, incoming: &Incoming) -> Result<(), Response> {
    let Some(identity) = &incoming.identity else {
        tracing::warn!(peer = %incoming.peer, path = %incoming.request.path(), "refused: not authenticated");
        return Err(error_response(
            ErrorKind::Unauthorized,
            "this broker takes only OSCORE-protected requests: give the client credentials made by `pehra keys` (--credentials FILE)",
        ));
    };
    let refuse = |reason: String| {
        tracing::warn!(peer = %incoming.peer, %reason, "refused");
        Err(error_response(ErrorKind::Forbidden, &reason))
    };
    let path = incoming.request.path();
    let segments: Vec<&str> = path.split('/').collect();
    let method = incoming.request.method();
    let needed: Vec<(Resource, Action)> = match segments.as_slice() {
        ["produce"] => {
            let r: TopicOf = decode_request(&incoming.request)?;
            vec![(Resource::Topic(r.topic), Action::Produce)]
        }
        ["fetch"] => {
            let r: TopicOf = decode_request(&incoming.request)?;
            vec![(Resource::Topic(r.topic), Action::Consume)]
        }
        ["p", topic, _] => vec![(Resource::Topic((*topic).into()), Action::Consume)],
        ["replica"] => {
            let r: ReplicaFetchRequest = decode_request(&incoming.request)?;
            if identity.role != Role::Broker || identity.kid != security::broker_kid(r.replica) {
                return refuse(format!(
                    "{} {} may not fetch as replica {}: only broker {} itself may",
                    identity.role.name(),
                    identity.name,
                    r.replica,
                    r.replica
                ));
            }
            vec![(Resource::Cluster(ClusterResource::Replica), Action::Use)]
        }
        ["ps"] => match method {
            Some(Method::Post) => {
                vec![(Resource::Topic(pubsub_topic_name(incoming)), Action::Create)]
            }
            _ => vec![(Resource::Topic("*".into()), Action::Describe)],
        },
        // Deleting the topic-data resource is a publisher's act (draft -21 §3.5.4).
        ["ps", "data", topic] => vec![(
            Resource::Topic((*topic).into()),
            match method {
                Some(Method::Get) => Action::Consume,
                _ => Action::Produce,
            },
        )],
        ["ps", topic] => vec![(
            Resource::Topic((*topic).into()),
            match method {
                Some(Method::Delete) => Action::Delete,
                // Changing a topic's configuration: the right to create it.
                Some(Method::Post | Method::Put | Method::IPatch | Method::Patch) => Action::Create,
                _ => Action::Describe,
            },
        )],
        ["dev", node, _] if identity.role == Role::Device && *node != identity.name => {
            return refuse(format!(
                "device {} may not speak for device {node}",
                identity.name
            ));
        }
        _ => match ClusterResource::of_uri_path(&path) {
            Some(cluster) => vec![(Resource::Cluster(cluster), Action::Use)],
            None => vec![(Resource::Cluster(ClusterResource::Admin), Action::Use)],
        },
    };
    for (resource, action) in needed {
        if let Err(denied) = policy.check(identity, &resource, action) {
            return refuse(denied.to_string());
        }
    }
    Ok(())
}

/// The topic of a `ProduceRequest` or `FetchRequest`, read without copying the rest (a
/// produce's batch is skipped, not decoded: the handler decodes the request itself).
#[derive(serde::Deserialize)]
struct TopicOf {
    topic: String,
}

/// The `topic-name` (key 0, or its name) of a pub-sub topic creation (`*` if it cannot be read: the handler
/// refuses such a body anyway).
fn pubsub_topic_name(incoming: &Incoming) -> String {
    crate::pubsub::properties::Properties::decode(incoming.request.payload())
        .ok()
        .and_then(|p| p.topic_name)
        .unwrap_or_else(|| "*".into())
}

/// Protects this broker's requests to broker `id` at `addr` (replica fetches, PEHRA
/// check-ins, probes) with its own credentials, once per address; nothing without
/// security.
pub(crate) async fn secure_broker_peer(state: &State, id: u32, addr: SocketAddr) {
    let (Some(credentials), Some(handle)) = (state.credentials.as_ref(), state.handle.get()) else {
        return;
    };
    if !state.secured_peers.lock().insert(addr) {
        return;
    }
    let kid = security::broker_kid(id);
    if let Err(e) =
        pehra_shared::driver::security::secure_client(handle, credentials, addr, &kid).await
    {
        tracing::error!(peer = %addr, error = %e, "cannot secure the requests to broker {id}");
        state.secured_peers.lock().remove(&addr);
    }
}
