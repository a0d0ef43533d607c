//! `zk-load`: a closed-loop load client for a zookeeper, ours (CoAP/UDP, through
//! `pehra_zookeeper::Client`) or Apache ZooKeeper (TCP, through the `zookeeper-client`
//! crate), so the two are driven by the same code under the same workload.
//!
//! `--clients N` clients each open their own session and make one request at a time
//! (the next when the previous is answered): the concurrency is the number of clients.
//! Under a per-run prefix (`--prefix`, default `/zkbench-<pid>-<ms>`), set up first:
//!
//! * `create`: client `i` creates `PREFIX/c<i>-<seq>` (persistent, `--value-size` bytes),
//!   `seq` counting up from 0 across warm-up and measurement;
//! * `set`: client `i` sets `PREFIX/s<i>` (made at set-up) to a `--value-size` value;
//! * `get`: client `i` reads `PREFIX/s<i>` (the size read back is checked).
//!
//! `--ops all` runs create, set and get in that order over the same sessions, one result
//! per operation. Each operation has `--warmup` seconds not counted, then either
//! `--duration` seconds (operations completed in that window count) or, with `--count`,
//! exactly that many operations per client (the window ends when the last client is done).
//! Every request is bounded by `--op-timeout`, and a watchdog ends the process if the
//! whole run overruns its plan by 30 s.
//!
//! `--probe`: connect (retrying until `--connect-timeout`), close, exit 0: a readiness
//! check that opens a real session (on ours that is a logged, fsynced write).
//!
//! **Ensembles.** `--addr` takes one member or a comma-separated list of them: ours
//! connects with `Client::connect_any` (requests move to another member when one is down
//! or not the leader), Apache's client gets the list as its connect string
//! (`h1:p1,h2:p2,h3:p3`). Two modes for ensembles only:
//!
//! * `--status`: asks every member for its role (ours: `GET /ensemble`; Apache: the
//!   four-letter word `srvr`, its `Mode:` line) and prints one line,
//!   `leader=I roles=R1|R2|R3` (`I` the leader's position in `--addr`, from 1; `-` for
//!   none). Exit 0 if the ensemble is whole: every member answers, exactly one leads, the
//!   others follow, and (ours) every member has applied what the leader has committed.
//! * `--failover-pids P1,P2,P3` (the members' PIDs in `--addr` order): one failover
//!   round. Finds the leader (the ensemble must be whole), opens one session with every
//!   member, sets one `--value-size` znode over and over (one request at a time) for
//!   `--warmup` seconds, then SIGKILLs the leader's PID between two writes and keeps
//!   writing: the result is the time from the kill to the next acknowledged write, and how
//!   many writes failed meanwhile (each failure is followed by a 2 ms pause; a write gets
//!   `--op-timeout`; the round gives up after `--failover-timeout` seconds). Then it writes
//!   on for `--duration` seconds (at most 5) and reports the session's id before and
//!   after, and its state. One JSON line with `--json` (`killed_member` says which member
//!   to restart).
//!
//! Exit status: 0 if every measured operation completed at least once, 1 otherwise.

use pehra_bench::{json_str, Latencies};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use pehra_zookeeper::{Client as OursClient, ClientOptions, CreateMode};
use zookeeper_client as apache;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Pehra's zookeeper (CoAP over UDP).
    Ours,
    /// Apache ZooKeeper (its TCP protocol).
    Apache,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ours => "ours",
            Target::Apache => "apache",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Ops {
    Create,
    Set,
    Get,
    /// create, then set, then get.
    All,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Op {
    Create,
    Set,
    Get,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Set => "set",
            Op::Get => "get",
        }
    }
}

