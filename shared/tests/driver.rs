//! The tokio driver over real UDP sockets on loopback.

mod common;

use common::{big_body, client, TestServer};
use pehra_shared::coap::{option, Code, Config, Request, Response};
use pehra_shared::driver::Error;
use std::time::Duration;

/// Every test is bounded in time.
const LIMIT: Duration = Duration::from_secs(30);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test took too long")
}

#[tokio::test]
async fn get_put_and_routing_errors() {
    bounded(async {
        let server = TestServer::start().await;
        let c = client(Config::default()).await;
        let h = c.handle();
        let addr = server.endpoint.local_addr();
        let hello = h.request(addr, Request::get("hello")).await.unwrap();
        assert_eq!(
            (hello.code(), hello.payload()),
            (Code::CONTENT, &b"world"[..])
        );

        let put = Request::put("store")
            .with_payload(*b"\xa1\x61a\x01")
            .with_content_format(60);
        assert_eq!(h.request(addr, put).await.unwrap().code(), Code::CHANGED);
        let got = h.request(addr, Request::get("store")).await.unwrap();
        assert_eq!(got.payload(), b"\xa1\x61a\x01");
        assert_eq!(got.content_format(), Some(60));

        let missing = h.request(addr, Request::get("nope")).await.unwrap();
        assert_eq!(missing.code(), Code::NOT_FOUND);
        let wrong = h.request(addr, Request::delete("hello")).await.unwrap();
        assert_eq!(wrong.code(), Code::METHOD_NOT_ALLOWED);
    })
    .await
}

#[tokio::test]
async fn ipv6_loopback_works() {
    bounded(async {
        let server = TestServer::start_on("[::1]:0").await;
        let c = pehra_shared::driver::Endpoint::bind(
            "[::1]:0".parse().unwrap(),
            Config::default(),
            Default::default(),
        )
        .await
        .unwrap();
        let r = c
            .handle()
            .request(server.endpoint.local_addr(), Request::get("hello"))
            .await;
        assert_eq!(r.unwrap().payload(), b"world");
    })
    .await
}

#[tokio::test]
async fn well_known_core_lists_the_routes() {
    bounded(async {
        let server = TestServer::start().await;
        let c = client(Config::default()).await;
        let r = c
            .handle()
            .request(
                server.endpoint.local_addr(),
                Request::get(".well-known/core"),
            )
            .await
            .unwrap();
        let body = String::from_utf8(r.payload().to_vec()).unwrap();
        assert_eq!(r.content_format(), Some(40));
        for path in [
            "</hello>",
            "</store>",
            "</big>",
            "</slow>",
            r#"</counter>;rt="test.counter";obs"#,
        ] {
            assert!(body.contains(path), "{path} missing from {body}");
        }
    })
    .await
}

#[tokio::test]
async fn slow_handler_answers_with_a_separate_response() {
    bounded(async {
        let server = TestServer::start().await;
        let c = client(Config::default()).await;
        let r = c
            .handle()
            .request(server.endpoint.local_addr(), Request::post("slow"))
            .await
            .unwrap();
        assert_eq!(r.payload(), b"done");
        let stats = c.handle().stats().await.unwrap();
        assert_eq!(
            stats.retransmissions, 0,
            "the empty ACK stopped retransmission"
        );
    })
    .await
}

#[tokio::test]
async fn twenty_kib_block_wise_both_ways() {
    bounded(async {
        let server = TestServer::start().await;
        let c = client(Config::default()).await;
        let h = c.handle();
        let addr = server.endpoint.local_addr();
        let down = h.request(addr, Request::get("big")).await.unwrap();
        assert_eq!(down.payload(), &big_body()[..]);
        let body = big_body();
        let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
        let up = h
            .request(addr, Request::put("big").with_payload(body.clone()))
            .await
            .unwrap();
        assert_eq!(up.payload(), format!("{}:{}", body.len(), sum).as_bytes());
        assert!(
            up.option(option::BLOCK1).is_some(),
            "the final response echoes Block1"
        );
    })
    .await
}

#[tokio::test]
async fn observe_streams_notifications_and_deregisters_on_drop() {
    bounded(async {
        let mut server = TestServer::start().await;
        let c = client(Config::default()).await;
        let addr = server.endpoint.local_addr();
        let mut observation = c
            .handle()
            .observe(addr, Request::get("counter"))
            .await
            .unwrap();
        server.observe_registered().await;
        assert_eq!(observation.next().await.unwrap().unwrap().payload(), b"0");
        for i in 1..=3 {
            assert_eq!(server.bump().await, 1);
            let n = observation.next().await.unwrap().unwrap();
            assert_eq!(n.payload(), i.to_string().as_bytes());
        }
        drop(observation);
        // The client sends the observing GET again with Observe: 1 (RFC 7641 §3.6), and
        // the server drops the observer before it reaches the route.
        server.observe_deregistered().await;
        assert_eq!(server.handle.observer_count("counter").await.unwrap(), 0);
        assert_eq!(server.bump().await, 0, "nobody is notified any more");
        assert_eq!(
            c.handle().stats().await.unwrap().resets_sent,
            0,
            "no Reset needed"
        );
    })
    .await
}

