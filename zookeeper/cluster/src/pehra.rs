//! The PEHRA coordinator driver: runs the sans-IO
//! [`Coordinator`](pehra_shared::pehra::coordinator::Coordinator) on the tree.
//!
//! It watches the children of `/pehra/nodes` and the data of every status under it, the
//! children of `/pehra/requests` and `/pehra/admin`; on any change (and at the
//! coordinator's deadline) it reads them all, feeds them in, polls, writes `/pehra/state`
//! (conditionally on the version it last wrote: it is the only writer) and the term
//! history, and deletes the requests it applied. The state lives in the tree, so a
//! restarted coordinator resumes where the last one stopped.

use super::{
    ensure_path, pehra_term_path, unix_ms, PEHRA_ADMIN, PEHRA_MAINTENANCE, PEHRA_NODES,
    PEHRA_REQUESTS, PEHRA_STATE, PEHRA_TERMS,
};
use pehra_shared::driver::clock;
use pehra_shared::pehra::coordinator::{Coordinator, CoordinatorConfig, Output};
use pehra_shared::wire::{self, AdminSwitch, ErrorKind, NodeStatus, PehraRequest, PehraState};
use pehra_zookeeper::client::{Client, CreateMode, SessionState, WatchEvent, ZkError};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How many term records are kept under `/pehra/terms`.
pub const TERMS_KEPT: usize = 1000;
/// After a failed pass (zookeeper busy or unreachable), the next one comes this soon.
const RETRY: Duration = Duration::from_secs(1);

/// How the PEHRA coordinator behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PehraCoordinatorConfig {
    /// Term length, handover and takeover timeout.
    pub timing: CoordinatorConfig,
}

/// The PEHRA coordinator, run as a client of the zookeeper's own tree.
pub struct PehraCoordinator;

impl PehraCoordinator {
    /// Runs the coordinator against the zookeeper at `addr` until its session is lost
    /// (an error). Run it again to resume: the state lives in `/pehra/state`.
    pub async fn run_with(addr: SocketAddr, config: PehraCoordinatorConfig) -> Result<(), ZkError> {
        Self::run_secured(addr, None, config).await
    }

    /// [`PehraCoordinator::run_with`], its client protected with OSCORE by `credentials` (the
    /// zookeeper's own, for a zookeeper with security on).
    pub async fn run_secured(
        addr: SocketAddr,
        credentials: Option<std::sync::Arc<pehra_shared::security::credentials::Credentials>>,
        config: PehraCoordinatorConfig,
    ) -> Result<(), ZkError> {
        super::run_as_service(addr, credentials, async |client| {
            Self::run_on(client, config).await
        })
        .await
    }

    /// Runs the coordinator on an existing client (see [`PehraCoordinator::run_with`]).
    pub async fn run_on(client: &Client, config: PehraCoordinatorConfig) -> Result<(), ZkError> {
        for path in [PEHRA_NODES, PEHRA_REQUESTS, PEHRA_TERMS, PEHRA_MAINTENANCE] {
            ensure_path(client, path).await?;
        }
        let (state, version) = read_or_create_state(client).await?;
        let mut coordinator = Coordinator::new(config.timing, state.clone());
        if let Some((switch, _)) = read_admin(client).await? {
            if switch.enabled == state.enabled {
                coordinator.admin_applied(switch.issued_ms);
            }
        }
        let mut driver = Driver {
            coordinator,
            version,
            rng: StdRng::from_seed(pehra_shared::driver::socket::seed32().expect("OS randomness")),
            watches: Watches::new(),
        };
        tracing::info!(
            term_ms = config.timing.term_ms,
            handover_ms = config.timing.handover_ms,
            takeover_timeout_ms = config.timing.takeover_timeout_ms,
            term = ?state.term,
            "pehra coordinator started"
        );
        let mut session = client.session_state();
        loop {
            let wait = match driver.pass(client).await {
                Ok(()) => driver
                    .coordinator
                    .poll_timeout()
                    .map(|d| Duration::from_millis(d.as_millis().saturating_sub(unix_ms()))),
                Err(ZkError::SessionExpired) => return Err(ZkError::SessionExpired),
                Err(e) => {
                    tracing::warn!(error = %e, "pehra coordinator: pass failed; retrying");
                    Some(RETRY)
                }
            };
            tokio::select! {
                changed = driver.watches.changed.recv() => {
                    if changed.is_none() {
                        return Err(ZkError::SessionExpired);
                    }
                    while driver.watches.changed.try_recv().is_ok() {}
                }
                _ = sleep(wait) => {}
                _ = session.wait_for(|s| matches!(s, SessionState::Expired | SessionState::Closed)) => {
                    return Err(ZkError::SessionExpired);
                }
            }
        }
    }
}

