//! `pehra coap` as a user runs it: the real binary against a real server on loopback.

use pehra_shared::coap::{option, Code, Config, Method, Response};
use pehra_shared::driver::{Endpoint, Router};
use std::process::Output;
use std::time::Duration;

async fn server() -> Endpoint {
    let router = Router::new()
        .route(Method::Get, "hello", |_| async {
            Response::content(*b"world")
        })
        .route(Method::Put, "echo", |req| {
            let body = req.request.payload().to_vec();
            async move { Response::new(Code::CHANGED).with_payload(body) }
        })
        .route(Method::Get, "cbor", |_| async {
            Response::cbor(vec![0xa1, 0x61, 0x61, 0x01])
        })
        .route(Method::Get, "bin", |_| async {
            Response::content(vec![0x00, 0xff, 0x0a, 0x80, 0x01])
                .with_content_format(42)
                .with_option(option::ETAG, vec![0x0a, 0x1b])
        })
        .route(Method::Get, "tick", |_| async {
            Response::content(*b"tick")
        });
    Endpoint::bind("127.0.0.1:0".parse().unwrap(), Config::default(), router)
        .await
        .unwrap()
}

async fn pehra(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pehra"));
    cmd.args(args).kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("pehra did not finish in time")
        .unwrap()
}

#[tokio::test]
async fn get_put_cbor_and_errors() {
    let s = server().await;
    let base = format!("coap://127.0.0.1:{}", s.local_addr().port());

    let out = pehra(&["coap", "get", &format!("{base}/hello")]).await;
    assert!(out.status.success());
    assert_eq!(out.stdout, b"world\n");

    let out = pehra(&["coap", "put", &format!("{base}/echo"), "-d", "payload"]).await;
    assert_eq!(out.stdout, b"payload\n");

    let out = pehra(&["coap", "get", &format!("{base}/cbor")]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"a\": 1}\n",
        "CBOR in diagnostic notation"
    );

    let out = pehra(&["coap", "get", &format!("{base}/missing")]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("4.04"),
        "{out:?}"
    );

    let out = pehra(&["coap", "get", "http://127.0.0.1/"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only coap:// URIs"));
}

#[tokio::test]
async fn observe_prints_notifications() {
    let s = server().await;
    let handle = s.handle();
    let uri = format!("coap://127.0.0.1:{}/tick", s.local_addr().port());
    let observer =
        tokio::spawn(
            async move { pehra(&["coap", "get", &uri, "--observe", "--count", "3"]).await },
        );
    // Notify until the observer has seen three values and exited.
    let out = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if observer.is_finished() {
                return observer.await.unwrap();
            }
            handle
                .notify("tick", Response::content(*b"tick"))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("observer finished");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"tick\ntick\ntick\n");
}

#[tokio::test]
async fn raw_writes_the_payload_exactly_and_verbose_names_the_options() {
    let s = server().await;
    let uri = format!("coap://127.0.0.1:{}/bin", s.local_addr().port());
    let out = pehra(&["coap", "get", &uri, "--raw"]).await;
    assert!(out.status.success());
    assert_eq!(
        out.stdout,
        [0x00, 0xff, 0x0a, 0x80, 0x01],
        "no newline added"
    );
    let out = pehra(&["coap", "get", &uri, "--raw", "-v"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("2.05\n"), "{err}");
    assert!(err.contains("\nETag: 0a1b\n"), "{err}");
    assert!(err.contains("\nContent-Format: 42\n"), "{err}");
    assert!(!err.contains("[("), "no raw tuples: {err}");
}
