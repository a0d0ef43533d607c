//! Interoperability with libcoap (Debian's libcoap3-bin): its client against our server,
//! and our client against its server.

mod common;
#[path = "../../tests/common/provision.rs"]
mod provision;

use common::{big_body, client, free_udp_port, run_bounded, Child, TestServer};
use pehra_shared::coap::{Code, Config, Request};
use std::time::Duration;
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(30);

fn coap_client(args: &[&str]) -> Command {
    provision::libcoap();
    let mut c = Command::new("coap-client-notls");
    c.args(["-B", "10"]).args(args);
    c
}

#[tokio::test]
async fn libcoap_client_discovers_resources() {
    let server = TestServer::start().await;
    let uri = format!("coap://127.0.0.1:{}/.well-known/core", server.port());
    let out = run_bounded(coap_client(&[&uri]), LIMIT).await;
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        body.contains("</hello>") && body.contains(r#"</counter>;rt="test.counter";obs"#),
        "{body}"
    );
}

#[tokio::test]
async fn libcoap_client_puts_and_gets() {
    let server = TestServer::start().await;
    let base = format!("coap://127.0.0.1:{}", server.port());
    let out = run_bounded(
        coap_client(&[
            "-m",
            "put",
            "-t",
            "0",
            "-e",
            "from-libcoap",
            &format!("{base}/store"),
        ]),
        LIMIT,
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let c = client(Config::default()).await;
    let stored = c
        .handle()
        .request(server.endpoint.local_addr(), Request::get("store"))
        .await
        .unwrap();
    assert_eq!(stored.payload(), b"from-libcoap");
    assert_eq!(stored.content_format(), Some(0));
    let out = run_bounded(coap_client(&[&format!("{base}/store")]), LIMIT).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "from-libcoap"
    );
}

#[tokio::test]
async fn libcoap_client_gets_20_kib_block_wise() {
    let server = TestServer::start().await;
    let dir = std::env::temp_dir().join(format!("pehra-libcoap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("big.bin");
    let uri = format!("coap://127.0.0.1:{}/big", server.port());
    let out = run_bounded(
        coap_client(&["-b", "1024", "-o", file.to_str().unwrap(), &uri]),
        LIMIT,
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&file).unwrap(), big_body());
    // And up: libcoap sends 20 KiB with Block1.
    std::fs::write(&file, big_body()).unwrap();
    let out = run_bounded(
        coap_client(&["-m", "put", "-b", "512", "-f", file.to_str().unwrap(), &uri]),
        LIMIT,
    )
    .await;
    let sum: u64 = big_body().iter().map(|b| u64::from(*b)).sum();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        format!("{}:{}", 20 * 1024, sum)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn libcoap_client_observes_several_notifications() {
    let mut server = TestServer::start().await;
    let uri = format!("coap://127.0.0.1:{}/counter", server.port());
    let observer = tokio::spawn(run_bounded(coap_client(&["-s", "3", "-w", &uri]), LIMIT));
    server.observe_registered().await;
    for _ in 0..4 {
        assert_eq!(server.bump().await, 1);
    }
    let out = observer.await.unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    assert_eq!(
        lines,
        ["0", "1", "2", "3", "4"],
        "every notification, in order: {out:?}"
    );
}

/// Starts `coap-server-notls` on a free loopback port; killed when dropped.
fn libcoap_server() -> (Child, std::net::SocketAddr) {
    provision::libcoap();
    let port = free_udp_port();
    let child = std::process::Command::new("coap-server-notls")
        .args(["-A", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("coap-server-notls (apt-get install libcoap3-bin)");
    (Child(child), format!("127.0.0.1:{port}").parse().unwrap())
}

/// A client that retries quickly, so a server still starting is reached at once.
fn eager() -> Config {
    Config {
        ack_timeout: Duration::from_millis(100),
        max_retransmit: 6,
        ..Config::default()
    }
}

#[tokio::test]
async fn our_client_against_libcoap_server() {
    let (_server, addr) = libcoap_server();
    let c = client(eager()).await;
    let h = c.handle();
    tokio::time::timeout(LIMIT, async {
        let root = h.request(addr, Request::get("")).await.unwrap();
        assert_eq!(root.code(), Code::CONTENT);
        assert!(String::from_utf8_lossy(root.payload()).contains("libcoap"));

        let core = h
            .request(addr, Request::get(".well-known/core"))
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(core.payload()).contains("</time>"));

        // 20 KiB up (Block1) and back down (Block2).
        let put = Request::put("example_data")
            .with_payload(big_body())
            .with_content_format(0);
        let stored = h.request(addr, put).await.unwrap();
        assert!(stored.code().is_success(), "{:?}", stored.code());
        let back = h.request(addr, Request::get("example_data")).await.unwrap();
        assert_eq!(back.payload().len(), big_body().len());
        assert_eq!(back.payload(), &big_body()[..]);

        // libcoap's /time notifies every second.
        let mut time = h.observe(addr, Request::get("time")).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let n = time.next().await.unwrap().unwrap();
            seen.push(n.payload().to_vec());
        }
        assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");
    })
    .await
    .expect("bounded");
}
