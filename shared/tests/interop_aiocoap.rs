//! Interoperability with aiocoap, through its Python API (its command-line tool shows
//! only the first notification of an observation).
//!
//! The interpreter is `$PEHRA_PYTHON`, else `.venv/bin/python` at the workspace root
//! (`.ci/run` creates it with `pip install aiocoap`).

mod common;

use common::{run_bounded, TestServer};
use std::path::PathBuf;
use std::time::Duration;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PEHRA_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with aiocoap: run `python3 -m venv .venv && .venv/bin/pip install aiocoap` \
         at the workspace root, or set PEHRA_PYTHON"
    );
    venv
}

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
