//! The zookeeper's request handling without sockets: what its routes do (znode path from
//! the URI, `path::validate`, the CBOR body through `api::decode_request`, If-Match
//! through `api::if_match_version`, the session id from the URI, the body mapped to an
//! `Op` the way zookeeper/src/server/routes.rs does) and what its core does with the op
//! (`DataTree::apply`), on sequences of requests and ops chosen by the fuzzer. The
//! routes themselves are private (`pub(super)`) and need a tokio driver: they are not
//! called, their decoding steps are.
//!
//! Invariants: nothing panics; a refused op changes nothing; an applied op moves
//! `last_zxid`; the tree stays consistent (every child listed exists, its parent's stat
//! counts it, every ephemeral of a session exists and is owned by it); a snapshot
//! (`wire::encode` of the tree, as the core writes it) decodes to the same tree; a valid
//! path splits into parent and name that join back to it.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pehra_shared::api;
use pehra_shared::coap::{option, Request};
use pehra_shared::wire::{
    self, CreateRequest, Heartbeat, ModeChange, MultiOp, MultiRequest, SessionOpen, SetDataRequest,
};
use pehra_zookeeper::path;
use pehra_zookeeper::tree::{DataTree, Op};

const PATHS: &[&str] = &["/", "/a", "/a/b", "/a/b/c", "/x", "/a/x", "/x/y", "/q-"];

fn any_path(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(if u.ratio(7, 8)? {
        (*u.choose(PATHS)?).to_string()
    } else {
        u.arbitrary::<String>()?
    })
}

fn version(u: &mut Unstructured<'_>) -> Result<Option<u32>> {
    Ok(if u.arbitrary()? {
        None
    } else {
        Some(u.int_in_range(0..=3)?)
    })
}

fn session(u: &mut Unstructured<'_>) -> Result<Option<u64>> {
    Ok(if u.ratio(1, 3)? {
        None
    } else {
        Some(u.int_in_range(1..=3)?)
    })
}

fn data(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let len = u.int_in_range(0..=8usize)?;
    Ok(u.bytes(len.min(u.len()))?.to_vec())
}

/// One op as the core gets it, built directly.
fn op(u: &mut Unstructured<'_>, depth: u8) -> Result<Op> {
    Ok(match u.int_in_range(0..=if depth == 0 { 6 } else { 5 })? {
        0 => Op::CreateSession {
            session: u.int_in_range(1..=3)?,
            timeout_ms: u.arbitrary()?,
            owner: if u.arbitrary()? {
                Some("alice".into())
            } else {
                None
            },
        },
        1 => Op::CloseSession {
            session: u.int_in_range(0..=3)?,
        },
        2 => Op::Create {
            path: any_path(u)?,
            data: data(u)?,
            ephemeral: u.arbitrary()?,
            sequential: u.arbitrary()?,
            session: session(u)?,
        },
        3 => Op::Delete {
            path: any_path(u)?,
            version: version(u)?,
        },
        4 => Op::SetData {
            path: any_path(u)?,
            data: data(u)?,
            version: version(u)?,
        },
        5 => Op::Check {
            path: any_path(u)?,
            version: version(u)?,
        },
        _ => {
            let n = u.int_in_range(0..=4u8)?;
            let mut ops = Vec::new();
            for _ in 0..n {
                ops.push(op(u, depth + 1)?);
            }
            Op::Multi { ops }
        }
    })
}

/// A CBOR body: a valid encoding of a plausible body, or fuzzer bytes.
fn body<T: serde::Serialize>(u: &mut Unstructured<'_>, valid: T) -> Result<Vec<u8>> {
    Ok(if u.arbitrary()? {
        wire::encode(&valid).expect("encodes")
    } else {
        let len = u.int_in_range(0..=64usize)?;
        u.bytes(len.min(u.len()))?.to_vec()
    })
}

/// The znode path of a `/z/...` request, as the route makes it.
fn znode_path(rest: &str) -> Option<String> {
    let path = format!("/{rest}");
    path::validate(&path).ok().map(|_| path)
}

/// The session id of `/session/{id}`, as the route parses it.
fn session_id(raw: &str) -> Option<u64> {
    match raw.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => raw.parse().ok(),
    }
}

