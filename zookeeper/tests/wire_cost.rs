//! What a znode operation costs on the wire, against a real in-process zookeeper on
//! loopback: a value a little over 1 KiB (the zookeeper benchmark writes 1 KiB values,
//! which with their envelope exceed one 1024-byte block) goes in one request datagram
//! and comes back in one answer, not in 1 KiB blocks each costing a round trip.

use pehra_zookeeper::{Client, ClientOptions, Server, ServerConfig};
use std::time::Duration;

/// Long enough that neither side retransmits or answers separately in a loaded test
/// run, so every exchange below is exactly one datagram each way.
const PATIENT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_value_over_one_block_is_written_and_read_in_one_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    config.coap.piggyback_window = PATIENT;
    let server = Server::start(config).await.expect("server starts");
    // Without a session: no heartbeat goes out beside the calls counted.
    let mut coap = ClientOptions::default().coap;
    coap.ack_timeout = PATIENT;
    let client = Client::without_session(server.local_addr(), coap)
        .await
        .expect("connect");
    let value: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();

    // Datagrams (sent, received) since the last call; none retransmitted.
    let mut last = client.coap_stats().await.expect("stats");
    let mut datagrams = async || {
        let now = client.coap_stats().await.expect("stats");
        assert_eq!(now.retransmissions, 0);
        let delta = (now.sent - last.sent, now.received - last.received);
        last = now;
        delta
    };

    client
        .create("/v", &value, pehra_zookeeper::CreateMode::Persistent)
        .await
        .expect("create");
    assert_eq!(datagrams().await, (1, 1), "a 1.5 KiB create");
    client.set_data("/v", &value, None).await.expect("set");
    assert_eq!(datagrams().await, (1, 1), "a 1.5 KiB set");
    let (data, _) = client.get_data("/v").await.expect("get");
    assert_eq!(data, value);
    assert_eq!(datagrams().await, (1, 1), "a 1.5 KiB get");
}