/// The running coordinator and what it knows of the tree.
struct Driver {
    coordinator: Coordinator,
    /// The version of `/pehra/state` as last read or written.
    version: u32,
    /// A CSPRNG (ChaCha12 seeded by the OS): nobody can predict the next Pehredar.
    rng: StdRng,
    watches: Watches,
}

impl Driver {
    /// Reads everything, feeds it to the coordinator, polls and writes.
    async fn pass(&mut self, client: &Client) -> Result<(), ZkError> {
        self.watches.refresh_fixed(client).await?;
        let statuses = self.read_nodes(client).await?;
        self.coordinator.handle_nodes(clock::now(), &statuses);
        let requests = read_requests(client).await?;
        for (_, request) in &requests {
            tracing::info!(?request, "pehra coordinator: request");
            self.coordinator
                .handle_request(clock::now(), request.clone());
        }
        if let Some((switch, _)) = read_admin(client).await? {
            self.coordinator.handle_admin(clock::now(), switch);
        }
        let before = self.coordinator.state().clone();
        let outputs = self.coordinator.poll_outputs(clock::now(), &mut self.rng);
        for output in outputs {
            match output {
                Output::WriteState(state) => {
                    log_transition(&before, &state);
                    self.write_state(client, &state).await?;
                }
                Output::RecordTerm(record) => {
                    let path = pehra_term_path(record.term.number);
                    let data = wire::encode(&record).expect("encodes");
                    match client.create(&path, &data, CreateMode::Persistent).await {
                        Ok(_) => {}
                        Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {}
                        Err(e) => return Err(e),
                    }
                    prune_terms(client).await?;
                }
            }
        }
        // Applied (the state that reflects them is written): the requests go.
        for (path, _) in requests {
            match client.delete(&path, None).await {
                Ok(()) => {}
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn write_state(&mut self, client: &Client, state: &PehraState) -> Result<(), ZkError> {
        let data = wire::encode(state).expect("encodes");
        match client
            .set_data(PEHRA_STATE, &data, Some(self.version))
            .await
        {
            Ok(stat) => {
                self.version = stat.version;
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    Some(ErrorKind::VersionMismatch | ErrorKind::NotFound)
                ) =>
            {
                // Somebody else wrote it (it should not happen): take what is there.
                tracing::warn!(error = %e, "pehra coordinator: /pehra/state changed under it; re-reading");
                let (stored, version) = read_or_create_state(client).await?;
                self.version = version;
                self.coordinator = Coordinator::new(*self.coordinator.config(), stored);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The live statuses; keeps a data watch on each.
    async fn read_nodes(&mut self, client: &Client) -> Result<Vec<NodeStatus>, ZkError> {
        let names = match client.get_children(PEHRA_NODES).await {
            Ok((names, _)) => names,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {
                ensure_path(client, PEHRA_NODES).await?;
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        self.watches.nodes.retain(|name, task| {
            let keep = names.contains(name) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        let mut statuses = Vec::new();
        for name in names {
            let path = format!("{PEHRA_NODES}/{name}");
            if !self.watches.nodes.contains_key(&name) {
                match client.watch_data(&path).await {
                    Ok(watch) => {
                        let task = forward(watch, self.watches.tx.clone());
                        self.watches.nodes.insert(name.clone(), task);
                    }
                    Err(e) if e.kind() == Some(ErrorKind::NotFound) => continue,
                    Err(e) => return Err(e),
                }
            }
            match client.get_data(&path).await {
                Ok((data, _)) => match wire::decode::<NodeStatus>(&data) {
                    Ok(status) if status.node == name => statuses.push(status),
                    Ok(status) => {
                        tracing::warn!(%path, named = %status.node, "pehra coordinator: status names another node; ignored")
                    }
                    Err(e) => {
                        tracing::warn!(%path, error = %e, "pehra coordinator: status does not decode; ignored")
                    }
                },
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(statuses)
    }
}

/// The change notifications: one task per watch, each sending `()` on every event.
struct Watches {
    tx: mpsc::UnboundedSender<()>,
    changed: mpsc::UnboundedReceiver<()>,
    /// Children of `/pehra/nodes`, children of `/pehra/requests`, children of `/pehra`
    /// (to see `/pehra/admin` appear) and `/pehra/admin`'s data.
    fixed: BTreeMap<&'static str, JoinHandle<()>>,
    /// Each status's data.
    nodes: BTreeMap<String, JoinHandle<()>>,
}

impl Watches {
    fn new() -> Watches {
        let (tx, changed) = mpsc::unbounded_channel();
        Watches {
            tx,
            changed,
            fixed: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }

    /// (Re)establishes the watches that ended (a deleted znode ends its watch).
    async fn refresh_fixed(&mut self, client: &Client) -> Result<(), ZkError> {
        for (key, path, children) in [
            ("nodes", PEHRA_NODES, true),
            ("requests", PEHRA_REQUESTS, true),
            ("pehra", "/pehra", true),
            ("admin", PEHRA_ADMIN, false),
        ] {
            if self.fixed.get(key).is_some_and(|t| !t.is_finished()) {
                continue;
            }
            if children {
                ensure_path(client, path).await?;
            } else if client.exists(path).await?.is_none() {
                // Not there yet: the watch on `/pehra`'s children sees it appear.
                continue;
            }
            let watch = if children {
                client.watch_children(path).await?
            } else {
                client.watch_data(path).await?
            };
            self.fixed.insert(key, forward(watch, self.tx.clone()));
        }
        Ok(())
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in self.fixed.values().chain(self.nodes.values()) {
            task.abort();
        }
    }
}

/// Sends `()` on every event of `watch` until it ends.
fn forward(
    mut watch: pehra_zookeeper::client::Watch,
    tx: mpsc::UnboundedSender<()>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = watch.next().await {
            let end = !matches!(event, Ok(WatchEvent::Data(_) | WatchEvent::Children(_)));
            if tx.send(()).is_err() || end {
                return;
            }
        }
    })
}

/// `/pehra/state` and its version; created with the default state if missing.
async fn read_or_create_state(client: &Client) -> Result<(PehraState, u32), ZkError> {
    loop {
        match client.get_data(PEHRA_STATE).await {
            Ok((data, stat)) => {
                let state = wire::decode::<PehraState>(&data).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "pehra coordinator: /pehra/state does not decode; starting afresh");
                    PehraState::default()
                });
                return Ok((state, stat.version));
            }
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {
                let state = PehraState::default();
                let data = wire::encode(&state).expect("encodes");
                match client
                    .create(PEHRA_STATE, &data, CreateMode::Persistent)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// `/pehra/admin`, if present and readable.
async fn read_admin(client: &Client) -> Result<Option<(AdminSwitch, u32)>, ZkError> {
    match client.get_data(PEHRA_ADMIN).await {
        Ok((data, stat)) => match wire::decode::<AdminSwitch>(&data) {
            Ok(switch) => Ok(Some((switch, stat.version))),
            Err(e) => {
                tracing::warn!(error = %e, "pehra coordinator: /pehra/admin does not decode; ignored");
                Ok(None)
            }
        },
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The pending requests in sequence order, with their paths. Undecodable ones are
/// deleted with a warning.
async fn read_requests(client: &Client) -> Result<Vec<(String, PehraRequest)>, ZkError> {
    let (mut names, _) = match client.get_children(PEHRA_REQUESTS).await {
        Ok(c) => c,
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // `r-{seq}` with a fixed-width sequence number: name order is sequence order.
    names.sort();
    let mut requests = Vec::new();
    for name in names {
        let path = format!("{PEHRA_REQUESTS}/{name}");
        match client.get_data(&path).await {
            Ok((data, _)) => match wire::decode::<PehraRequest>(&data) {
                Ok(request) => requests.push((path, request)),
                Err(e) => {
                    tracing::warn!(%path, error = %e, "pehra coordinator: request does not decode; deleted");
                    let _ = client.delete(&path, None).await;
                }
            },
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(requests)
}

/// Deletes the oldest term records beyond [`TERMS_KEPT`].
async fn prune_terms(client: &Client) -> Result<(), ZkError> {
    let (mut names, _) = client.get_children(PEHRA_TERMS).await?;
    if names.len() <= TERMS_KEPT {
        return Ok(());
    }
    names.sort();
    let excess = names.len() - TERMS_KEPT;
    for name in &names[..excess] {
        match client.delete(&format!("{PEHRA_TERMS}/{name}"), None).await {
            Ok(()) => {}
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn log_transition(old: &PehraState, new: &PehraState) {
    if new.next != old.next {
        if let Some(next) = &new.next {
            tracing::info!(
                pehredar = %next.pehredar, number = next.number,
                "pehra: Pehredar elected; waiting for it to take office"
            );
        }
    }
    if new.term != old.term {
        if let Some(term) = &new.term {
            tracing::info!(
                pehredar = %term.pehredar, number = term.number, ends_ms = term.ends_ms, temporary = new.temporary,
                "pehra: Pehredar took office"
            );
        }
    }
    if new.wake_generation != old.wake_generation {
        tracing::info!(
            generation = new.wake_generation, reason = ?new.wake_reason,
            "pehra: wakeUpAll"
        );
    }
    if new.enabled != old.enabled {
        tracing::info!(enabled = new.enabled, "pehra: mode switched by the admin");
    }
    if new.traffic_awake != old.traffic_awake {
        tracing::info!(
            traffic_awake = new.traffic_awake,
            "pehra: traffic mode changed"
        );
    }
}

async fn sleep(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
