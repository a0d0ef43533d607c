//! Helpers shared by the zookeeper's integration tests.

use pehra_zookeeper::{Client, ClientOptions, Server};
use std::future::Future;
use std::time::Duration;

/// A client of `server` with a session of `session_timeout`.
pub async fn client(server: &Server, session_timeout: Duration) -> Client {
    let options = ClientOptions {
        session_timeout,
        ..Default::default()
    };
    Client::connect(server.local_addr(), options)
        .await
        .expect("connect")
}

/// `f`, or a panic naming `what` if it takes longer than `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}
