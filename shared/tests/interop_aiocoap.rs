//! Interoperability with aiocoap, through its Python API (its command-line tool shows
//! only the first notification of an observation).
//!
//! The interpreter is `$PEHRA_PYTHON`, else `.venv/bin/python` at the workspace root,
//! made on first use by `tests/provision.sh` (`pip install 'aiocoap[oscore]'`).

mod common;
#[path = "../../tests/common/provision.rs"]
mod provision;

use common::{run_bounded, TestServer};
use provision::python;
use std::path::PathBuf;
use std::time::Duration;

#[tokio::test]
async fn aiocoap_get_put_cbor_block_wise_and_observe() {
    let server = TestServer::start().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiocoap_client.py");
    let mut command = tokio::process::Command::new(python());
    command.arg(script).arg(server.port().to_string());
    let out = run_bounded(command, Duration::from_secs(30)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "aiocoap checks failed:\n{stdout}\n{stderr}"
    );
    for step in [
        "GET ok",
        "PUT CBOR ok",
        "block-wise GET ok",
        "block-wise PUT ok",
        "observe ok",
    ] {
        assert!(stdout.contains(step), "{step} missing:\n{stdout}\n{stderr}");
    }
    assert_eq!(
        *server.counter.lock().unwrap(),
        3,
        "three bumps, four values seen"
    );
}

/// aiocoap as an OSCORE client (RFC 8613, its `FilesystemSecurityContext`) against the
/// test server with server security on: GET, PUT, block-wise both ways and observe, all
/// protected, the Echo round trip after the server's start handled by aiocoap; the
/// server's application sees aiocoap's identity.
#[tokio::test]
async fn aiocoap_over_oscore_get_put_block_wise_and_observe() {
    use pehra_shared::coap::ServerSecurity;
    use pehra_shared::security::{self, Identity, KeyTable, PeerKey, Role};

    let server = TestServer::start().await;
    let identity_key = [0x5a; 32];
    let server_kid = security::zookeeper_kid();
    let secret = security::pairwise_secret(&identity_key, &server_kid);
    let identity = Identity {
        name: "aiocoap".into(),
        role: Role::Client,
        kid: security::kid(Role::Client, 42),
    };
    let mut keys = KeyTable::new();
    keys.insert(PeerKey {
        identity: identity.clone(),
        secret,
    });
    server
        .handle
        .set_server_security(
            ServerSecurity::new(server_kid.clone(), keys, 0),
            Box::new(|_| Ok(())),
        )
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("pehra-aiocoap-oscore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let settings = format!(
        r#"{{"sender-id_hex": "{}", "recipient-id_hex": "{}", "secret_hex": "{}", "algorithm": "AES-CCM-16-64-128", "kdf": "HKDF-SHA256"}}"#,
        hex(&identity.kid),
        hex(&server_kid),
        hex(&secret)
    );
    std::fs::write(dir.join("settings.json"), settings).unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aiocoap_oscore_client.py");
    let mut command = tokio::process::Command::new(python());
    command.arg(script).arg(server.port().to_string()).arg(&dir);
    let out = run_bounded(command, Duration::from_secs(30)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "aiocoap OSCORE checks failed:\n{stdout}\n{stderr}"
    );
    for step in [
        "OSCORE GET ok",
        "OSCORE PUT ok",
        "OSCORE block-wise ok",
        "OSCORE observe ok",
        "plain request ok",
    ] {
        assert!(stdout.contains(step), "{step} missing:\n{stdout}\n{stderr}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
