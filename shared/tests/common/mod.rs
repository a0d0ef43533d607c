//! A test server built on the driver, shared by the driver and interoperability tests.
#![allow(dead_code)]

use pehra_shared::coap::{link_format::Link, Code, Config, Method, Response};
use pehra_shared::driver::{Endpoint, Handle, Router};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// 20 KiB of recognisable bytes.
pub fn big_body() -> Vec<u8> {
    (0..20 * 1024).map(|i: u32| (i % 251) as u8).collect()
}

/// A test server on `127.0.0.1` (or `addr`):
/// - `GET hello` → "world"
/// - `GET whoami` → the OSCORE identity's name, or "anonymous"
/// - `PUT store` keeps the payload (and Content-Format), `GET store` returns it
/// - `GET big` → [`big_body`] (block-wise), `PUT big` → "LEN:SUM" of what arrived
/// - `GET counter` (observable) → the counter; [`TestServer::bump`] notifies observers
/// - `POST bump` → increments the counter and notifies its observers
/// - `POST slow` → answers after 1.5 s (a separate response)
pub struct TestServer {
    pub endpoint: Endpoint,
    pub handle: Handle,
    pub counter: Arc<Mutex<u32>>,
    /// The Observe value (0 register, 1 deregister) of each GET of `counter` with one.
    observe_requests: tokio::sync::mpsc::UnboundedReceiver<u32>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> TestServer {
        let store: Arc<Mutex<(Vec<u8>, Option<u16>)>> = Arc::default();
        let counter: Arc<Mutex<u32>> = Arc::default();
        let (put_store, get_store, get_counter) = (store.clone(), store, counter.clone());
        let (observed, observe_requests) = tokio::sync::mpsc::unbounded_channel();
        let own_handle: Arc<std::sync::OnceLock<Handle>> = Arc::default();
        let (bump_handle, bump_counter) = (own_handle.clone(), counter.clone());
        let router = Router::new()
            .route(Method::Get, "hello", |_| async {
                Response::content(*b"world")
            })
            .route(Method::Get, "whoami", |req| async move {
                let name = req.identity.map_or("anonymous".into(), |i| i.name);
                Response::content(name.into_bytes())
            })
            .route(Method::Put, "store", move |req| {
                let mut store = put_store.lock().unwrap();
                *store = (req.request.payload().to_vec(), req.request.content_format());
                async { Response::new(Code::CHANGED) }
            })
            .route(Method::Get, "store", move |_| {
                let (body, format) = get_store.lock().unwrap().clone();
                let response = Response::content(body);
                async move {
                    match format {
                        Some(f) => response.with_content_format(f),
                        None => response,
                    }
                }
            })
            .route(Method::Get, "big", |_| async {
                Response::content(big_body())
            })
            .route(Method::Put, "big", |req| {
                let body = req.request.payload();
                let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
                let answer = format!("{}:{}", body.len(), sum);
                async move { Response::new(Code::CHANGED).with_payload(answer.into_bytes()) }
            })
            .route(Method::Get, "counter", move |req| {
                if let Some(observe) = req.request.observe() {
                    let _ = observed.send(observe);
                }
                let value = *get_counter.lock().unwrap();
                async move { Response::content(value.to_string().into_bytes()) }
            })
            .route(Method::Post, "bump", move |_| {
                let handle = bump_handle.get().cloned();
                let counter = bump_counter.clone();
                async move {
                    let Some(handle) = handle else {
                        return Response::error(Code::SERVICE_UNAVAILABLE, "starting");
                    };
                    match bump(&counter, &handle).await {
                        Ok(_) => Response::new(Code::CHANGED),
                        Err(_) => Response::error(Code::INTERNAL_SERVER_ERROR, "closed"),
                    }
                }
            })
            .route(Method::Post, "slow", |_| async {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                Response::new(Code::CHANGED).with_payload(*b"done")
            })
            .link(Link::new("counter").attr("rt", "test.counter").flag("obs"));
        let config = Config {
            nstart: 32,
            ..Config::default()
        };
        let endpoint = Endpoint::bind(addr.parse().unwrap(), config, router)
            .await
            .expect("bind test server");
        let handle = endpoint.handle();
        let _ = own_handle.set(handle.clone());
        TestServer {
            endpoint,
            handle,
            counter,
            observe_requests,
        }
    }

    pub fn port(&self) -> u16 {
        self.endpoint.local_addr().port()
    }

    /// Increments the counter and notifies its observers; returns how many there were.
    pub async fn bump(&self) -> usize {
        bump(&self.counter, &self.handle).await.unwrap()
    }

    /// Waits (bounded) for the next GET of `counter` with Observe: 0. When it returns,
    /// the observer is registered: the driver registers it while answering, before it
    /// takes the next command.
    pub async fn observe_registered(&mut self) {
        assert_eq!(self.next_observe_request().await, 0, "a registration");
    }

    /// Waits (bounded) for the next GET of `counter` with Observe: 1. When it returns,
    /// the observer is gone: the engine removes it before the request reaches a route.
    pub async fn observe_deregistered(&mut self) {
        assert_eq!(self.next_observe_request().await, 1, "a deregistration");
    }

    async fn next_observe_request(&mut self) -> u32 {
        tokio::time::timeout(Duration::from_secs(10), self.observe_requests.recv())
            .await
            .expect("no GET of counter with Observe in time")
            .expect("server gone")
    }
}

/// A client endpoint on an ephemeral loopback port.
pub async fn client(config: Config) -> Endpoint {
    Endpoint::bind("127.0.0.1:0".parse().unwrap(), config, Router::new())
        .await
        .expect("bind client")
}

async fn bump(counter: &Mutex<u32>, handle: &Handle) -> Result<usize, pehra_shared::driver::Error> {
    let value = {
        let mut c = counter.lock().unwrap();
        *c += 1;
        *c
    };
    handle
        .notify("counter", Response::content(value.to_string().into_bytes()))
        .await
}

/// A child process killed (by PID) when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP port free on loopback right now, from below the kernel's ephemeral range
/// (32768–60999 by default) so that no socket bound to port 0 can take it before the
/// server meant for it binds it; every call in one test process returns a different port.
pub fn free_udp_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(211);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(
            n < 22_000,
            "no free loopback UDP port left below the ephemeral range"
        );
        let port = (10_000 + start.wrapping_add(n) % 22_000) as u16;
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Runs a command to completion within `limit`, returning its output; kills it if late.
pub async fn run_bounded(
    mut command: tokio::process::Command,
    limit: Duration,
) -> std::process::Output {
    command.kill_on_drop(true);
    let program = format!("{:?}", command.as_std().get_program());
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (install it: see .ci/run)"));
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} did not finish within {limit:?}"))
        .unwrap()
}