/// Closed-loop zookeeper load client (ours or Apache ZooKeeper).
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
struct Args {
    /// Which server speaks at --addr.
    #[arg(long, value_enum)]
    target: Target,
    /// Server address, HOST:PORT (UDP for ours, TCP for apache), or an ensemble's
    /// members, comma-separated.
    #[arg(long)]
    addr: String,
    /// Concurrent clients (sessions), each with one request outstanding.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Operation(s) to measure.
    #[arg(long, value_enum, default_value_t = Ops::All)]
    ops: Ops,
    /// Measure exactly this many operations per client (instead of --duration).
    #[arg(long)]
    count: Option<u64>,
    /// Measurement window per operation, in seconds (fractions allowed).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up per operation before measuring, in seconds (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Size of the values written (and read back), in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Parent znode of this run (created; must not exist). Default: /zkbench-<pid>-<ms>.
    #[arg(long)]
    prefix: Option<String>,
    /// A request not answered within this many seconds counts as an error.
    #[arg(long, default_value_t = 10.0)]
    op_timeout: f64,
    /// Give up connecting (all clients, or the probe) after this many seconds.
    #[arg(long, default_value_t = 15.0)]
    connect_timeout: f64,
    /// Only check that a session can be opened (retrying until --connect-timeout).
    #[arg(long)]
    probe: bool,
    /// Print the ensemble's roles; exit 0 if it is whole (see the module docs).
    #[arg(long)]
    status: bool,
    /// One failover round: the members' PIDs in --addr order (see the module docs).
    #[arg(long, value_delimiter = ',')]
    failover_pids: Option<Vec<i32>>,
    /// A failover round gives up this many seconds after the kill.
    #[arg(long, default_value_t = 30.0)]
    failover_timeout: f64,
    /// Free-form label copied into the JSON.
    #[arg(long, default_value = "")]
    label: String,
    /// Print one JSON line per operation instead of the human-readable report.
    #[arg(long)]
    json: bool,
}

/// One session to either server, one request at a time.
enum Zk {
    Ours(OursClient),
    Apache(apache::Client),
}

const APACHE_CREATE: apache::CreateOptions<'static> =
    apache::CreateMode::Persistent.with_acls(apache::Acls::anyone_all());

impl Zk {
    async fn connect(target: Target, addrs: &[SocketAddr]) -> Result<Zk> {
        match target {
            Target::Ours => {
                let client = OursClient::connect_any(addrs, ClientOptions::default()).await?;
                Ok(Zk::Ours(client))
            }
            Target::Apache => {
                let cluster = addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                let client = apache::Client::connector()
                    .with_session_timeout(Duration::from_secs(10))
                    .with_fail_eagerly()
                    .connect(&cluster)
                    .await?;
                Ok(Zk::Apache(client))
            }
        }
    }

    async fn create(&self, path: &str, data: &[u8]) -> Result<()> {
        match self {
            Zk::Ours(c) => {
                c.create(path, data, CreateMode::Persistent).await?;
            }
            Zk::Apache(c) => {
                c.create(path, data, &APACHE_CREATE).await?;
            }
        }
        Ok(())
    }

    async fn set(&self, path: &str, data: &[u8]) -> Result<()> {
        match self {
            Zk::Ours(c) => {
                c.set_data(path, data, None).await?;
            }
            Zk::Apache(c) => {
                c.set_data(path, data, None).await?;
            }
        }
        Ok(())
    }

    /// Reads a znode; returns the size of its data.
    async fn get(&self, path: &str) -> Result<usize> {
        Ok(match self {
            Zk::Ours(c) => c.get_data(path).await?.0.len(),
            Zk::Apache(c) => c.get_data(path).await?.0.len(),
        })
    }

    /// The session's id, as text.
    fn session_tag(&self) -> String {
        match self {
            Zk::Ours(c) => c
                .session_id()
                .map_or("none".into(), |id| format!("{id:#x}")),
            Zk::Apache(c) => format!("{:#x}", c.session_id().0),
        }
    }