#[tokio::test]
async fn garbage_datagrams_are_rejected_and_the_server_keeps_serving() {
    bounded(async {
        let server = TestServer::start().await;
        let addr = server.endpoint.local_addr();
        let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 1500];

        // A CON with a reserved option delta (15): RST with its message ID.
        raw.send_to(&[0x40, 0x01, 0xbe, 0xef, 0xf1, 0x00], addr)
            .await
            .unwrap();
        let (n, _) = raw.recv_from(&mut buf).await.unwrap();
        assert_eq!(
            buf[..n],
            [0x70, 0x00, 0xbe, 0xef],
            "RST for the malformed CON"
        );

        // A well-formed CON with a bad Block2 value (reserved SZX 7): 4.00 Bad Request.
        let bad_block = [
            0x41, 0x01, 0x00, 0x10, 0x99, 0xb5, b'h', b'e', b'l', b'l', b'o', 0xc1, 0x07,
        ];
        raw.send_to(&bad_block, addr).await.unwrap();
        let (n, _) = raw.recv_from(&mut buf).await.unwrap();
        assert_eq!(buf[1], 0x80, "4.00, got {:02x?}", &buf[..n]);
        assert!(
            String::from_utf8_lossy(&buf[4..n]).contains("Block"),
            "the body says why"
        );

        // Random bytes, truncated packets, bad tokens: never answered with a crash.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300usize {
            let junk: Vec<u8> = (0..len % 40)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            raw.send_to(&junk, addr).await.unwrap();
        }
        for truncated in 1..8 {
            raw.send_to(
                &[0x40, 0x01, 0x00, 0x01, 0xbb, b'h', b'e', b'l'][..truncated],
                addr,
            )
            .await
            .unwrap();
        }
        let c = client(Config::default()).await;
        let r = c
            .handle()
            .request(addr, Request::get("hello"))
            .await
            .unwrap();
        assert_eq!(r.payload(), b"world", "still serving");
        let stats = server.handle.stats().await.unwrap();
        assert!(
            stats.malformed > 100,
            "malformed datagrams counted: {stats:?}"
        );
    })
    .await
}

#[tokio::test]
async fn request_to_a_silent_peer_times_out() {
    bounded(async {
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let config = Config {
            ack_timeout: Duration::from_millis(20),
            max_retransmit: 2,
            ..Config::default()
        };
        let c = client(config).await;
        let err = c
            .handle()
            .request(silent.local_addr().unwrap(), Request::get("x"))
            .await;
        assert_eq!(
            err,
            Err(Error::Exchange(pehra_shared::coap::ExchangeError::Timeout))
        );
        let mut buf = [0u8; 64];
        silent.set_nonblocking(true).unwrap();
        let mut copies = 0;
        while silent.recv_from(&mut buf).is_ok() {
            copies += 1;
        }
        assert_eq!(copies, 3, "the request and two retransmissions");
    })
    .await
}

#[tokio::test]
async fn a_request_whose_caller_gave_up_is_not_retransmitted() {
    bounded(async {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let config = Config {
            ack_timeout: Duration::from_millis(50),
            ack_random_factor: 1.0,
            max_retransmit: 4,
            ..Config::default()
        };
        let c = client(config).await;
        let handle = c.handle();
        let to = silent.local_addr().unwrap();
        // The caller stops waiting long before the first retransmission (50 ms).
        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            handle.request(to, Request::get("x")),
        )
        .await;
        assert!(gave_up.is_err());
        let mut buf = [0u8; 64];
        silent.recv_from(&mut buf).await.unwrap();
        // Four retransmissions would come within 50+100+200+400 ms; none comes.
        let again =
            tokio::time::timeout(Duration::from_millis(900), silent.recv_from(&mut buf)).await;
        assert!(again.is_err(), "a retransmission of an abandoned request");
        assert_eq!(handle.stats().await.unwrap().retransmissions, 0);
    })
    .await
}

#[tokio::test]
async fn many_requests_in_flight() {
    bounded(async {
        let server = TestServer::start().await;
        let c = client(Config {
            nstart: 16,
            ..Config::default()
        })
        .await;
        let addr = server.endpoint.local_addr();
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let h = c.handle();
                tokio::spawn(async move {
                    let put = Request::put("big").with_payload(vec![1u8; i % 7]);
                    h.request(addr, put).await.map(|r| r.payload().to_vec())
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let body = t.await.unwrap().unwrap();
            assert_eq!(body, format!("{}:{}", i % 7, i % 7).as_bytes());
        }
        let _ = Response::new(Code::CONTENT);
    })
    .await
}

#[tokio::test]
async fn a_connected_client_hears_at_once_that_nothing_listens() {
    bounded(async {
        // A port that was free a moment ago: nothing listens on it now.
        let addr = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = pehra_shared::driver::Endpoint::connect(addr, Config::default())
            .await
            .unwrap();
        let h = c.handle();
        let started = std::time::Instant::now();
        let (a, b) = tokio::join!(
            h.request(addr, Request::get("x")),
            h.request(addr, Request::get("y")),
        );
        assert_eq!(a, Err(Error::Refused { peer: addr }));
        assert_eq!(b, Err(Error::Refused { peer: addr }));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            Error::Refused { peer: addr }.to_string(),
            format!("nothing listens on udp {addr}")
        );
        // Once something listens there, the same endpoint reaches it.
        let server = TestServer::start_on(&addr.to_string()).await;
        let hello = c
            .handle()
            .request(addr, Request::get("hello"))
            .await
            .unwrap();
        assert_eq!(hello.payload(), b"world");
        drop(server);
    })
    .await
}
