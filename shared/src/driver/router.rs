//! Routing requests by method and path to async handlers.

use super::Handle;
use crate::coap::{link_format::Link, Code, IncomingId, Method, Request, Response};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::{boxed::Box, string::String, vec::Vec};

/// A boxed handler future.
pub(crate) type ResponseFuture = Pin<Box<dyn Future<Output = Response> + Send>>;
type BoxedHandler = Arc<dyn Fn(Incoming) -> ResponseFuture + Send + Sync>;
type DeferredHandler = Arc<dyn Fn(Incoming, Responder) + Send + Sync>;
/// Decides whether a request may reach the route it matched: `Ok`, or the refusal to
/// answer instead (4.01 without a verified identity, 4.03 when it may not).
pub type Guard = Arc<dyn Fn(&Incoming) -> Result<(), Response> + Send + Sync>;

/// Answers one request later, from anywhere. Answers and notifications sent through
/// the same endpoint are applied in the order they were sent, so a service can answer
/// an observe request and then notify a change, and the observer is sure to see both.
/// Dropped unanswered, it answers 5.00.
pub struct Responder {
    pub(crate) id: IncomingId,
    pub(crate) handle: Option<Handle>,
}

impl Responder {
    /// Sends the response.
    pub fn respond(mut self, response: Response) {
        if let Some(handle) = self.handle.take() {
            handle.respond(self.id, response);
        }
    }
}

impl Responder {
    /// Acknowledges a CON request now with an empty ACK (RFC 7252 §5.2.2), for a handler
    /// that will hold it longer than the piggyback window (a long poll): the endpoint
    /// then need not wake at the window's end to send that ACK. The answer follows as a
    /// separate response.
    pub fn acknowledge(&self) {
        if let Some(handle) = &self.handle {
            handle.acknowledge(self.id);
        }
    }

    /// Ends the request without a response (for a NON request such as an `acks=0`
    /// publish; a CON request still gets its empty ACK).
    pub fn discard(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.discard(self.id);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let response = Response::error(
                Code::INTERNAL_SERVER_ERROR,
                "the request was dropped unanswered",
            );
            handle.respond(self.id, response);
        }
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").field("id", &self.id).finish()
    }
}

/// What a route does with a request.
enum Action {
    Handler(BoxedHandler),
    Deferred(DeferredHandler),
}

/// What dispatching a request yields.
pub(crate) enum Dispatch {
    /// A handler future to run.
    Future(ResponseFuture),
    /// A deferred handler took the request and will answer through its responder.
    Deferred,
    /// No route: answer this at once.
    Answer(Response),
}

/// What a handler gets: the request, who sent it, and the path parameters its route
/// captured.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The sender's address.
    pub peer: SocketAddr,
    /// The sender, authenticated by OSCORE; `None` for a plain CoAP request.
    pub identity: Option<crate::security::Identity>,
    /// The request (a block-wise body already reassembled).
    pub request: Request,
    /// Captured path parameters.
    pub params: Params,
}

/// Path parameters captured by `{name}` segments and a trailing `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The value captured for `name` (`"*"` for the rest of the path).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest,
}

struct Route {
    method: Method,
    pattern: Vec<Segment>,
    action: Action,
}

/// Maps method + path patterns to async handlers.
///
/// Patterns are paths whose segments are literals, `{name}` (one segment) or a final
/// `*` (the rest, possibly empty). The first matching route wins. A path that matches
/// no route gets 4.04; one that matches only for other methods gets 4.05.
#[derive(Default, Clone)]
pub struct Router {
    routes: Vec<Arc<Route>>,
    links: Vec<Link>,
    guard: Option<Guard>,
}