    /// The session's state as the client sees it.
    fn session_state(&self) -> String {
        match self {
            Zk::Ours(c) => format!("{:?}", *c.session_state().borrow()),
            Zk::Apache(c) => format!("{:?}", c.state()),
        }
    }

    async fn close(self) {
        match self {
            Zk::Ours(c) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), c.close()).await;
            }
            // Dropping the last handle closes the session in the background.
            Zk::Apache(c) => drop(c),
        }
    }
}

/// What one client did in one phase.
#[derive(Default)]
struct ClientStats {
    lat: Latencies,
    errors: u64,
    first_error: Option<String>,
    /// When its last measured operation finished (count mode).
    done_at: Option<Instant>,
}

/// The timing of one phase, shared by its clients.
struct Phase {
    op: Op,
    start: Instant,
    measure_start: Instant,
    /// None in count mode.
    end: Option<Instant>,
    count: u64,
}

struct PhaseResult {
    op: Op,
    window_s: f64,
    lat: Latencies,
    errors: u64,
    first_error: Option<String>,
}

async fn do_op(zk: &Zk, op: Op, path: &str, value: &[u8], timeout: Duration) -> Result<()> {
    let fut = async {
        match op {
            Op::Create => zk.create(path, value).await,
            Op::Set => zk.set(path, value).await,
            Op::Get => {
                let n = zk.get(path).await?;
                if n != value.len() {
                    bail!("get {path}: {n} bytes, expected {}", value.len());
                }
                Ok(())
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => bail!("{} {path}: no answer within {timeout:?}", op.name()),
    }
}

/// One client's loop in one phase. `seq` numbers its created znodes across phases.
async fn client_phase(
    zk: Arc<Zk>,
    id: usize,
    prefix: Arc<str>,
    value: Arc<[u8]>,
    phase: Arc<Phase>,
    seq: &mut u64,
    op_timeout: Duration,
) -> ClientStats {
    let mut st = ClientStats::default();
    let own = format!("{prefix}/s{id}");
    tokio::time::sleep_until(phase.start.into()).await;
    let mut measured = 0u64;
    loop {
        let t0 = Instant::now();
        let in_window = t0 >= phase.measure_start;
        match phase.end {
            Some(end) if t0 >= end => break,
            None if measured >= phase.count => break,
            _ => {}
        }
        let path = match phase.op {
            Op::Create => {
                *seq += 1;
                format!("{prefix}/c{id}-{}", *seq - 1)
            }
            Op::Set | Op::Get => own.clone(),
        };
        let result = do_op(&zk, phase.op, &path, &value, op_timeout).await;
        let t1 = Instant::now();
        let counted = match phase.end {
            Some(end) => t1 >= phase.measure_start && t1 < end,
            None => in_window,
        };
        if !counted {
            continue;
        }
        measured += 1;
        match result {
            Ok(()) => st.lat.record((t1 - t0).as_nanos() as u64),
            Err(e) => {
                st.errors += 1;
                st.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        st.done_at = Some(t1);
    }
    st
}

async fn connect_retrying(
    target: Target,
    addrs: Arc<[SocketAddr]>,
    deadline: Instant,
) -> Result<Zk> {
    let mut last = None;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = left.min(Duration::from_secs(2));
        match tokio::time::timeout(attempt, Zk::connect(target, &addrs)).await {
            Ok(Ok(zk)) => return Ok(zk),
            Ok(Err(e)) => last = Some(format!("{e:#}")),
            Err(_) => last = Some(format!("no session within {attempt:?}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "cannot open a session at {addrs:?}: {}",
        last.unwrap_or_else(|| "deadline passed".into())
    )
}

/// `children`: how many znodes the run's parent holds after a create phase (none else).
fn report(args: &Args, prefix: &str, r: &mut PhaseResult, children: Option<u64>) -> bool {
    let ok = r.lat.len();
    let ops_s = if r.window_s > 0.0 {
        ok as f64 / r.window_s
    } else {
        0.0
    };
    let l = r.lat.summary_us();
    let (mean_us, p50, p90, p99, p999, max_us) = (l.mean, l.p50, l.p90, l.p99, l.p999, l.max);
    if args.json {
        println!(
            "{{\"label\":{},\"target\":\"{}\",\"addr\":{},\"op\":\"{}\",\"clients\":{},\
             \"value_size\":{},\"warmup_s\":{},\"window_s\":{:.3},\"ops\":{},\"ops_per_s\":{:.1},\
             \"lat_mean_us\":{:.1},\"lat_p50_us\":{:.1},\"lat_p90_us\":{:.1},\"lat_p99_us\":{:.1},\
             \"lat_p999_us\":{:.1},\"lat_max_us\":{:.1},\"errors\":{},\"parent_children\":{},\
             \"prefix\":{},\"first_error\":{}}}",
            json_str(&args.label),
            args.target.name(),
            json_str(&args.addr),
            r.op.name(),
            args.clients,
            args.value_size,
            args.warmup,
            r.window_s,
            ok,
            ops_s,
            mean_us,
            p50,
            p90,
            p99,
            p999,
            max_us,
            r.errors,
            children.map_or("null".into(), |c| c.to_string()),
            json_str(prefix),
            r.first_error.as_deref().map_or("null".into(), json_str),
        );
    } else {
        println!(
            "{} {} x{} ({} B) -> {}: {} ok in {:.2}s = {ops_s:.0} ops/s, errors {}",
            args.target.name(),
            r.op.name(),
            args.clients,
            args.value_size,
            args.addr,
            ok,
            r.window_s,
            r.errors
        );
        println!(
            "  latency us: mean {mean_us:.1}  p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  \
             p99.9 {p999:.1}  max {max_us:.1}"
        );
        if let Some(c) = children {
            println!("  the run's parent {prefix} now has {c} children");
        }
        if let Some(e) = &r.first_error {
            println!("  first error: {e}");
        }
    }
    ok > 0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let secs_ok = |v: f64| v.is_finite() && v >= 0.0;
    if !secs_ok(args.duration) || !secs_ok(args.warmup) || !secs_ok(args.op_timeout) {
        bail!("--duration, --warmup and --op-timeout must be finite and >= 0");
    }
    if args.count.is_none() && args.duration <= 0.0 {
        bail!("--duration must be > 0 (or use --count)");
    }
    let mut addrs = Vec::new();
    for a in args
        .addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        addrs.push(
            a.to_socket_addrs()
                .with_context(|| format!("resolving {a}"))?
                .next()
                .with_context(|| format!("{a} resolved to no address"))?,
        );
    }
    if addrs.is_empty() {
        bail!("--addr names no address");
    }
    let addrs: Arc<[SocketAddr]> = addrs.into();
    let connect_deadline = Instant::now() + Duration::from_secs_f64(args.connect_timeout);

    if args.probe {
        let zk = connect_retrying(args.target, addrs, connect_deadline).await?;
        zk.close().await;
        return Ok(());
    }
    if args.status {
        let roles = ensemble_roles(args.target, &addrs).await;
        println!("{}", roles_line(&roles));
        if !ensemble_whole(&roles) {
            std::process::exit(1);
        }
        return Ok(());
    }
    if let Some(pids) = &args.failover_pids {
        if pids.len() != addrs.len() {
            bail!("--failover-pids needs one PID per --addr member");
        }
        return failover(&args, addrs, pids, connect_deadline).await;
    }

    let ops: &[Op] = match args.ops {
        Ops::Create => &[Op::Create],
        Ops::Set => &[Op::Set],
        Ops::Get => &[Op::Get],
        Ops::All => &[Op::Create, Op::Set, Op::Get],
    };

    // Watchdog: the run must never outlive its plan by more than 30 s.
    let per_phase = args.warmup
        + match args.count {
            Some(_) => 600.0,
            None => args.duration,
        };
    let limit = Duration::from_secs_f64(args.connect_timeout + per_phase * ops.len() as f64 + 30.0);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("zk-load: watchdog fired after {limit:?}, aborting");
        std::process::exit(3);
    });

    let prefix: Arc<str> = match &args.prefix {
        Some(p) => p.trim_end_matches('/').into(),
        None => {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            format!("/zkbench-{}-{ms}", std::process::id()).into()
        }
    };
    let value: Arc<[u8]> = (0..args.value_size)
        .map(|i| (i.wrapping_mul(31) + 7) as u8)
        .collect();
    let op_timeout = Duration::from_secs_f64(args.op_timeout);

    // Sessions, all at once (each client has its own socket / connection).
    let connects: Vec<_> = (0..args.clients)
        .map(|_| {
            tokio::spawn(connect_retrying(
                args.target,
                addrs.clone(),
                connect_deadline,
            ))
        })
        .collect();
    let mut clients = Vec::with_capacity(args.clients);
    for c in connects {
        clients.push(Arc::new(c.await.context("connect task")??));
    }

    // Set-up: the run's parent, then each client's own znode (for set and get).
    clients[0]
        .create(&prefix, b"")
        .await
        .with_context(|| format!("creating the run's parent {prefix}"))?;
    for (i, zk) in clients.iter().enumerate() {
        zk.create(&format!("{prefix}/s{i}"), &value)
            .await
            .with_context(|| format!("creating {prefix}/s{i}"))?;
    }

    let mut seqs = vec![0u64; args.clients];
    let mut all_ok = true;
    for &op in ops {
        let start = Instant::now() + Duration::from_millis(20);
        let measure_start = start + Duration::from_secs_f64(args.warmup);
        let phase = Arc::new(Phase {
            op,
            start,
            measure_start,
            end: match args.count {
                Some(_) => None,
                None => Some(measure_start + Duration::from_secs_f64(args.duration)),
            },
            count: args.count.unwrap_or(0),
        });
        let tasks: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, zk)| {
                let (zk, prefix, value, phase) =
                    (zk.clone(), prefix.clone(), value.clone(), phase.clone());
                let mut seq = seqs[i];
                tokio::spawn(async move {
                    let st = client_phase(zk, i, prefix, value, phase, &mut seq, op_timeout).await;
                    (st, seq)
                })
            })
            .collect();
        let mut result = PhaseResult {
            op,
            window_s: 0.0,
            lat: Latencies::default(),
            errors: 0,
            first_error: None,
        };
        let mut last_done = measure_start;
        for (i, t) in tasks.into_iter().enumerate() {
            let (st, seq) = t.await.context("client task")?;
            seqs[i] = seq;
            result.lat.add(st.lat);
            result.errors += st.errors;
            if result.first_error.is_none() {
                result.first_error = st.first_error;
            }
            if let Some(d) = st.done_at {
                last_done = last_done.max(d);
            }
        }
        result.window_s = match phase.end {
            Some(end) => (end - measure_start).as_secs_f64(),
            None => (last_done - measure_start).as_secs_f64(),
        };
        let children = (op == Op::Create).then(|| seqs.iter().sum::<u64>() + args.clients as u64);
        all_ok &= report(&args, &prefix, &mut result, children);
    }

    for zk in clients {
        if let Ok(zk) = Arc::try_unwrap(zk) {
            zk.close().await;
        }
    }
    // Let the Apache client's background task send its session closes.
    if args.target == Target::Apache {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !all_ok {
        eprintln!("zk-load: an operation completed no request");
        std::process::exit(1);
    }
    Ok(())
}

/// One member's answer to the status question.
#[derive(Debug, Clone)]
struct Role {
    /// `leader`, `follower`, or what else it said.
    role: String,
    /// Ours: its applied and the commit index it knows (Raft indexes).
    applied: u64,
    commit: u64,
}

/// Each member's role, in `addrs` order (`None`: no answer within 2 s).
async fn ensemble_roles(target: Target, addrs: &[SocketAddr]) -> Vec<Option<Role>> {
    let mut out = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let ask = member_role(target, addr);
        out.push(
            tokio::time::timeout(Duration::from_secs(2), ask)
                .await
                .ok()
                .flatten(),
        );
    }
    out
}

async fn member_role(target: Target, addr: SocketAddr) -> Option<Role> {
    match target {
        Target::Ours => {
            let client =
                OursClient::without_session_any(&[addr], ClientOptions::default().coap, None)
                    .await
                    .ok()?;
            let status = client.ensemble_status().await.ok()?;
            Some(match status {
                Some(s) => Role {
                    role: s.role,
                    applied: s.applied,
                    commit: s.commit,
                },
                None => Role {
                    role: "standalone".into(),
                    applied: 0,
                    commit: 0,
                },
            })
        }
        Target::Apache => {
            // The four-letter word `srvr`: "Mode: leader|follower|standalone" once serving.
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            s.write_all(b"srvr").await.ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).await.ok()?;
            let role = text
                .lines()
                .find_map(|l| l.strip_prefix("Mode: "))
                .unwrap_or("not-serving")
                .trim()
                .to_string();
            Some(Role {
                role,
                applied: 0,
                commit: 0,
            })
        }
    }
}

