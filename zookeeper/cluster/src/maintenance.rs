//! Rolling maintenance (PEHRA's maintenance function): every broker in turn, the
//! Pehredar last, moves its leadership away and restarts or runs a command, while the
//! others serve.
//!
//! For each broker, in order of id with the Pehredar moved to the end:
//!
//! 1. If it is the Pehredar in office now, ask the coordinator for a re-election that
//!    excludes it ([`PehraRequest::Reelect`]) and wait until another node holds office
//!    (skipped, with an event, when no other candidate is alive).
//! 2. Write its order `/pehra/maintenance/{node}` ([`Maintenance`], state `requested`).
//!    The broker wakes, moves its leadership away as in a controlled shutdown, runs the
//!    command or restarts itself, and sets the order `done` (or `failed`).
//! 3. Wait until it is registered again and back in the in-sync set of every partition
//!    it holds a replica of, so the next broker's turn never leaves a partition short.
//!
//! A failed command or a step that does not finish within the timeout stops the run:
//! the brokers not yet visited are untouched.

use super::{
    broker_node_name, live_brokers, partition_path, partitions_path, pehra_maintenance_path,
    unix_ms, BROKERS, PEHRA_MAINTENANCE, PEHRA_REQUESTS, PEHRA_STATE, TOPICS,
};
use pehra_shared::wire::{
    self, ErrorKind, Maintenance, MaintenanceState, PartitionMetadata, PehraRequest, PehraState,
};
use pehra_zookeeper::client::{Client, CreateMode, WatchEvent, ZkError};
use std::fmt;
use std::time::Duration;
use thiserror::Error;
use tokio::time::Instant;

/// How [`maintenance`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceOptions {
    /// The name of a maintenance command each broker has configured
    /// (`--maintenance-command NAME=CMD`) and runs instead of restarting; `None` restarts
    /// each broker.
    pub command: Option<String>,
    /// How long one step (a re-election, one broker's maintenance, its return to the
    /// in-sync sets) may take.
    pub timeout: Duration,
}

/// Progress of a [`maintenance`] run (its `Display` is a progress line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenanceEvent {
    /// The order in which the brokers will be visited.
    Plan {
        /// Node names, the Pehredar last.
        order: Vec<String>,
    },
    /// A re-election without `node` was asked for.
    Reelecting {
        /// The Pehredar about to go under maintenance.
        node: String,
    },
    /// `node` took office as Pehredar.
    NewPehredar {
        /// The new Pehredar.
        node: String,
    },
    /// No other candidate is alive: the Pehredar goes under maintenance in office.
    NoSuccessor {
        /// The Pehredar.
        node: String,
    },
    /// The order was written.
    Ordered {
        /// The broker.
        node: String,
    },
    /// The broker finished its maintenance.
    Finished {
        /// The broker.
        node: String,
        /// Its report (exit status).
        message: Option<String>,
    },
    /// The broker is back in every in-sync set.
    InSync {
        /// The broker.
        node: String,
    },
}

impl fmt::Display for MaintenanceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaintenanceEvent::Plan { order } => write!(f, "order: {}", order.join(", ")),
            MaintenanceEvent::Reelecting { node } => {
                write!(f, "{node} is the Pehredar: electing another first")
            }
            MaintenanceEvent::NewPehredar { node } => write!(f, "{node} took office as Pehredar"),
            MaintenanceEvent::NoSuccessor { node } => write!(
                f,
                "{node} is the only candidate: it goes under maintenance in office"
            ),
            MaintenanceEvent::Ordered { node } => write!(f, "{node}: maintenance ordered"),
            MaintenanceEvent::Finished { node, message } => match message {
                Some(m) => write!(f, "{node}: done ({m})"),
                None => write!(f, "{node}: done"),
            },
            MaintenanceEvent::InSync { node } => write!(f, "{node}: back in every in-sync set"),
        }
    }
}

