//! `pehra device-sim`: N simulated battery devices on this machine, each running the
//! firmware's node loop (`pehra-device-fw`) on tokio: its own UDP socket on 127.0.0.1,
//! its storage in a file, a thermometer making `{"t":21.5,"seq":N}`. A live line shows
//! how many are awake and what they moved; at the end (or with `--energy`) the time per
//! power state, the wakes and radio starts, and the energy model's µAh/day and battery
//! life per board (`pehra_device_fw::energy`).

use anyhow::{bail, Context, Result};
use clap::Args;
use pehra_device_fw::energy::{StateTimes, BATTERY_2XAA_MAH, BOARDS, DEEP_SLEEP_MIN_MS};
use pehra_device_fw::hal::NoRadio;
use pehra_device_fw::{
    Clock, Device, DeviceIdentity, DeviceKeys, EdhocKeys, Parts, Persisted, SeededRng, Sensor,
    SetInterval, Settings, Storage, UdpSocket,
};
use pehra_shared::coap::Config;
use pehra_shared::pehra::device::DeviceConfig;
use pehra_shared::wire::Acks;
use pehra_zookeeper::{Client, ClientOptions};
use std::cell::RefCell;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

/// Arguments of `pehra device-sim`.
#[derive(Args)]
#[command(
    after_help = "Gateways are the brokers (every broker serves /dev/checkin, /dev/{node}/readings \
    and /dev/{node}/downlink). Each device keeps its state in DATA_DIR/dev-NNNN.state."
)]
pub struct DeviceSimArgs {
    /// Read the gateways (brokers) from this zookeeper's /brokers/ids (or any member's
    /// of an ensemble: their addresses separated by commas).
    #[arg(long, conflicts_with = "gateway", value_delimiter = ',')]
    zookeeper: Vec<SocketAddr>,
    /// A gateway (broker) address; repeat for several.
    #[arg(long)]
    gateway: Vec<SocketAddr>,
    /// How many devices.
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Seconds between alarms (readings).
    #[arg(long, default_value_t = 60)]
    interval: u64,
    /// The topic readings go to.
    #[arg(long, default_value = "readings")]
    topic: String,
    /// Acks for the readings: 0, 1 or all.
    #[arg(long, default_value = "1")]
    acks: String,
    /// Print the energy report every live line too.
    #[arg(long)]
    energy: bool,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Where the devices keep their state.
    #[arg(long, default_value = "pehra-data/devices")]
    data_dir: PathBuf,
    /// Credentials for reading the gateways from a secure zookeeper.
    #[command(flatten)]
    security: crate::security_args::ClientSecurityArgs,
    /// A `pehra keys` directory with each device's credentials (`dev-0001.cred`, ...):
    /// the devices then protect every request with OSCORE, as the firmware does. Without
    /// it they speak plain CoAP (their brokers need --insecure-device-routes, or no
    /// security). With --gateway, the Nth gateway is taken to be broker N.
    #[arg(long)]
    device_keys: Option<PathBuf>,
}

