//! OSCORE through the tokio driver on loopback: a server endpoint with a key table and a
//! guard that refuses requests without a verified identity, a client endpoint with a
//! context towards it, and a plain client.

use pehra_shared::coap::ServerSecurity;
use pehra_shared::coap::{client_id_context, Code, Config, Method, Request, Response};
use pehra_shared::driver::{Endpoint, Router};
use pehra_shared::oscore::{ContextParams, SecurityContext};
use pehra_shared::security::{self, Identity, KeyTable, PeerKey, Role};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: [u8; 32] = [7; 32];

fn bob() -> Identity {
    Identity {
        name: "bob".into(),
        role: Role::Client,
        kid: security::kid(Role::Client, 2),
    }
}

async fn server(stored: Arc<Mutex<Vec<u64>>>) -> Endpoint {
    let router = Router::new()
        .route(Method::Get, "whoami", |incoming| async move {
            let name = incoming.identity.map(|i| i.name).unwrap_or_default();
            Response::content(name.into_bytes())
        })
        .guard(
            |incoming| match (&incoming.identity, incoming.request.path().as_str()) {
                (_, ".well-known/core") | (Some(_), _) => Ok(()),
                (None, _) => Err(Response::error(
                    Code::UNAUTHORIZED,
                    "this resource needs OSCORE",
                )),
            },
        );
    let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap(), Config::default(), router)
        .await
        .unwrap();
    let mut keys = KeyTable::new();
    keys.insert(PeerKey {
        identity: bob(),
        secret: security::pairwise_secret(&KEY, &security::zookeeper_kid()),
    });
    let security = ServerSecurity::new(security::zookeeper_kid(), keys, 0);
    endpoint
        .handle()
        .set_server_security(
            security,
            Box::new(move |ceiling| {
                stored.lock().unwrap().push(ceiling);
                Ok(())
            }),
        )
        .await
        .unwrap();
    endpoint
}

async fn client() -> Endpoint {
    Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        Config::default(),
        Router::new(),
    )
    .await
    .unwrap()
}

fn bob_context() -> SecurityContext {
    let secret = security::pairwise_secret(&KEY, &security::zookeeper_kid());
    let id_context = client_id_context(rand_u64());
    SecurityContext::new(
        &ContextParams {
            master_secret: &secret,
            master_salt: &[],
            id_context: Some(&id_context),
            sender_id: &bob().kid,
            recipient_id: &security::zookeeper_kid(),
        },
        None,
    )
    .unwrap()
}

fn rand_u64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn a_secured_client_is_served_with_its_identity_and_a_plain_one_is_refused() {
    let stored = Arc::new(Mutex::new(Vec::new()));
    let server = server(stored.clone()).await;
    let addr = server.local_addr();
    let bob = client().await;
    bob.handle().secure_peer(addr, bob_context()).await.unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        bob.handle().request(addr, Request::get("whoami")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(answer.code(), Code::CONTENT);
    assert_eq!(answer.payload(), b"bob");
    // The Echo answer used a Partial IV of the server's: its ceiling was stored first.
    assert_eq!(stored.lock().unwrap().first(), Some(&4097));

    let stranger = client().await;
    let answer = stranger
        .handle()
        .request(addr, Request::get("whoami"))
        .await
        .unwrap();
    assert_eq!(answer.code(), Code::UNAUTHORIZED);
    let discovery = stranger
        .handle()
        .request(addr, Request::get(".well-known/core"))
        .await
        .unwrap();
    assert_eq!(discovery.code(), Code::CONTENT);
}
