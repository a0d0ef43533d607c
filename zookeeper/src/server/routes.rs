//! The CoAP resources of the zookeeper (DESIGN.md's mapping of ZooKeeper onto CoAP):
//! each route checks and decodes its request and hands a [`Job`] to the core.

use super::{AdminRoute, Job};
use crate::tree::{Op, RequestId};
use pehra_shared::api::{decode_request, error_response};
use pehra_shared::coap::conditions::Conditions;
use pehra_shared::coap::{link_format::Link, Method, Response};
use pehra_shared::driver::{Incoming, Responder, Router};
use pehra_shared::wire::{
    CreateRequest, ErrorKind, MultiOp, MultiRequest, SessionOpen, SetDataRequest,
};
use tokio::sync::mpsc::UnboundedSender;

/// The zookeeper's router, with the application's admin routes.
pub(super) fn router(jobs: UnboundedSender<Job>, admin_routes: &[AdminRoute]) -> Router {
    let route = |jobs: &UnboundedSender<Job>, f: fn(Incoming) -> Result<JobFor, Response>| {
        let jobs = jobs.clone();
        move |incoming: Incoming, responder: Responder| match f(incoming) {
            Ok(job) => {
                if jobs.send(job(responder)).is_err() {
                    // The core stopped; the responder inside the job answers 5.00 on drop.
                }
            }
            Err(response) => responder.respond(response),
        }
    };
    let mut router = Router::new()
        .route_deferred(Method::Post, "session", route(&jobs, open_session))
        .route_deferred(Method::Post, "session/{id}/hb", route(&jobs, heartbeat))
        .route_deferred(Method::Delete, "session/{id}", route(&jobs, close_session))
        .route_deferred(Method::Get, "z/*", route(&jobs, get))
        .route_deferred(Method::Post, "z/*", route(&jobs, create))
        .route_deferred(Method::Put, "z/*", route(&jobs, set_data))
        .route_deferred(Method::Delete, "z/*", route(&jobs, delete))
        .route_deferred(Method::Post, "multi", route(&jobs, multi))
        .route_deferred(Method::Post, "sync", route(&jobs, sync))
        .route_deferred(Method::Get, "incarnation", route(&jobs, incarnation))
        .route_deferred(Method::Post, "suspect/*", route(&jobs, suspect))
        .link(
            Link::new("session")
                .attr("rt", "pehra.zk.session")
                .attr("ct", "60"),
        )
        .link(
            Link::new("z")
                .attr("rt", "pehra.zk.znode")
                .attr("ct", "60")
                .flag("obs"),
        )
        .link(
            Link::new("multi")
                .attr("rt", "pehra.zk.multi")
                .attr("ct", "60"),
        )
        .link(
            Link::new("sync")
                .attr("rt", "pehra.zk.sync")
                .attr("ct", "60"),
        )
        .link(Link::new("suspect").attr("rt", "pehra.zk.suspect"));
    for &admin in admin_routes {
        let jobs = jobs.clone();
        router = router
            .route_deferred(
                Method::Post,
                admin.path,
                move |incoming: Incoming, responder: Responder| {
                    let job = Job::Admin {
                        route: admin,
                        request: incoming.request,
                        responder,
                    };
                    // The core stopped: the responder inside the job answers 5.00 on drop.
                    let _ = jobs.send(job);
                },
            )
            .link(
                Link::new(admin.path)
                    .attr("rt", admin.resource_type)
                    .attr("ct", "60"),
            );
    }
    router
}

/// A job waiting for the responder that will answer it.
type JobFor = Box<dyn FnOnce(Responder) -> Job + Send>;

/// The znode path of a `/z/...` request: `/` plus what follows `z`.
fn znode_path(incoming: &Incoming) -> Result<String, Response> {
    let rest = incoming.params.get("*").unwrap_or("");
    let mut path = String::with_capacity(1 + rest.len());
    path.push('/');
    path.push_str(rest);
    crate::path::validate(&path)
        .map_err(|e| error_response(ErrorKind::Malformed, &e.to_string()))?;
    Ok(path)
}

fn session_id(incoming: &Incoming) -> Result<u64, Response> {
    let raw = incoming.params.get("id").unwrap_or("");
    parse_id(raw)
        .map_err(|_| error_response(ErrorKind::Malformed, &format!("bad session id {raw:?}")))
}

/// A decimal or `0x` hexadecimal number.
fn parse_id(raw: &str) -> Result<u64, std::num::ParseIntError> {
    match raw.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse(),
    }
}

fn open_session(incoming: Incoming) -> Result<JobFor, Response> {
    let open: SessionOpen = decode_request(&incoming.request)?;
    let identity = identity_name(&incoming);
    let peer = incoming.peer;
    Ok(Box::new(move |responder| Job::OpenSession {
        timeout_ms: open.timeout_ms,
        identity,
        peer,
        responder,
    }))
}

fn heartbeat(incoming: Incoming) -> Result<JobFor, Response> {
    let session = session_id(&incoming)?;
    // The body (node health) is optional; if present it must be a valid heartbeat.
    let (sleep_ms, health) = if incoming.request.payload().is_empty() {
        (None, None)
    } else {
        let beat = decode_request::<pehra_shared::wire::Heartbeat>(&incoming.request)?;
        (beat.sleep_ms, Some(beat.health))
    };
    let identity = identity_name(&incoming);
    let peer = incoming.peer;
    Ok(Box::new(move |responder| Job::Heartbeat {
        session,
        identity,
        peer,
        sleep_ms,
        health,
        responder,
    }))
}