/// Runs `pehra device-sim`.
pub async fn run(args: DeviceSimArgs) -> Result<ExitCode> {
    let acks = match args.acks.as_str() {
        "0" => Acks::None,
        "1" => Acks::Leader,
        "all" | "-1" => Acks::All,
        other => bail!("--acks must be 0, 1 or all, not {other:?}"),
    };
    let gateways = match args.zookeeper.as_slice() {
        [] => args.gateway.iter().copied().zip(1..).collect(),
        zk => {
            let credentials = args.security.load()?;
            let client = Client::without_session_any(
                zk,
                ClientOptions::default().coap,
                credentials.as_deref(),
            )
            .await
            .context("opening a zookeeper client")?;
            let brokers = pehra_cluster::live_brokers(&client)
                .await
                .with_context(|| format!("reading /brokers/ids from {zk:?}"))?;
            brokers
                .iter()
                .filter_map(|(id, b)| Some((b.addr.parse::<SocketAddr>().ok()?, *id)))
                .collect::<Vec<_>>()
        }
    };
    if gateways.is_empty() {
        bail!("no gateway: give --gateway ADDR or --zookeeper ADDR with brokers registered");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let local = tokio::task::LocalSet::new();
    local.run_until(simulate(args, gateways, acks)).await
}

/// What one device reports to the live line.
#[derive(Default, Clone)]
struct Slot {
    awake: bool,
    published: u64,
    downlink: u64,
    failed_cycles: u64,
    dropped: u64,
    energy: StateTimes,
}

/// The longest the devices are given to finish their cycles at the end: a CoAP request's
/// response timeout (5 s) for each of a check-in, a publish and a downlink fetch.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Device `name`'s identity from `dir/name.cred`: a pre-shared identity key, or an
/// EDHOC key pair with the servers' credentials (`pehra keys add … --edhoc`).
fn device_identity(dir: &std::path::Path, name: &str) -> Result<DeviceIdentity> {
    let credentials =
        pehra_shared::security::credentials::Credentials::load(dir.join(format!("{name}.cred")))
            .with_context(|| format!("device {name}'s credentials"))?;
    if let Some(key) = credentials.edhoc_key() {
        let servers = credentials
            .edhoc_peers()
            .iter()
            .map(|p| (p.identity.kid.clone(), p.ccs.clone()))
            .collect();
        return Ok(EdhocKeys {
            key: key.clone(),
            servers,
        }
        .into());
    }
    Ok(DeviceIdentity::Shared(DeviceKeys {
        kid: credentials.identity().kid.clone(),
        identity_key: *credentials.identity_key(),
    }))
}

async fn simulate(
    args: DeviceSimArgs,
    brokers: Vec<(SocketAddr, u32)>,
    acks: Acks,
) -> Result<ExitCode> {
    let gateways: Vec<SocketAddr> = brokers.iter().map(|&(a, _)| a).collect();
    let base = tokio::time::Instant::now();
    let clock = TokioClock::start();
    // At the end every device finishes the cycle it is in (its exchanges answered, its
    // state persisted) instead of being dropped in the middle of one.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut devices = Vec::new();
    let slots = Rc::new(RefCell::new(vec![Slot::default(); args.count as usize]));
    let interval_ms = args.interval.max(1) * 1000;
    for i in 0..args.count {
        let socket = tokio::net::UdpSocket::bind(pehra_shared::driver::any_local_for(gateways[0]))
            .await
            .context("binding a device socket")?;
        let name = format!("dev-{:04}", i + 1);
        let keys = match &args.device_keys {
            Some(dir) => Some(device_identity(dir, &name)?),
            None => None,
        };
        let brokers = brokers.clone();
        // The board's randomness: message IDs, tokens, OSCORE's ID Context, EDHOC's
        // ephemeral keys.
        let seed = pehra_shared::driver::socket::seed32().context("drawing a device's seed")?;
        let config = DeviceConfig::new(&name, gateways.clone(), interval_ms);
        let settings = Settings {
            topic: args.topic.clone(),
            acks,
            max_batch: 32,
            downlink_max_bytes: 512,
            alarm_interval_ms: interval_ms,
        };
        let coap = Config {
            ack_timeout: Duration::from_millis(500),
            max_retransmit: 2,
            response_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let parts = Parts {
            udp: TokioUdp { socket, clock },
            clock,
            sensor: Thermometer { seed: i as u64 },
            storage: FileStorage(args.data_dir.join(format!("{name}.state"))),
            radio: NoRadio,
            app: SetInterval,
        };
        let slots = slots.clone();
        let start_ms = interval_ms * i as u64 / args.count.max(1) as u64;
        let mut stopping = stop_rx.clone();
        devices.push(tokio::task::spawn_local(async move {
            // Staggered starts: a device boots at its start time, so the wait before it
            // is not counted as awake time by its energy meter.
            let mut wait = clock;
            tokio::select! {
                _ = wait.sleep_until(clock.base_ms + start_ms) => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            let mut rng = SeededRng::new(seed);
            let mut device = match keys {
                Some(keys) => {
                    Device::boot_secured(config, settings, coap, parts, &mut rng, keys, brokers)
                        .await
                }
                None => Device::boot(config, settings, coap, parts, &mut rng).await,
            };
            loop {
                slots.borrow_mut()[i as usize].awake = true;
                // A cycle is never cut short: what it sent is answered and persisted.
                let report = device.run_cycle().await;
                {
                    let stats = device.stats();
                    let mut s = slots.borrow_mut();
                    let slot = &mut s[i as usize];
                    slot.awake = !report.deep_sleep;
                    slot.published = stats.readings_published;
                    slot.downlink = stats.downlink_records;
                    slot.failed_cycles = device.node().counters().failed_cycles;
                    slot.dropped = device.buffered().1;
                    slot.energy = device.energy();
                }
                tokio::select! {
                    _ = device.sleep(&report) => {}
                    _ = stopping.wait_for(|stop| *stop) => break,
                }
            }
            slots.borrow_mut()[i as usize].energy = device.energy();
        }));
    }
    let stop = async {
        match args.duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => crate::shutdown_signal().await,
        }
    };
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let line = live_line(&slots.borrow(), base.elapsed().as_secs());
                print!("\r{line}");
                let _ = std::io::stdout().flush();
                if args.energy {
                    println!();
                    print!("{}", energy_report(&slots.borrow()));
                }
            }
        }
    }
    println!();
    let _ = stop_tx.send(true);
    let busy = slots.borrow().iter().filter(|s| s.awake).count();
    if busy > 0 {
        eprintln!("stopping: {busy} devices finish the cycle they are in");
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    let mut unfinished = 0;
    for device in devices {
        if tokio::time::timeout_at(deadline, device).await.is_err() {
            unfinished += 1;
        }
    }
    if unfinished > 0 {
        eprintln!(
            "stopping: {unfinished} devices were still in a cycle after {} s (stopped there)",
            STOP_GRACE.as_secs()
        );
    }
    println!("{}", live_line(&slots.borrow(), base.elapsed().as_secs()));
    print!("{}", energy_report(&slots.borrow()));
    Ok(ExitCode::SUCCESS)
}

