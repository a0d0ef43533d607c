//! What the interoperability tests need from outside (libcoap's tools, a Python with
//! aiocoap), installed on first use by `tests/provision.sh`, so that `cargo test` works on
//! a fresh machine. The script holds a file lock while it installs, so test binaries that
//! run at the same time do not race; once everything is there it returns at once.
//!
//! Shared by the workspace's test crates (`#[path]`-included from `shared/tests` too).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workspace root: the nearest ancestor of this crate holding `tests/provision.sh`.
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("tests/provision.sh").exists())
        .expect("tests/provision.sh above the crate")
}

/// Runs `tests/provision.sh` once per test binary; panics with its message if it fails
/// (e.g. not root and libcoap3-bin missing: it names the command).
pub fn ensure() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(workspace_root().join("tests/provision.sh"))
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("running bash tests/provision.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    });
    if let Err(e) = result {
        panic!("provisioning the test tools failed: {e}");
    }
}

/// A Python with aiocoap and its OSCORE support: `$PEHRA_PYTHON`, else the workspace's
/// `.venv` (made on first use).
pub fn python() -> PathBuf {
    ensure();
    match std::env::var_os("PEHRA_PYTHON") {
        Some(p) => p.into(),
        None => workspace_root().join(".venv/bin/python"),
    }
}

/// libcoap's `coap-client-notls` / `coap-server-notls`, installed on first use.
pub fn libcoap() {
    ensure();
}
