//! The broker's rolling-maintenance agent (PEHRA's maintenance function, the broker's
//! side of `pehra cluster maintenance`).
//!
//! It watches the broker's order `/pehra/maintenance/broker-{id}` ([`Maintenance`]);
//! while the znode does not exist it watches the children of `/pehra/maintenance`
//! instead. On an order in state `requested` it:
//!
//! 1. sets the order `running` (a conditional write on the version read, so an order is
//!    taken once);
//! 2. holds the node awake (waking it if dormant) for the duration;
//! 3. moves its leadership away as a controlled shutdown does
//!    ([`super::move_leadership_away`], bounded by the controlled-shutdown timeout);
//! 4. with a command: removes `/admin/shutdown/{id}` again (the controller gives it work
//!    again), runs `sh -c CMD` (bounded by [`COMMAND_TIMEOUT`]) and sets the order `done`
//!    ("exit status 0") or `failed` (the status and the tail of its stderr); then keeps
//!    the node awake until it is back in every in-sync set, and releases it;
//!
//!    **The order only names the command.** `CMD` is looked up by that name in the
//!    broker's own configuration (`--maintenance-command NAME=CMD`); the text of a
//!    command never comes from the network. An order naming a command this broker does
//!    not have is set `failed` at once, before anything is stopped or run, and says which
//!    names it has (anyone who can write a znode could otherwise run a shell on every
//!    broker);
//! 5. without a command: stops following, and asks [`super::Broker::wait`] for a restart
//!    in place: the broker is stopped (every partition flushed, the session closed) and
//!    the program re-executed with the same arguments ([`exec_self`]), so its PID stays.
//!    The order stays `running` across the exec; the restarted broker's agent finds it
//!    so at its first look and sets it `done` ("restarted"). If the exec fails (the
//!    program file was replaced by something that does not run), the old process sets
//!    the order `failed` with the error before it exits
//!    ([`report_restart_failure`]).
//!
//! An order found `running` with a command at the first look was interrupted by a
//! restart of the broker: it is set `failed`.

use super::{pehra, State};
use pehra_cluster::{self as cluster, PEHRA_MAINTENANCE};
use pehra_shared::wire::{self, ErrorKind, Maintenance, MaintenanceState};
use pehra_zookeeper::{Client, ClientOptions, WatchEvent, ZkError};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a maintenance command may run before it is killed (and the order failed).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// How long after a maintenance the node is held awake at most, waiting to be back in
/// every in-sync set.
const BACK_IN_SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause before watching again after an error or a watch that ended.
const RETRY: Duration = Duration::from_secs(1);
/// How much of a failed command's stderr goes into the order's message.
const STDERR_TAIL: usize = 400;

/// What handling an order left to do.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Keep watching.
    Watch,
    /// The broker restarts in place: the agent has nothing more to do.
    Restart,
}

struct Agent {
    zk: Arc<Client>,
    state: Arc<State>,
    shutdown_timeout: Duration,
    /// The commands an order may name (`--maintenance-command NAME=CMD`).
    commands: BTreeMap<String, String>,
    /// `/pehra/maintenance/broker-{id}`.
    path: String,
    /// Nothing was seen yet (an order `running` now was interrupted by a restart).
    first_look: bool,
}

/// The agent; spawned by [`super::Broker::start`], aborted when the broker stops.
pub(crate) async fn run(
    zk: Arc<Client>,
    state: Arc<State>,
    shutdown_timeout: Duration,
    commands: BTreeMap<String, String>,
) {
    let path = cluster::pehra_maintenance_path(&cluster::broker_node_name(state.id));
    let mut agent = Agent {
        zk,
        state,
        shutdown_timeout,
        commands,
        path,
        first_look: true,
    };
    loop {
        match agent.follow().await {
            Ok(Next::Restart) => return std::future::pending().await,
            Ok(Next::Watch) => {}
            Err(e) => tracing::warn!(error = %e, "maintenance: watching {}", agent.path),
        }
        tokio::time::sleep(RETRY).await;
    }
}