/// One request as the routes decode it; `Some(op)` for the writes.
fn request(u: &mut Unstructured<'_>) -> Result<Option<(Op, Option<u64>)>> {
    let rest = any_path(u)?.trim_start_matches('/').to_string();
    let if_match: Option<Vec<u8>> = if u.ratio(1, 4)? { Some(data(u)?) } else { None };
    let with = |mut r: Request, payload: Vec<u8>, u: &mut Unstructured<'_>| -> Result<Request> {
        r = r.with_payload(payload);
        if let Some(v) = &if_match {
            r = r.with_option(option::IF_MATCH, v.clone());
        }
        if u.ratio(1, 8)? {
            r = r.with_content_format(u.arbitrary()?);
        }
        Ok(r)
    };
    Ok(match u.int_in_range(0..=7u8)? {
        0 => {
            let b = body(
                u,
                SessionOpen {
                    timeout_ms: 5_000,
                    node: None,
                    health: None,
                },
            )?;
            let r = with(Request::post("/session"), b, u)?;
            api::decode_request::<SessionOpen>(&r).ok().map(|o| {
                (
                    Op::CreateSession {
                        session: 1,
                        timeout_ms: o.timeout_ms,
                        owner: None,
                    },
                    None,
                )
            })
        }
        1 => {
            let b = body(
                u,
                Heartbeat {
                    health: Default::default(),
                    sleep_ms: Some(1),
                },
            )?;
            let r = with(Request::post("/session/1/hb"), b, u)?;
            if !r.payload().is_empty() {
                let _ = api::decode_request::<Heartbeat>(&r);
            }
            let _ = session_id(&rest);
            None
        }
        2 => session_id(&rest).map(|session| (Op::CloseSession { session }, None)),
        3 => {
            let b = body(
                u,
                CreateRequest {
                    data: vec![1],
                    ephemeral: false,
                    sequential: false,
                    session: Some(1),
                    request: Some(1),
                },
            )?;
            let r = with(Request::post(&format!("/z/{rest}")), b, u)?;
            let Some(path) = znode_path(&rest) else {
                return Ok(None);
            };
            api::decode_request::<CreateRequest>(&r).ok().map(|b| {
                (
                    Op::Create {
                        path,
                        data: b.data,
                        ephemeral: b.ephemeral,
                        sequential: b.sequential,
                        session: b.session,
                    },
                    b.session,
                )
            })
        }
        4 => {
            let b = body(
                u,
                SetDataRequest {
                    data: vec![2],
                    version: None,
                    session: None,
                    request: None,
                },
            )?;
            let r = with(Request::put(&format!("/z/{rest}")), b, u)?;
            let Some(path) = znode_path(&rest) else {
                return Ok(None);
            };
            let Ok(v) = api::if_match_version(&r) else {
                return Ok(None);
            };
            api::decode_request::<SetDataRequest>(&r).ok().map(|b| {
                (
                    Op::SetData {
                        path,
                        data: b.data,
                        version: v.or(b.version),
                    },
                    b.session,
                )
            })
        }
        5 => {
            let r = with(Request::delete(&format!("/z/{rest}")), Vec::new(), u)?;
            let Some(path) = znode_path(&rest) else {
                return Ok(None);
            };
            api::if_match_version(&r)
                .ok()
                .map(|version| (Op::Delete { path, version }, None))
        }
        6 => {
            let valid = MultiRequest {
                ops: vec![MultiOp::Create {
                    path: "/m".into(),
                    data: vec![],
                    ephemeral: false,
                    sequential: true,
                }],
                session: None,
                request: None,
            };
            let b = body(u, valid)?;
            let r = with(Request::post("/multi"), b, u)?;
            api::decode_request::<MultiRequest>(&r).ok().map(|body| {
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
                (Op::Multi { ops }, session)
            })
        }
        _ => {
            let b = body(u, 0u8)?;
            let r = with(Request::post("/pehra/mode"), b, u)?;
            let _ = api::decode_request::<ModeChange>(&r);
            let r = with(Request::get(&format!("/z/{rest}?children")), Vec::new(), u)?;
            let _ = r.queries().any(|q| q == "children");
            let _ = r.observe();
            None
        }
    })
}

/// Walks the tree from the root: children exist, counts agree, no cycles.
fn check_consistent(tree: &DataTree) {
    let mut seen = 0usize;
    let mut stack = vec!["/".to_string()];
    while let Some(p) = stack.pop() {
        seen += 1;
        assert!(seen <= tree.node_count(), "more nodes reachable than exist");
        let (children, stat) = tree.children(&p).expect("a listed child exists");
        assert_eq!(
            stat.num_children as usize,
            children.len(),
            "num_children of {p}"
        );
        let (data, stat) = tree.get(&p).expect("exists");
        assert_eq!(stat.data_length as usize, data.len(), "data_length of {p}");
        for c in children {
            assert!(!c.is_empty() && !c.contains('/'), "child name {c:?} of {p}");
            stack.push(path::join(&p, &c));
        }
    }
    assert_eq!(
        seen,
        tree.node_count(),
        "every node is reachable from the root"
    );
    for (id, s) in tree.sessions() {
        for e in &s.ephemerals {
            let (_, stat) = tree.get(e).expect("an ephemeral of a session exists");
            assert_eq!(stat.ephemeral_owner, Some(*id));
        }
    }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mut tree = DataTree::default();
    let mut zxid = 0u64;
    let mut time_ms = 1_000u64;
    for _ in 0..u.int_in_range(1..=24u8)? {
        let next = if u.ratio(1, 3)? {
            request(u)?.map(|(op, _)| op)
        } else {
            Some(op(u, 0)?)
        };
        let Some(op) = next else { continue };
        zxid += u.int_in_range(0..=2)?;
        time_ms += u.int_in_range(0..=100)?;
        let before = tree.clone();
        match tree.apply(zxid, time_ms, &op) {
            Ok(_) => assert_eq!(tree.last_zxid(), zxid),
            Err(e) => {
                let _ = e.kind();
                assert_eq!(tree, before, "a refused op changed the tree: {op:?}: {e}");
            }
        }
        check_consistent(&tree);
    }
    let snapshot = wire::encode(&tree).expect("the tree encodes");
    let restored: DataTree = wire::decode(&snapshot).expect("the snapshot decodes");
    assert_eq!(restored, tree, "the snapshot does not round trip");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if path::validate(s).is_ok() && s != "/" {
            assert_eq!(path::join(path::parent(s), path::name(s)), s);
            assert!(path::validate(path::parent(s)).is_ok());
        }
    }
    let _ = run(&mut Unstructured::new(data));
});