/// The leader's position in the member list, from 1 (the first member saying so).
fn leader_of(roles: &[Option<Role>]) -> Option<usize> {
    roles
        .iter()
        .position(|r| r.as_ref().is_some_and(|r| r.role == "leader"))
        .map(|i| i + 1)
}

/// Every member answers, one leads, the others follow, and every member has applied
/// what the leader has committed (ours; Apache's followers serve only once in sync).
fn ensemble_whole(roles: &[Option<Role>]) -> bool {
    let Some(leader) = leader_of(roles) else {
        return false;
    };
    let Some(Some(lead)) = roles.get(leader - 1) else {
        return false;
    };
    let leaders = roles
        .iter()
        .flatten()
        .filter(|r| r.role == "leader")
        .count();
    leaders == 1
        && roles.iter().all(|r| {
            r.as_ref().is_some_and(|r| {
                (r.role == "leader" || r.role == "follower") && r.applied >= lead.commit
            })
        })
}

fn roles_line(roles: &[Option<Role>]) -> String {
    let names: Vec<String> = roles
        .iter()
        .map(|r| match r {
            Some(r) if r.commit > 0 || r.applied > 0 => {
                format!("{}({}/{})", r.role, r.applied, r.commit)
            }
            Some(r) => r.role.clone(),
            None => "no-answer".into(),
        })
        .collect();
    format!(
        "leader={} roles={}",
        leader_of(roles).map_or("-".into(), |l| l.to_string()),
        names.join("|")
    )
}