/// Why a maintenance run stopped.
#[derive(Debug, Error)]
pub enum MaintenanceError {
    /// The zookeeper refused or did not answer.
    #[error(transparent)]
    Zk(#[from] ZkError),
    /// There is no live broker.
    #[error("no live broker to maintain")]
    NoBrokers,
    /// A step did not finish in time.
    #[error("{node}: {step} did not finish within {timeout:?}")]
    Timeout {
        /// The broker.
        node: String,
        /// What was awaited.
        step: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// The broker's command failed.
    #[error("{node}: maintenance failed: {message}")]
    Failed {
        /// The broker.
        node: String,
        /// Its report.
        message: String,
    },
}

/// Runs rolling maintenance over every live broker; see the module docs.
pub async fn maintenance(
    client: &Client,
    options: MaintenanceOptions,
    mut on_event: impl FnMut(MaintenanceEvent),
) -> Result<(), MaintenanceError> {
    let brokers = live_brokers(client).await?;
    if brokers.is_empty() {
        return Err(MaintenanceError::NoBrokers);
    }
    let pehredar = read_state(client)
        .await?
        .and_then(|s| s.term.map(|t| t.pehredar));
    let mut order: Vec<u32> = brokers.keys().copied().collect();
    if let Some(at) = order
        .iter()
        .position(|id| Some(broker_node_name(*id)) == pehredar)
    {
        let id = order.remove(at);
        order.push(id);
    }
    on_event(MaintenanceEvent::Plan {
        order: order.iter().map(|id| broker_node_name(*id)).collect(),
    });
    super::ensure_path(client, PEHRA_MAINTENANCE).await?;
    super::ensure_path(client, PEHRA_REQUESTS).await?;
    let run_id = unix_ms();
    for id in order {
        let node = broker_node_name(id);
        hand_over_office(client, &node, options.timeout, &mut on_event).await?;
        let order = Maintenance {
            id: run_id,
            command: options.command.clone(),
            state: MaintenanceState::Requested,
            message: None,
        };
        write_order(client, &node, &order).await?;
        on_event(MaintenanceEvent::Ordered { node: node.clone() });
        let done = wait_finished(client, &node, run_id, options.timeout).await?;
        if done.state == MaintenanceState::Failed {
            return Err(MaintenanceError::Failed {
                node,
                message: done.message.unwrap_or_else(|| "no reason given".into()),
            });
        }
        on_event(MaintenanceEvent::Finished {
            node: node.clone(),
            message: done.message,
        });
        wait_in_sync(client, id, &node, options.timeout).await?;
        on_event(MaintenanceEvent::InSync { node });
    }
    Ok(())
}

/// If `node` is the Pehredar in office, has another elected and waits until it holds
/// office.
async fn hand_over_office(
    client: &Client,
    node: &str,
    timeout: Duration,
    on_event: &mut impl FnMut(MaintenanceEvent),
) -> Result<(), MaintenanceError> {
    let in_office = |s: &Option<PehraState>| {
        s.as_ref()
            .and_then(|s| s.term.as_ref())
            .is_some_and(|t| t.pehredar == node)
    };
    if !in_office(&read_state(client).await?) {
        return Ok(());
    }
    let others = candidates_alive(client).await?;
    if others.iter().all(|n| n == node) {
        on_event(MaintenanceEvent::NoSuccessor { node: node.into() });
        return Ok(());
    }
    on_event(MaintenanceEvent::Reelecting { node: node.into() });
    let request = PehraRequest::Reelect {
        exclude: vec![node.to_string()],
    };
    client
        .create(
            &format!("{PEHRA_REQUESTS}/r-"),
            &wire::encode(&request).expect("wire types encode"),
            CreateMode::PersistentSequential,
        )
        .await?;
    let deadline = Instant::now() + timeout;
    let mut watch = client.watch_data(PEHRA_STATE).await?;
    loop {
        let event = tokio::time::timeout_at(deadline, watch.next())
            .await
            .map_err(|_| MaintenanceError::Timeout {
                node: node.into(),
                step: "electing another Pehredar",
                timeout,
            })?;
        match event {
            Some(Ok(WatchEvent::Data(data))) => {
                if let Ok(state) = wire::decode::<PehraState>(&data.data) {
                    if let Some(term) = state.term.filter(|t| t.pehredar != node) {
                        on_event(MaintenanceEvent::NewPehredar {
                            node: term.pehredar,
                        });
                        return Ok(());
                    }
                }
            }
            Some(Ok(_)) | None => watch = client.watch_data(PEHRA_STATE).await?,
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// The names of the candidates whose PEHRA status exists.
async fn candidates_alive(client: &Client) -> Result<Vec<String>, ZkError> {
    let statuses = super::pehra_statuses(client).await?;
    Ok(statuses
        .into_iter()
        .filter(|s| s.candidate)
        .map(|s| s.node)
        .collect())
}

async fn read_state(client: &Client) -> Result<Option<PehraState>, ZkError> {
    super::pehra_state(client).await
}

async fn write_order(client: &Client, node: &str, order: &Maintenance) -> Result<(), ZkError> {
    let path = pehra_maintenance_path(node);
    let data = wire::encode(order).expect("wire types encode");
    match client.create(&path, &data, CreateMode::Persistent).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == Some(ErrorKind::NodeExists) => {
            client.set_data(&path, &data, None).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Waits until the order of run `id` is done or failed.
async fn wait_finished(
    client: &Client,
    node: &str,
    id: u64,
    timeout: Duration,
) -> Result<Maintenance, MaintenanceError> {
    let path = pehra_maintenance_path(node);
    let deadline = Instant::now() + timeout;
    let timed_out = || MaintenanceError::Timeout {
        node: node.into(),
        step: "its maintenance",
        timeout,
    };
    let mut watch = client.watch_data(&path).await?;
    loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Err(_) => return Err(timed_out()),
            Ok(Some(Ok(WatchEvent::Data(data)))) => {
                if let Ok(order) = wire::decode::<Maintenance>(&data.data) {
                    if order.id == id
                        && matches!(
                            order.state,
                            MaintenanceState::Done | MaintenanceState::Failed
                        )
                    {
                        return Ok(order);
                    }
                }
            }
            // The watch ended (the zookeeper dropped the observation, or the node
            // restarted meanwhile): observe again.
            Ok(Some(Ok(_))) | Ok(None) | Ok(Some(Err(ZkError::Unreachable { .. }))) => {
                if Instant::now() >= deadline {
                    return Err(timed_out());
                }
                watch = client.watch_data(&path).await?;
            }
            Ok(Some(Err(e))) => return Err(e.into()),
        }
    }
}

/// Waits until broker `id` is registered and in the ISR of every partition it holds a
/// replica of. Polls (a few reads every 200 ms): this waits on many znodes at once.
async fn wait_in_sync(
    client: &Client,
    id: u32,
    node: &str,
    timeout: Duration,
) -> Result<(), MaintenanceError> {
    let deadline = Instant::now() + timeout;
    loop {
        if client.exists(&format!("{BROKERS}/{id}")).await?.is_some()
            && lagging_partitions(client, id).await? == 0
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MaintenanceError::Timeout {
                node: node.into(),
                step: "its return to the in-sync sets",
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many partitions name broker `id` a replica but not an in-sync one.
pub async fn lagging_partitions(client: &Client, id: u32) -> Result<usize, ZkError> {
    let topics = match client.get_children(TOPICS).await {
        Ok((t, _)) => t,
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut lagging = 0;
    for topic in topics {
        let partitions = match client.get_children(&partitions_path(&topic)).await {
            Ok((p, _)) => p,
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => continue,
            Err(e) => return Err(e),
        };
        for p in partitions.iter().filter_map(|p| p.parse::<u32>().ok()) {
            match client.get_data(&partition_path(&topic, p)).await {
                Ok((data, _)) => {
                    if let Ok(meta) = wire::decode::<PartitionMetadata>(&data) {
                        if meta.replicas.contains(&id) && !meta.isr.contains(&id) {
                            lagging += 1;
                        }
                    }
                }
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(lagging)
}