fn live_line(slots: &[Slot], elapsed_s: u64) -> String {
    let awake = slots.iter().filter(|s| s.awake).count();
    let published: u64 = slots.iter().map(|s| s.published).sum();
    let downlink: u64 = slots.iter().map(|s| s.downlink).sum();
    let failed: u64 = slots.iter().map(|s| s.failed_cycles).sum();
    let dropped: u64 = slots.iter().map(|s| s.dropped).sum();
    format!(
        "{elapsed_s:>5}s  awake {awake:>4}  asleep {:>4}  readings published {published:>7}  downlink {downlink:>5}  cycles without gateway {failed:>4}  dropped {dropped:>4}",
        slots.len() - awake
    )
}

fn energy_report(slots: &[Slot]) -> String {
    use std::fmt::Write as _;
    let mut total = StateTimes::default();
    for s in slots {
        total.add(&s.energy);
    }
    let mut out = String::new();
    let all = total.total_us().max(1) as f64;
    let _ = writeln!(
        out,
        "time per state (all devices): sleep {:.1}%  cpu {:.3}%  radio {:.3}%  listening {:.3}%  ({} bytes sent, {} wakes from sleeps of {} s or more, {} shorter sleeps, {} radio starts)",
        total.sleep_us as f64 * 100.0 / all,
        total.active_us as f64 * 100.0 / all,
        total.radio_us as f64 * 100.0 / all,
        total.listen_us as f64 * 100.0 / all,
        total.tx_bytes,
        total.wakes,
        DEEP_SLEEP_MIN_MS / 1000,
        total.short_sleeps,
        total.radio_starts,
    );
    for board in BOARDS {
        let per_day = board.uah_per_day(&total);
        let wake_share = if per_day > 0.0 {
            board.wake_charge_uah(&total) / board.charge_uah(&total) * 100.0
        } else {
            0.0
        };
        let days = board.battery_days(&total, BATTERY_2XAA_MAH);
        let _ = writeln!(
            out,
            "  {:<26} {:>10.1} µAh/day per device ({:>4.1}% wakes and radio starts)   2×AA ({BATTERY_2XAA_MAH} mAh): {:>8.0} days ({:.1} years)",
            board.name,
            per_day,
            wake_share,
            days,
            days / 365.0
        );
    }
    out
}

struct TokioUdp {
    socket: tokio::net::UdpSocket,
    clock: TokioClock,
}

impl UdpSocket for TokioUdp {
    type Error = std::io::Error;

    async fn send_to(&mut self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        self.socket.send_to(bytes, to).await.map(|_| ())
    }

    async fn recv_until(
        &mut self,
        buf: &mut [u8],
        deadline_ms: u64,
    ) -> std::io::Result<Option<(usize, SocketAddr)>> {
        let at = self.clock.instant(deadline_ms);
        match tokio::time::timeout_at(at, self.socket.recv_from(buf)).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// The simulated devices' clock on tokio's timer: ms since the Unix epoch, so that it
/// runs on from one run of `device-sim` to the next as a device's clock runs on through
/// deep sleep (the state files keep clock offsets and schedules).
#[derive(Clone, Copy)]
struct TokioClock {
    base: tokio::time::Instant,
    base_ms: u64,
}

impl TokioClock {
    fn start() -> Self {
        let base_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        TokioClock {
            base: tokio::time::Instant::now(),
            base_ms,
        }
    }

    /// The instant at clock time `ms`.
    fn instant(&self, ms: u64) -> tokio::time::Instant {
        self.base + Duration::from_millis(ms.saturating_sub(self.base_ms))
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }

    async fn sleep_until(&mut self, at_ms: u64) {
        tokio::time::sleep_until(self.instant(at_ms)).await
    }
}

struct Thermometer {
    seed: u64,
}

impl Sensor for Thermometer {
    type Error = Infallible;

    async fn read(&mut self, seq: u64) -> Result<Vec<u8>, Infallible> {
        let tenths = 200 + ((self.seed * 7 + seq * 3) % 40) as i64;
        Ok(format!("{{\"t\":{}.{},\"seq\":{seq}}}", tenths / 10, tenths % 10).into_bytes())
    }

    fn battery_permille(&mut self) -> Option<u16> {
        Some(950)
    }
}

struct FileStorage(PathBuf);

impl Storage for FileStorage {
    type Error = std::io::Error;

    async fn load(&mut self) -> std::io::Result<Option<Persisted>> {
        match std::fs::read(&self.0) {
            Ok(bytes) => Ok(Persisted::decode(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn save(&mut self, persisted: &Persisted) -> std::io::Result<()> {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, persisted.encode())?;
        std::fs::rename(&tmp, &self.0)
    }
}
