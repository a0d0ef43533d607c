//! The security flags every command shares: a server's (`--credentials`, `--acl`,
//! `--insecure`) and a client's (`--credentials`), with `PEHRA_CREDENTIALS` as the
//! default credentials file.

use anyhow::{bail, Context, Result};
use clap::Args;
use pehra_shared::security::credentials::Credentials;
use pehra_zookeeper::server::security_updates::SecurityUpdates;
use pehra_zookeeper::Security;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// How a server (the zookeeper, a broker) protects itself.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerSecurityArgs {
    /// This server's credentials file (made by `pehra keys`). With it every request
    /// must be OSCORE-protected by a known identity and allowed by the ACL policy.
    #[arg(long, env = "PEHRA_CREDENTIALS", value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// An ACL file (see docs/security.md; check one with `pehra acl check FILE`) used
    /// instead of the default policy.
    #[arg(long, value_name = "FILE")]
    pub acl: Option<PathBuf>,
    /// Serve plain CoAP to anyone, with no credentials, even on a non-loopback address:
    /// anyone who can reach the port then controls the cluster. For experiments only.
    #[arg(long)]
    pub insecure: bool,
}

impl ServerSecurityArgs {
    /// The security to run with: `None` only on loopback without credentials or with
    /// `--insecure` (said loudly); an error for a non-loopback address without either.
    pub fn resolve(&self, listen: SocketAddr, what: &str) -> Result<Option<Security>> {
        let Some(path) = &self.credentials else {
            if !listen.ip().is_loopback() && !self.insecure {
                bail!(
                    "{what} would listen on {listen} without credentials, open to anyone who can reach it: \
                     make keys with `pehra keys init DIR` and pass --credentials DIR/NAME.cred \
                     (or --insecure for an experiment)"
                );
            }
            if self.insecure {
                tracing::warn!(%listen, "INSECURE: no credentials, no ACLs: anyone who can reach {listen} controls the cluster");
                eprintln!("WARNING: {what} runs --insecure on {listen}: no authentication, no access control");
            }
            return Ok(None);
        };
        let credentials =
            Credentials::load(path).with_context(|| format!("loading {what}'s credentials"))?;
        let policy = crate::acl_file::load_or_default(self.acl.as_deref())?;
        Ok(Some(Security {
            credentials: Arc::new(credentials),
            policy: Arc::new(policy),
        }))
    }
}

impl ServerSecurityArgs {
    /// With credentials in `initial`: a stream of new versions of them and of the ACL
    /// file, loaded again from the same paths each time the process gets SIGHUP (after
    /// `pehra keys` added, rotated or revoked someone and the new file was copied in).
    /// A file that does not load is reported and changes nothing.
    pub fn reload_on_sighup(
        &self,
        listen: SocketAddr,
        what: &str,
        initial: Option<&Security>,
    ) -> Result<Option<SecurityUpdates>> {
        let Some(initial) = initial else {
            return Ok(None);
        };
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("listening for SIGHUP")?;
        let (tx, rx) = tokio::sync::watch::channel(initial.clone());
        let (args, what) = (self.clone(), what.to_string());
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match args.resolve(listen, &what) {
                    Ok(Some(security)) => {
                        tracing::info!("SIGHUP: {what}'s credentials and ACL file loaded again");
                        if tx.send(security).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(
                        "SIGHUP: {what}'s credentials or ACL file do not load, the running ones stay: {e:#}"
                    ),
                }
            }
        });
        Ok(Some(rx))
    }
}

/// How a server's start line names its security.
pub fn mode(secure: bool) -> &'static str {
    if secure {
        "OSCORE and ACLs"
    } else {
        "plain CoAP, no credentials"
    }
}

/// How a client (a tool, an application) authenticates itself.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientSecurityArgs {
    /// The client's credentials file (made by `pehra keys`; `pehra dev` prints the path
    /// of its own). Every request is then protected with OSCORE. Without it requests go
    /// as plain CoAP, which only an insecure cluster serves.
    #[arg(long, env = "PEHRA_CREDENTIALS", value_name = "FILE", global = true)]
    pub credentials: Option<PathBuf>,
}

impl ClientSecurityArgs {
    /// The credentials, loaded, if a file was given.
    pub fn load(&self) -> Result<Option<Arc<Credentials>>> {
        self.credentials
            .as_ref()
            .map(|path| {
                Credentials::load(path)
                    .map(Arc::new)
                    .with_context(|| format!("loading the credentials {}", path.display()))
            })
            .transpose()
    }
}