/// `POST /suspect/PATH`: the client got no answer from the node whose session owns the
/// ephemeral znode PATH (a broker's `/brokers/ids/N`): the zookeeper probes it
/// ([`super::probe`]). Answered at once (2.04), before the probe's outcome.
fn suspect(incoming: Incoming) -> Result<JobFor, Response> {
    let rest = incoming.params.get("*").unwrap_or("");
    let mut path = String::with_capacity(1 + rest.len());
    path.push('/');
    path.push_str(rest);
    crate::path::validate(&path)
        .map_err(|e| error_response(ErrorKind::Malformed, &e.to_string()))?;
    Ok(Box::new(move |responder| Job::Suspect { path, responder }))
}

fn close_session(incoming: Incoming) -> Result<JobFor, Response> {
    let session = session_id(&incoming)?;
    write(&incoming, Op::CloseSession { session }, None, None)
}

fn get(incoming: Incoming) -> Result<JobFor, Response> {
    let path = znode_path(&incoming)?;
    let children = incoming.request.queries().any(|q| q == "children");
    let observe = incoming.request.observe() == Some(0);
    Ok(Box::new(move |responder| {
        if children {
            Job::GetChildren {
                path,
                observe,
                responder,
            }
        } else {
            Job::GetData {
                path,
                observe,
                responder,
            }
        }
    }))
}

fn create(incoming: Incoming) -> Result<JobFor, Response> {
    let path = znode_path(&incoming)?;
    let body: CreateRequest = decode_request(&incoming.request)?;
    let op = Op::Create {
        path,
        data: body.data,
        ephemeral: body.ephemeral,
        sequential: body.sequential,
        session: body.session,
    };
    write(&incoming, op, body.session, body.request)
}

fn set_data(incoming: Incoming) -> Result<JobFor, Response> {
    let path = znode_path(&incoming)?;
    let body: SetDataRequest = decode_request(&incoming.request)?;
    // An If-Match ETag is the znode's version: the core evaluates it in the same step
    // as the write (see `Core::write`), like the body's version.
    write(
        &incoming,
        Op::SetData {
            path,
            data: body.data,
            version: body.version,
        },
        body.session,
        body.request,
    )
}

/// `DELETE /z/{path}[?session=ID&request=N]`: the version is an If-Match; the session
/// and request number (a numbered request is never applied twice) ride in the query, as
/// a DELETE has no body.
fn delete(incoming: Incoming) -> Result<JobFor, Response> {
    let path = znode_path(&incoming)?;
    let number = |name: &str| -> Result<Option<u64>, Response> {
        let prefix = format!("{name}=");
        let Some(raw) = incoming
            .request
            .queries()
            .find_map(|q| q.strip_prefix(prefix.as_str()))
        else {
            return Ok(None);
        };
        parse_id(raw).map(Some).map_err(|_| {
            error_response(ErrorKind::Malformed, &format!("bad {name} number {raw:?}"))
        })
    };
    let session = number("session")?;
    let request = number("request")?;
    write(
        &incoming,
        Op::Delete {
            path,
            version: None,
        },
        session,
        request,
    )
}

fn multi(incoming: Incoming) -> Result<JobFor, Response> {
    let body: MultiRequest = decode_request(&incoming.request)?;
    let session = body.session;
    let ops = body
        .ops
        .into_iter()
        .map(|op| match op {
            MultiOp::Create {
                path,
                data,
                ephemeral,
                sequential,
            } => Op::Create {
                path,
                data,
                ephemeral,
                sequential,
                session,
            },
            MultiOp::SetData {
                path,
                data,
                version,
            } => Op::SetData {
                path,
                data,
                version,
            },
            MultiOp::Delete { path, version } => Op::Delete { path, version },
            MultiOp::Check { path, version } => Op::Check { path, version },
        })
        .collect();
    write(&incoming, Op::Multi { ops }, session, body.request)
}

fn sync(_incoming: Incoming) -> Result<JobFor, Response> {
    Ok(Box::new(|responder| Job::Sync { responder }))
}

fn incarnation(_incoming: Incoming) -> Result<JobFor, Response> {
    Ok(Box::new(|responder| Job::Incarnation { responder }))
}

/// A write job, with the request's If-Match / If-None-Match conditions (RFC 7252
/// §5.10.8), which the core evaluates against the target znode in the same step as the
/// write, and its request number within `session` (which it needs).
fn write(
    incoming: &Incoming,
    op: Op,
    session: Option<u64>,
    number: Option<u64>,
) -> Result<JobFor, Response> {
    let request = match (session, number) {
        (_, None) => None,
        (Some(session), Some(number)) => Some(RequestId { session, number }),
        (None, Some(_)) => {
            return Err(error_response(
                ErrorKind::Malformed,
                "a request number needs a session: numbers count within one",
            ))
        }
    };
    let identity = identity_name(incoming);
    let broker = incoming.identity.as_ref().and_then(|i| i.broker_id());
    let conditions = Conditions::of(&incoming.request);
    Ok(Box::new(move |responder| Job::Write {
        op,
        session,
        request,
        identity,
        broker,
        conditions,
        responder,
    }))
}

/// The name of the OSCORE identity that sent the request, if any.
fn identity_name(incoming: &Incoming) -> Option<String> {
    incoming.identity.as_ref().map(|i| i.name.clone())
}