impl Router {
    /// A router with no routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route.
    pub fn route<F, Fut>(self, method: Method, pattern: &str, handler: F) -> Self
    where
        F: Fn(Incoming) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let handler: BoxedHandler = Arc::new(move |incoming| Box::pin(handler(incoming)));
        self.add(method, pattern, Action::Handler(handler))
    }

    /// Adds a route whose handler answers later through a [`Responder`] (for a service
    /// that queues requests into its own task).
    pub fn route_deferred<F>(self, method: Method, pattern: &str, handler: F) -> Self
    where
        F: Fn(Incoming, Responder) + Send + Sync + 'static,
    {
        self.add(method, pattern, Action::Deferred(Arc::new(handler)))
    }

    fn add(mut self, method: Method, pattern: &str, action: Action) -> Self {
        self.routes.push(Arc::new(Route {
            method,
            pattern: parse_pattern(pattern),
            action,
        }));
        self
    }

    /// Checks every request that matched a route with `guard` before its handler runs
    /// (authorization: who may call what).
    pub fn guard<F>(mut self, guard: F) -> Self
    where
        F: Fn(&Incoming) -> Result<(), Response> + Send + Sync + 'static,
    {
        self.guard = Some(Arc::new(guard));
        self
    }

    /// Describes a resource in `/.well-known/core` (for example with `rt` or `obs`).
    /// Routes whose pattern is a literal path are listed even without one.
    pub fn link(mut self, link: Link) -> Self {
        self.links.push(link);
        self
    }

    /// The links for `/.well-known/core`: the explicit ones, then each literal route path
    /// not already described.
    pub fn links(&self) -> Vec<Link> {
        let mut links = self.links.clone();
        let mut seen: BTreeSet<String> = links.iter().map(|l| l.path.clone()).collect();
        for route in &self.routes {
            let literal: Option<Vec<&str>> = route
                .pattern
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => Some(l.as_str()),
                    _ => None,
                })
                .collect();
            if let Some(parts) = literal {
                let path = parts.join("/");
                if seen.insert(path.clone()) {
                    links.push(Link::new(&path));
                }
            }
        }
        links
    }

    /// Finds the handler for a request and starts it; or the 4.04/4.05 answer.
    pub(crate) fn dispatch(
        &self,
        id: IncomingId,
        handle: &Handle,
        peer: SocketAddr,
        identity: Option<crate::security::Identity>,
        request: Request,
    ) -> Dispatch {
        let mut path_matched = false;
        let mut found = None;
        {
            // On the stack for paths of up to 8 segments (a heap vector per request
            // was ~100 instructions of a ~7k-instruction GET).
            let segments: smallvec::SmallVec<[&str; 8]> = request.path_segments().collect();
            for route in &self.routes {
                let Some(params) = match_pattern(&route.pattern, &segments) else {
                    continue;
                };
                path_matched = true;
                if request.method() == Some(route.method) {
                    found = Some((route, params));
                    break;
                }
            }
        }
        if let Some((route, params)) = found {
            let incoming = Incoming {
                peer,
                identity,
                request,
                params,
            };
            if let Some(guard) = &self.guard {
                if let Err(refusal) = guard(&incoming) {
                    return Dispatch::Answer(refusal);
                }
            }
            return match &route.action {
                Action::Handler(handler) => Dispatch::Future(handler(incoming)),
                Action::Deferred(handler) => {
                    let responder = Responder {
                        id,
                        handle: Some(handle.clone()),
                    };
                    handler(incoming, responder);
                    Dispatch::Deferred
                }
            };
        }
        Dispatch::Answer(if path_matched {
            Response::error(
                Code::METHOD_NOT_ALLOWED,
                "method not allowed on this resource",
            )
        } else {
            Response::error(Code::NOT_FOUND, "no such resource")
        })
    }
}

fn parse_pattern(pattern: &str) -> Vec<Segment> {
    pattern
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s == "*" {
                Segment::Rest
            } else if let Some(name) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Segment::Param(name.into())
            } else {
                Segment::Literal(s.into())
            }
        })
        .collect()
}

fn match_pattern(pattern: &[Segment], path: &[&str]) -> Option<Params> {
    let mut params = Vec::new();
    for (i, segment) in pattern.iter().enumerate() {
        match segment {
            Segment::Rest => {
                params.push(("*".into(), path.get(i..).unwrap_or(&[]).join("/")));
                return Some(Params(params));
            }
            Segment::Literal(l) => {
                if path.get(i) != Some(&l.as_str()) {
                    return None;
                }
            }
            Segment::Param(name) => params.push((name.clone(), String::from(*path.get(i)?))),
        }
    }
    (path.len() == pattern.len()).then_some(Params(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_literals_params_and_rest() {
        let p = parse_pattern("/session/{id}/hb");
        assert_eq!(
            match_pattern(&p, &["session", "42", "hb"])
                .unwrap()
                .get("id"),
            Some("42")
        );
        assert!(match_pattern(&p, &["session", "42"]).is_none());
        assert!(match_pattern(&p, &["session", "42", "hb", "x"]).is_none());
        let rest = parse_pattern("z/*");
        assert_eq!(
            match_pattern(&rest, &["z", "a", "b"]).unwrap().get("*"),
            Some("a/b")
        );
        assert_eq!(match_pattern(&rest, &["z"]).unwrap().get("*"), Some(""));
        assert!(match_pattern(&rest, &["y"]).is_none());
    }

    #[test]
    fn literal_routes_are_listed_as_links() {
        let r = Router::new()
            .route(Method::Get, "a/b", |_| async {
                Response::new(Code::CONTENT)
            })
            .route(Method::Put, "a/b", |_| async {
                Response::new(Code::CHANGED)
            })
            .route(Method::Get, "z/*", |_| async {
                Response::new(Code::CONTENT)
            })
            .link(Link::new("z").attr("rt", "zk"));
        let paths: Vec<String> = r.links().into_iter().map(|l| l.path).collect();
        assert_eq!(paths, ["z", "a/b"]);
    }

    #[test]
    fn unknown_path_is_404_and_wrong_method_405() {
        let r = Router::new().route(Method::Get, "a", |_| async { Response::new(Code::CONTENT) });
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (handle, _commands) = Handle::detached();
        let code = |req| match r.dispatch(IncomingId(1), &handle, peer, None, req) {
            Dispatch::Answer(response) => Some(response.code()),
            _ => None,
        };
        assert_eq!(code(Request::get("b")), Some(Code::NOT_FOUND));
        assert_eq!(code(Request::put("a")), Some(Code::METHOD_NOT_ALLOWED));
        assert_eq!(code(Request::get("a")), None, "dispatched to the handler");
    }
}
