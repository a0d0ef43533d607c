//! Who may call what on a zookeeper with security on: every request must come protected
//! by OSCORE (else 4.01), and its identity must be allowed by the ACL policy for each
//! znode it touches (else 4.03, logged). Run as the router's guard, before any handler.

use pehra_shared::api::{decode_request, error_response};
use pehra_shared::coap::{Method, Response};
use pehra_shared::driver::security::PolicyCell;
use pehra_shared::driver::Incoming;
use pehra_shared::security::acl::{Action, ClusterResource, Policy, Resource};
use pehra_shared::security::Role;
use pehra_shared::wire::{ErrorKind, MultiOp, MultiRequest};
use std::sync::Arc;

/// The router's guard for the policy in `policy` (as it stands at each request).
pub(super) fn guard(policy: Arc<PolicyCell>) -> impl Fn(&Incoming) -> Result<(), Response> {
    move |incoming| check(&policy.current(), incoming)
}

/// `Ok` if the request may reach its handler.
fn check(policy: &Policy, incoming: &Incoming) -> Result<(), Response> {
    let Some(identity) = &incoming.identity else {
        tracing::warn!(peer = %incoming.peer, path = %incoming.request.path(), "refused: not authenticated");
        return Err(error_response(
            ErrorKind::Unauthorized,
            "this zookeeper takes only OSCORE-protected requests: give the client credentials made by `pehra keys` (--credentials FILE)",
        ));
    };
    let path = incoming.request.path();
    if path == crate::ensemble::RAFT_PATH || path == crate::ensemble::snapshot::SNAPSHOT_PATH {
        // Raft between ensemble members (and the snapshots a member pulls): the
        // zookeeper's own identity only, whatever the policy says (an admin has no
        // business voting, nor reading the whole tree past its ACLs).
        if identity.role == Role::Zookeeper {
            return Ok(());
        }
        tracing::warn!(peer = %incoming.peer, who = %identity.name, "refused: /raft is for ensemble members only");
        return Err(error_response(
            ErrorKind::Forbidden,
            "/raft is for the zookeeper's ensemble members only",
        ));
    }
    for (resource, action) in needed(incoming)? {
        if let Err(denied) = policy.check(identity, &resource, action) {
            tracing::warn!(peer = %incoming.peer, reason = %denied, "refused by the ACL policy");
            return Err(error_response(ErrorKind::Forbidden, &denied.to_string()));
        }
    }
    Ok(())
}

/// What a request does, as ACL resources and actions.
fn needed(incoming: &Incoming) -> Result<Vec<(Resource, Action)>, Response> {
    let path = incoming.request.path();
    let method = incoming.request.method();
    let mut segments = path.split('/');
    Ok(match segments.next().unwrap_or("") {
        "z" => {
            let znode = format!(
                "/{}",
                path.strip_prefix("z").unwrap_or("").trim_start_matches('/')
            );
            let action = match method {
                Some(Method::Get) => Action::Read,
                Some(Method::Post) => Action::Create,
                Some(Method::Put) => Action::Write,
                Some(Method::Delete) => Action::Delete,
                _ => Action::Admin,
            };
            vec![(Resource::Znode(znode), action)]
        }
        "multi" => {
            let multi: MultiRequest = decode_request(&incoming.request)?;
            multi
                .ops
                .iter()
                .map(|op| match op {
                    MultiOp::Create { path, .. } => (Resource::Znode(path.clone()), Action::Create),
                    MultiOp::SetData { path, .. } => (Resource::Znode(path.clone()), Action::Write),
                    MultiOp::Delete { path, .. } => (Resource::Znode(path.clone()), Action::Delete),
                    MultiOp::Check { path, .. } => (Resource::Znode(path.clone()), Action::Read),
                })
                .collect()
        }
        "sync" | "incarnation" => vec![(Resource::Znode("/".into()), Action::Read)],
        // Reporting a node unanswering: whoever may read the ephemeral znode that names
        // it (the probe pings only the session's own address, at most once a second).
        "suspect" => {
            let znode = format!(
                "/{}",
                path.strip_prefix("suspect")
                    .unwrap_or("")
                    .trim_start_matches('/')
            );
            vec![(Resource::Znode(znode), Action::Read)]
        }
        _ => match ClusterResource::of_uri_path(&path) {
            Some(cluster) => vec![(Resource::Cluster(cluster), Action::Use)],
            None => vec![(Resource::Cluster(ClusterResource::Admin), Action::Use)],
        },
    })
}
