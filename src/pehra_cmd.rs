//! `pehra pehra`: the energy-saving protocol's state, and the admin's switch.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use pehra_cluster::{PEHRA_ADMIN, PEHRA_STATE};
use pehra_shared::api::response_error;
use pehra_shared::coap::{Config, Request, CONTENT_FORMAT_CBOR};
use pehra_shared::driver::{Endpoint, Router};
use pehra_shared::health::NhiConfig;
use pehra_shared::security::credentials::Credentials;
use pehra_shared::wire::{self, AdminSwitch, ErrorKind, NodeRole, NodeStatus, PehraState};
use pehra_zookeeper::{Client, ClientOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `pehra pehra`.
#[derive(Args)]
pub struct PehraArgs {
    /// The zookeeper, or every member of an ensemble separated by commas.
    #[arg(
        long,
        default_value = "127.0.0.1:2181",
        global = true,
        value_delimiter = ','
    )]
    zookeeper: Vec<SocketAddr>,
    #[command(flatten)]
    security: crate::security_args::ClientSecurityArgs,
    #[command(subcommand)]
    command: PehraCommand,
}

#[derive(Subcommand)]
enum PehraCommand {
    /// Mode, Pehredar, term end, and each node's state and next alarm.
    Status,
    /// Switch PEHRA mode on for the cluster (everyone is woken first, then idle nodes
    /// sleep again). Needs the admin key.
    #[command(after_help = ADMIN_HELP)]
    Enable(AdminArgs),
    /// Switch PEHRA mode off: everyone is woken and stays awake until enabled. Needs the
    /// admin key.
    #[command(after_help = ADMIN_HELP)]
    Disable(AdminArgs),
}

const ADMIN_HELP: &str = "The key is the file given to `pehra zookeeper --admin-key`; make one \
with `head -c 32 /dev/urandom | base64 > admin.key` and keep it private. The request carries \
an HMAC-SHA256 over the switch, the time and a random nonce: the zookeeper refuses it (4.01) \
without the right key, and refuses a replayed request.";

#[derive(Args)]
struct AdminArgs {
    /// The admin key file.
    #[arg(long)]
    admin_key: PathBuf,
}

pub async fn run(args: PehraArgs) -> Result<ExitCode> {
    let credentials = args.security.load()?;
    match args.command {
        PehraCommand::Status => status(&args.zookeeper, credentials).await,
        PehraCommand::Enable(admin) => {
            switch(&args.zookeeper, credentials, &admin.admin_key, true).await
        }
        PehraCommand::Disable(admin) => {
            switch(&args.zookeeper, credentials, &admin.admin_key, false).await
        }
    }
}

async fn switch(
    zookeepers: &[SocketAddr],
    credentials: Option<Arc<Credentials>>,
    key_file: &std::path::Path,
    enabled: bool,
) -> Result<ExitCode> {
    let key = pehra_cluster::admin::read_key_file(key_file)
        .with_context(|| format!("reading the admin key {}", key_file.display()))?;
    let change = pehra_cluster::admin::sign_mode_change(&key, enabled, unix_ms());
    // Only the ensemble's leader takes a mode change; the others answer NotLeader: ask
    // each member in turn until one takes it.
    let mut refusal = None;
    for &zookeeper in zookeepers {
        let local = pehra_shared::driver::any_local_for(zookeeper);
        let endpoint = Endpoint::bind(local, Config::default(), Router::new())
            .await
            .context("opening a UDP socket")?;
        if let Some(credentials) = &credentials {
            pehra_shared::driver::security::secure_client(
                &endpoint.handle(),
                credentials,
                zookeeper,
                &pehra_shared::security::zookeeper_kid(),
            )
            .await?;
        }
        let request = Request::post("pehra/mode")
            .with_payload(wire::encode(&change).expect("wire types encode"))
            .with_content_format(CONTENT_FORMAT_CBOR);
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            endpoint.handle().request(zookeeper, request),
        )
        .await
        .map_err(|_| anyhow::anyhow!("the zookeeper at {zookeeper} did not answer"))?;
        let response = match response {
            Ok(response) => response,
            // Nothing listens there: the next member may.
            Err(e) if zookeepers.len() > 1 => {
                refusal = Some(format!("{zookeeper}: {e}"));
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("asking the zookeeper at {zookeeper}"))
            }
        };
        if response.code().is_success() {
            refusal = None;
            break;
        }
        let error = response_error(&response);
        match error.error {
            ErrorKind::Unauthorized => bail!("refused (4.01): {}", error.message),
            ErrorKind::NotLeader => refusal = Some(error.message),
            _ => bail!("refused: {}", error.message),
        }
    }
    if let Some(refusal) = refusal {
        bail!("no member of the ensemble took the change: {refusal}");
    }
    println!(
        "PEHRA {}: everyone is being woken{}",
        if enabled { "enabled" } else { "disabled" },
        if enabled {
            "; idle nodes sleep again after their idle period"
        } else {
            " and stays awake"
        }
    );
    Ok(ExitCode::SUCCESS)
}