impl Agent {
    /// Watches the order until the watch ends. Returns at once (no pause needed) when
    /// the order znode appeared after being absent.
    async fn follow(&mut self) -> Result<Next, ZkError> {
        loop {
            let mut watch = self.zk.watch_data(&self.path).await?;
            let mut appeared = false;
            while let Some(event) = watch.next().await {
                match event? {
                    WatchEvent::Data(node) => {
                        let first = std::mem::replace(&mut self.first_look, false);
                        match wire::decode::<Maintenance>(&node.data) {
                            Ok(order) => {
                                if self.handle(order, node.stat.version, first).await?
                                    == Next::Restart
                                {
                                    return Ok(Next::Restart);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "maintenance: undecodable order {}", self.path)
                            }
                        }
                    }
                    WatchEvent::Deleted => {
                        self.first_look = false;
                        self.wait_for_order().await?;
                        appeared = true;
                        break;
                    }
                    WatchEvent::Children(_) => {}
                }
            }
            if !appeared {
                return Ok(Next::Watch);
            }
        }
    }

    /// Waits (watching `/pehra/maintenance`'s children) until the order znode exists.
    async fn wait_for_order(&self) -> Result<(), ZkError> {
        let name = cluster::broker_node_name(self.state.id);
        loop {
            cluster::ensure_path(&self.zk, PEHRA_MAINTENANCE).await?;
            let mut watch = self.zk.watch_children(PEHRA_MAINTENANCE).await?;
            while let Some(event) = watch.next().await {
                match event? {
                    WatchEvent::Children(c) if c.children.contains(&name) => return Ok(()),
                    WatchEvent::Children(_) | WatchEvent::Data(_) => {}
                    WatchEvent::Deleted => break,
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Acts on the order as read at `version`.
    async fn handle(
        &mut self,
        order: Maintenance,
        version: u32,
        first_look: bool,
    ) -> Result<Next, ZkError> {
        match order.state {
            MaintenanceState::Requested => self.carry_out(order, version).await,
            MaintenanceState::Running if first_look => {
                self.finish_interrupted(order, version).await?;
                Ok(Next::Watch)
            }
            MaintenanceState::Running | MaintenanceState::Done | MaintenanceState::Failed => {
                Ok(Next::Watch)
            }
        }
    }

    /// An order `running` at the first look: this broker restarted during it.
    async fn finish_interrupted(&self, order: Maintenance, version: u32) -> Result<(), ZkError> {
        let id = self.state.id;
        match order.command.clone() {
            None => {
                tracing::info!(id, order = order.id, "maintenance: restarted in place");
                pehra::hold_awake(&self.state, true);
                let done = Maintenance {
                    state: MaintenanceState::Done,
                    message: Some("restarted".into()),
                    ..order
                };
                let written = self.write(&done, version).await;
                if written.is_ok() {
                    tracing::info!(id, order = done.id, "maintenance: order done (restarted)");
                    self.back_in_sync().await;
                }
                pehra::hold_awake(&self.state, false);
                written.map(|_| ())
            }
            Some(command) => {
                tracing::warn!(id, order = order.id, %command, "maintenance: the broker restarted while the command ran");
                let failed = Maintenance {
                    state: MaintenanceState::Failed,
                    message: Some("the broker restarted while the command ran".into()),
                    ..order
                };
                self.write(&failed, version).await.map(|_| ())
            }
        }
    }

    /// Carries out an order `requested` at `version`.
    async fn carry_out(&mut self, order: Maintenance, version: u32) -> Result<Next, ZkError> {
        let id = self.state.id;
        let command = match order.command.as_deref().map(|name| self.lookup(name)) {
            None => None,
            Some(Ok(command)) => Some(command),
            Some(Err(refusal)) => {
                tracing::warn!(id, order = order.id, %refusal, "maintenance: order refused");
                let failed = Maintenance {
                    state: MaintenanceState::Failed,
                    message: Some(refusal),
                    ..order
                };
                return match self.write(&failed, version).await {
                    Err(e) if e.kind() != Some(ErrorKind::VersionMismatch) => Err(e),
                    _ => Ok(Next::Watch),
                };
            }
        };
        let running = Maintenance {
            state: MaintenanceState::Running,
            message: None,
            ..order.clone()
        };
        let version = match self.write(&running, version).await {
            Ok(v) => v,
            Err(e) if e.kind() == Some(ErrorKind::VersionMismatch) => {
                tracing::info!(
                    id,
                    order = order.id,
                    "maintenance: the order changed before it was taken"
                );
                return Ok(Next::Watch);
            }
            Err(e) => return Err(e),
        };
        tracing::info!(id, order = order.id, command = ?order.command, "maintenance: order taken (running)");
        pehra::hold_awake(&self.state, true);
        if tokio::time::timeout(self.shutdown_timeout, pehra::awake(&self.state))
            .await
            .is_err()
        {
            tracing::warn!(id, "maintenance: the broker did not wake in time; going on");
        } else {
            tracing::info!(id, "maintenance: awake and held awake");
        }
        let Some(command) = command else {
            // Restart in place: follow no partition any more, as a controlled shutdown.
            self.state.leaving.store(true, Ordering::SeqCst);
            self.state.fetchers.lock().clear();
            self.move_leadership_away().await;
            tracing::info!(id, "maintenance: restarting in place");
            self.state.restart.send_replace(true);
            return Ok(Next::Restart);
        };
        self.move_leadership_away().await;
        match self.zk.delete(&cluster::shutdown_path(id), None).await {
            Ok(()) => tracing::info!(
                id,
                "maintenance: leadership moved; the controller may give this broker work again"
            ),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
            Err(e) => {
                tracing::warn!(id, error = %e, "maintenance: removing {}", cluster::shutdown_path(id))
            }
        }
        tracing::info!(id, %command, "maintenance: running the command");
        let (state, message) = run_command(&command).await;
        tracing::info!(id, state = ?state, %message, "maintenance: command finished");
        let finished = Maintenance {
            state,
            message: Some(message),
            ..order
        };
        let written = self.write(&finished, version).await;
        if written.is_ok() {
            tracing::info!(id, order = finished.id, state = ?finished.state, "maintenance: order finished");
            self.back_in_sync().await;
        }
        pehra::hold_awake(&self.state, false);
        tracing::info!(id, "maintenance: released the keep-awake");
        written.map(|_| Next::Watch)
    }

    /// The command configured under `name`, or why the order is refused.
    fn lookup(&self, name: &str) -> Result<String, String> {
        match self.commands.get(name) {
            Some(command) => Ok(command.clone()),
            None if self.commands.is_empty() => Err(format!(
                "broker {} has no maintenance commands configured (--maintenance-command NAME=CMD), so it cannot run {name:?}",
                self.state.id
            )),
            None => Err(format!(
                "broker {} has no maintenance command named {name:?} (it has: {})",
                self.state.id,
                self.commands.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// The controlled-shutdown step, bounded as a whole like [`super::Broker::shutdown`].
    async fn move_leadership_away(&self) {
        let id = self.state.id;
        tracing::info!(id, "maintenance: moving leadership away");
        let limit = self.shutdown_timeout;
        match tokio::time::timeout(
            limit,
            super::move_leadership_away(&self.zk, &self.state, limit),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(id, "maintenance: leadership moved away"),
            Ok(Err(e)) => {
                tracing::warn!(id, error = %e, "maintenance: leadership not moved; going on")
            }
            Err(_) => tracing::warn!(
                id,
                ?limit,
                "maintenance: the zookeeper did not answer in time; going on"
            ),
        }
    }

    /// Writes the order if it is still at `version`; returns its new version.
    async fn write(&self, order: &Maintenance, version: u32) -> Result<u32, ZkError> {
        let data = wire::encode(order).expect("wire types encode");
        let stat = self.zk.set_data(&self.path, &data, Some(version)).await?;
        Ok(stat.version)
    }

    /// Waits (bounded) until this broker is in the in-sync set of every partition it
    /// holds a replica of, as the zookeeper says.
    async fn back_in_sync(&self) {
        let id = self.state.id;
        let deadline = Instant::now() + BACK_IN_SYNC_TIMEOUT;
        loop {
            match cluster::lagging_partitions(&self.zk, id).await {
                Ok(0) => {
                    tracing::info!(id, "maintenance: back in every in-sync set");
                    return;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(id, error = %e, "maintenance: reading the partitions"),
            }
            if Instant::now() >= deadline {
                tracing::warn!(id, "maintenance: not back in every in-sync set in time");
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Runs `sh -c command` (killed after [`COMMAND_TIMEOUT`]); returns the order's outcome
/// and message ("exit status N", with the tail of stderr if it failed).
async fn run_command(command: &str) -> (MaintenanceState, String) {
    use std::os::unix::process::ExitStatusExt;
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return (MaintenanceState::Failed, format!("cannot run sh: {e}")),
    };
    let output = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Err(_) => {
            return (
                MaintenanceState::Failed,
                format!("still running after {COMMAND_TIMEOUT:?}: killed"),
            )
        }
        Ok(Err(e)) => return (MaintenanceState::Failed, format!("waiting for sh: {e}")),
        Ok(Ok(output)) => output,
    };
    let status = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => output.status.to_string(),
    };
    if output.status.success() {
        return (MaintenanceState::Done, status);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let tail = match stderr.char_indices().rev().nth(STDERR_TAIL) {
        Some((at, _)) => &stderr[at..],
        None => stderr,
    };
    let message = if tail.is_empty() {
        status
    } else {
        format!("{status}: {tail}")
    };
    (MaintenanceState::Failed, message)
}

/// After a restart in place whose re-exec failed ([`exec_self`] returned): sets the
/// broker's order `failed` with the error, so that the orchestrator learns it at once
/// instead of waiting out its timeout for a broker that will not come back (the order
/// would stay `running`). Bounded: a broker whose zookeeper is gone still exits.
pub(crate) async fn report_restart_failure(
    zookeeper: SocketAddr,
    credentials: Option<Arc<pehra_shared::security::credentials::Credentials>>,
    id: u32,
    error: &std::io::Error,
) {
    let path = cluster::pehra_maintenance_path(&cluster::broker_node_name(id));
    let report = async {
        // The broker's session is closed (its requests would be refused): a new client.
        let zk = Client::without_session_secured(
            zookeeper,
            ClientOptions::default().coap,
            credentials.as_deref(),
        )
        .await?;
        let (data, stat) = zk.get_data(&path).await?;
        let Ok(order) = wire::decode::<Maintenance>(&data) else {
            return Ok(None);
        };
        if order.state != MaintenanceState::Running || order.command.is_some() {
            return Ok(None);
        }
        let failed = Maintenance {
            state: MaintenanceState::Failed,
            message: Some(format!("cannot re-execute the broker: {error}")),
            ..order
        };
        let data = wire::encode(&failed).expect("wire types encode");
        zk.set_data(&path, &data, Some(stat.version)).await?;
        Ok::<_, ZkError>(Some(failed.id))
    };
    match tokio::time::timeout(Duration::from_secs(5), report).await {
        Ok(Ok(Some(order))) => tracing::warn!(
            id,
            order,
            "maintenance: order failed (the broker could not re-execute)"
        ),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => {
            tracing::warn!(id, error = %e, "maintenance: cannot report the failed restart")
        }
        Err(_) => tracing::warn!(
            id,
            "maintenance: cannot report the failed restart: no answer"
        ),
    }
}

/// Replaces this process by a fresh run of its own program with the same arguments
/// (the PID stays). Returns only if that failed. Call it after every asynchronous
/// cleanup finished: nothing of this process survives it (sockets and files are opened
/// close-on-exec).
pub(crate) fn exec_self() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(program());
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    command.args(args);
    command.exec()
}

/// The program to re-execute: this one's path, or the new file at that path if it was
/// replaced (an upgrade), or `/proc/self/exe` as a last resort.
fn program() -> PathBuf {
    match std::env::current_exe() {
        Ok(path) => match path.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
            Some(original) if std::path::Path::new(original).is_file() => original.into(),
            Some(_) => "/proc/self/exe".into(),
            None => path,
        },
        Err(_) => "/proc/self/exe".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_reports_its_exit_status_and_stderr_tail() {
        assert_eq!(
            run_command("true").await,
            (MaintenanceState::Done, "exit status 0".into())
        );
        let (state, message) = run_command("echo oops >&2; exit 3").await;
        assert_eq!(state, MaintenanceState::Failed);
        assert_eq!(message, "exit status 3: oops");
        let (state, message) = run_command("kill -9 $$").await;
        assert_eq!(state, MaintenanceState::Failed);
        assert_eq!(message, "killed by signal 9");
    }
}
