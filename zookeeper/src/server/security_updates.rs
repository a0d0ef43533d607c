//! Credentials and ACL policies replaced while a server runs: after `pehra keys` added,
//! rotated or revoked an identity, the operator copies the new files and sends the
//! server SIGHUP; the binary loads them and sends them here. A revoked identity is
//! refused from its next request on, with no restart and no lost session for anyone
//! else. Shared by the zookeeper and the broker.

use super::Security;
use pehra_shared::driver::security::{reload_server_keys, PolicyCell};
use pehra_shared::driver::Handle;
use std::sync::Arc;

/// Newer credentials and policies for a running server, newest last.
pub type SecurityUpdates = tokio::sync::watch::Receiver<Security>;

/// Installs every update from `updates` on the secured endpoint behind `handle` and in
/// `policy` (the router guard's), for as long as the sender lives. An update for another
/// identity than `running_kid` is refused (logged) and changes nothing.
pub fn follow(
    mut updates: SecurityUpdates,
    handle: Handle,
    policy: Arc<PolicyCell>,
    running_kid: Vec<u8>,
    server: &'static str,
) {
    tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            let update = updates.borrow_and_update().clone();
            match reload_server_keys(&handle, &running_kid, &update.credentials).await {
                Ok(peers) => {
                    policy.replace(update.policy.clone());
                    tracing::info!(
                        server,
                        peers,
                        "security reloaded: new key table and ACL policy in force"
                    );
                }
                Err(e) => {
                    tracing::error!(server, error = %e, "security reload refused: the running credentials and policy stay");
                }
            }
        }
    });
}