async fn status(
    zookeeper: &[SocketAddr],
    credentials: Option<Arc<Credentials>>,
) -> Result<ExitCode> {
    let client = Client::without_session_any(
        zookeeper,
        ClientOptions::default().coap,
        credentials.as_deref(),
    )
    .await
    .context("opening a zookeeper client")?;
    let state = pehra_cluster::pehra_state(&client)
        .await
        .with_context(|| format!("reading {PEHRA_STATE} from the zookeeper at {zookeeper:?}"))?;
    let admin = read::<AdminSwitch>(&client, PEHRA_ADMIN).await?;
    let nodes = read_nodes(&client).await?;
    let now = unix_ms();
    print!("{}", render(&state, admin.as_ref(), &nodes, now));
    Ok(ExitCode::SUCCESS)
}

/// The status report, as `pehra pehra status` prints it.
fn render(
    state: &Option<PehraState>,
    admin: Option<&AdminSwitch>,
    nodes: &[NodeStatus],
    now: u64,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let Some(state) = state else {
        out.push_str("PEHRA: no state yet (is the zookeeper's coordinator running?)\n");
        return out;
    };
    let mode = match (state.enabled, state.traffic_awake) {
        (false, _) => "disabled by the admin: every node stays awake",
        (true, true) => "enabled, switched out by traffic: every node awake until idle",
        (true, false) => "enabled: idle nodes sleep",
    };
    let _ = writeln!(out, "mode:        {mode}");
    if let Some(admin) = admin {
        let _ = writeln!(
            out,
            "admin:       last switched {} {}",
            if admin.enabled { "on" } else { "off" },
            ago(admin.issued_ms, now)
        );
    }
    match &state.term {
        Some(term) => {
            let _ = writeln!(
                out,
                "pehredar:    {} (term {}{}), term ends {}",
                term.pehredar,
                term.number,
                if state.temporary {
                    ", temporary: allDown"
                } else {
                    ""
                },
                relative(term.ends_ms, now)
            );
        }
        None => out.push_str("pehredar:    none\n"),
    }
    if let Some(lease) = state
        .term
        .as_ref()
        .and_then(|t| nodes.iter().find(|n| n.node == t.pehredar))
        .and_then(|n| n.lease_ms)
    {
        let _ = writeln!(
            out,
            "lease:       {:.1} s (the Pehredar's adaptive lease: sleepers check in within it)",
            f64::from(lease) / 1000.0
        );
    }
    if let Some(next) = &state.next {
        let _ = writeln!(
            out,
            "election:    {} elected for term {}, not yet in office",
            next.pehredar, next.number
        );
    }
    let _ = writeln!(
        out,
        "wakeups:     generation {}{}",
        state.wake_generation,
        state
            .wake_reason
            .map(|r| format!(" (last: {})", wake_reason(r)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "\n{:<14} {:<10} {:<9} {:<5} {:<16} {:<14} SINCE",
        "NODE", "ROLE", "CANDIDATE", "IDLE", "NEXT ALARM", "HEALTH (NHI)"
    );
    let nhi = NhiConfig::default();
    for n in nodes {
        let _ = writeln!(
            out,
            "{:<14} {:<10} {:<9} {:<5} {:<16} {:<14} {}",
            n.node,
            role(n),
            if n.candidate { "yes" } else { "no" },
            if n.idle { "yes" } else { "no" },
            n.next_alarm_ms
                .map(|at| relative(at, now))
                .unwrap_or_else(|| "-".into()),
            n.nhi
                .map(|index| format!("{} {index}", nhi.class_of(index).as_str()))
                .unwrap_or_else(|| "-".into()),
            ago(n.since_ms, now)
        );
    }
    if nodes.is_empty() {
        out.push_str("(no node has registered)\n");
    }
    out
}

fn role(n: &NodeStatus) -> &'static str {
    match n.role {
        NodeRole::Pehredar => "pehredar",
        NodeRole::Awake if n.stay_awake => "awake*",
        NodeRole::Awake => "awake",
        NodeRole::Dormant => "dormant",
        NodeRole::OptedOut => "opted-out",
    }
}

fn wake_reason(r: wire::WakeReason) -> &'static str {
    match r {
        wire::WakeReason::Traffic => "traffic",
        wire::WakeReason::PehredarLost => "pehredar lost",
        wire::WakeReason::Admin => "admin",
        wire::WakeReason::Maintenance => "maintenance",
        wire::WakeReason::Election => "election",
    }
}