/// One failover round (see the module docs).
async fn failover(
    args: &Args,
    addrs: Arc<[SocketAddr]>,
    pids: &[i32],
    connect_deadline: Instant,
) -> Result<()> {
    let roles = ensemble_roles(args.target, &addrs).await;
    if !ensemble_whole(&roles) {
        bail!("the ensemble is not whole: {}", roles_line(&roles));
    }
    let leader = leader_of(&roles).expect("whole");
    let pid = pids[leader - 1];
    let zk = connect_retrying(args.target, addrs.clone(), connect_deadline).await?;
    let prefix = match &args.prefix {
        Some(p) => p.trim_end_matches('/').to_string(),
        None => {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            format!("/zkfail-{}-{ms}", std::process::id())
        }
    };
    let value: Vec<u8> = (0..args.value_size)
        .map(|i| (i.wrapping_mul(31) + 7) as u8)
        .collect();
    let path = format!("{prefix}/s0");
    let op_timeout = Duration::from_secs_f64(args.op_timeout);
    zk.create(&prefix, b"")
        .await
        .with_context(|| format!("creating {prefix}"))?;
    zk.create(&path, &value)
        .await
        .with_context(|| format!("creating {path}"))?;

    // Before: writes as usual, so the kill lands in a steady stream.
    let mut before = Latencies::default();
    let until = Instant::now() + Duration::from_secs_f64(args.warmup);
    while Instant::now() < until {
        let t0 = Instant::now();
        do_op(&zk, Op::Set, &path, &value, op_timeout)
            .await
            .context("a write before the kill")?;
        before.record(t0.elapsed().as_nanos() as u64);
    }

    // The kill, between two writes (none of ours is in flight).
    let target_pid = rustix::process::Pid::from_raw(pid).context("a PID must be > 0")?;
    rustix::process::kill_process(target_pid, rustix::process::Signal::KILL)
        .with_context(|| format!("SIGKILL to pid {pid}"))?;
    let killed_at = Instant::now();

    let give_up = killed_at + Duration::from_secs_f64(args.failover_timeout);
    let (mut failed, mut attempts) = (0u64, 0u64);
    let mut first_error = None;
    let mut recovery = None;
    let mut last_latency = Duration::ZERO;
    while Instant::now() < give_up {
        let t0 = Instant::now();
        attempts += 1;
        match do_op(&zk, Op::Set, &path, &value, op_timeout).await {
            Ok(()) => {
                let t1 = Instant::now();
                recovery = Some(t1 - killed_at);
                last_latency = t1 - t0;
                break;
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    // After: writes on for --duration seconds (at most 5), then is the session the same
    // one, and alive? (Ours renews it every third of its 10 s timeout, so a session the
    // new leader did not keep shows by then.)
    let session_before = zk.session_tag();
    let mut after_failed = 0u64;
    if recovery.is_some() {
        let until = Instant::now() + Duration::from_secs_f64(args.duration.min(5.0));
        while Instant::now() < until {
            if do_op(&zk, Op::Set, &path, &value, op_timeout)
                .await
                .is_err()
            {
                after_failed += 1;
            }
        }
    }
    let session_after = format!("{} {}", zk.session_tag(), zk.session_state());
    let after = ensemble_roles(args.target, &addrs).await;
    let new_leader = leader_of(&after);
    zk.close().await;
    if args.target == Target::Apache {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let b = before.summary_us();
    if args.json {
        println!(
            "{{\"label\":{},\"target\":\"{}\",\"mode\":\"failover\",\"killed_member\":{leader},\
             \"killed_pid\":{pid},\"recovery_ms\":{},\"failed_writes\":{failed},\
             \"attempts\":{attempts},\"recovering_write_ms\":{:.3},\"before_writes\":{},\
             \"before_p50_us\":{:.1},\"new_leader\":{},\"roles_after\":{},\"first_error\":{},\
             \"writes_failed_after\":{after_failed},\"session_before\":{},\"session_after\":{}}}",
            json_str(&args.label),
            args.target.name(),
            recovery.map_or("null".into(), |d| format!("{:.3}", d.as_secs_f64() * 1e3)),
            last_latency.as_secs_f64() * 1e3,
            before.len(),
            b.p50,
            new_leader.map_or("null".into(), |l| l.to_string()),
            json_str(&roles_line(&after)),
            first_error.as_deref().map_or("null".into(), json_str),
            json_str(&session_before),
            json_str(&session_after),
        );
    } else {
        println!(
            "{}: killed member {leader} (pid {pid}); next acknowledged write after {}; \
             {failed} failed writes of {attempts}; new leader {}",
            args.target.name(),
            recovery.map_or("none".into(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1e3
            )),
            new_leader.map_or("-".into(), |l| l.to_string())
        );
        if let Some(e) = &first_error {
            println!("  first error: {e}");
        }
    }
    if recovery.is_none() {
        std::process::exit(1);
    }
    Ok(())
}