/// `in 12.3 s` or `12.3 s ago`.
fn relative(at_ms: u64, now: u64) -> String {
    if at_ms >= now {
        format!("in {:.1} s", (at_ms - now) as f64 / 1000.0)
    } else {
        ago(at_ms, now)
    }
}

fn ago(at_ms: u64, now: u64) -> String {
    format!("{:.1} s ago", now.saturating_sub(at_ms) as f64 / 1000.0)
}

async fn read<T: serde::de::DeserializeOwned>(client: &Client, path: &str) -> Result<Option<T>> {
    match client.get_data(path).await {
        Ok((data, _)) => Ok(Some(
            wire::decode(&data).with_context(|| format!("{path} holds no valid value"))?,
        )),
        Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every node's status, by name.
pub(crate) async fn read_nodes(client: &Client) -> Result<Vec<NodeStatus>> {
    Ok(pehra_cluster::pehra_statuses(client).await?)
}

use pehra_shared::driver::clock::unix_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use pehra_shared::wire::Term;

    fn node(name: &str, role: NodeRole, alarm: Option<u64>) -> NodeStatus {
        NodeStatus {
            node: name.into(),
            addr: "127.0.0.1:5683".into(),
            role,
            candidate: role != NodeRole::OptedOut,
            stay_awake: false,
            idle: true,
            next_alarm_ms: alarm,
            office: None,
            wake_generation: 0,
            since_ms: 1_000,
            nhi: None,
            lease_ms: None,
            rtt_ms: None,
        }
    }

    #[test]
    fn status_shows_mode_pehredar_term_end_and_each_nodes_alarm() {
        let state = PehraState {
            term: Some(Term {
                number: 4,
                pehredar: "broker-2".into(),
                started_ms: 0,
                ends_ms: 61_000,
            }),
            wake_generation: 3,
            wake_reason: Some(wire::WakeReason::Traffic),
            ..PehraState::default()
        };
        let mut nodes = [
            node("broker-1", NodeRole::Dormant, Some(11_000)),
            node("broker-2", NodeRole::Pehredar, None),
            node("broker-3", NodeRole::OptedOut, None),
        ];
        nodes[1].lease_ms = Some(54_000);
        nodes[1].nhi = Some(1000);
        nodes[0].nhi = Some(300);
        let text = render(&Some(state), None, &nodes, 1_000);
        assert!(
            text.contains("mode:        enabled: idle nodes sleep"),
            "{text}"
        );
        assert!(
            text.contains("broker-2 (term 4), term ends in 60.0 s"),
            "{text}"
        );
        assert!(text.contains("generation 3 (last: traffic)"), "{text}");
        assert!(text.contains("lease:       54.0 s"), "{text}");
        let line = text.lines().find(|l| l.starts_with("broker-2")).unwrap();
        assert!(line.contains("excellent 1000"), "{line}");
        let line = text.lines().find(|l| l.starts_with("broker-1")).unwrap();
        assert!(line.contains("critical 300"), "{line}");
        let line = text.lines().find(|l| l.starts_with("broker-1")).unwrap();
        assert!(
            line.contains("dormant") && line.contains("in 10.0 s"),
            "{line}"
        );
        let line = text.lines().find(|l| l.starts_with("broker-3")).unwrap();
        assert!(
            line.contains("opted-out") && line.contains(" no "),
            "{line}"
        );
    }

    #[test]
    fn status_says_when_disabled_or_in_traffic_mode() {
        let disabled = PehraState {
            enabled: false,
            ..PehraState::default()
        };
        assert!(render(&Some(disabled), None, &[], 0).contains("disabled by the admin"));
        let traffic = PehraState {
            traffic_awake: true,
            ..PehraState::default()
        };
        assert!(render(&Some(traffic), None, &[], 0).contains("switched out by traffic"));
        assert!(render(&None, None, &[], 0).contains("no state yet"));
    }
}
