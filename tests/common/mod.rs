//! Running `pehra` server processes in tests: free loopback ports, readiness from the
//! server's own startup line, and cleanup by PID.
#![allow(dead_code)]

pub mod aiocoap;
pub mod ensemble;
pub mod metrics;
pub mod producer;
pub mod provision;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// A UDP port free on loopback right now, taken from below the kernel's ephemeral range
/// (32768–60999 by default) so that no socket bound to port 0 (by this test, or by a
/// process it started) can take it before the server it is meant for binds it, or
/// between a crash and a restart on the same address. Every call in one test process
/// returns a different port.
pub fn free_udp_port() -> u16 {
    free_udp_ports(1)
}

/// `n` consecutive UDP ports free on loopback right now (as [`free_udp_port`]); returns
/// the first. The block is taken from the process's counter in one step, so a test
/// running in parallel cannot be handed one of its ports (it once was, between taking
/// the first port and the rest).
pub fn free_udp_ports(n: u16) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 22_000;
    let n = u32::from(n.max(1));
    let start = std::process::id().wrapping_mul(211) % COUNT;
    loop {
        let taken = NEXT.fetch_add(n, Ordering::Relaxed);
        assert!(
            taken + n <= COUNT,
            "no free loopback UDP port left below the ephemeral range"
        );
        let offset = (start + taken) % COUNT;
        if offset + n > COUNT {
            continue; // the block would wrap past the range's end
        }
        let first = FIRST + offset;
        let all_free =
            (first..first + n).all(|p| std::net::UdpSocket::bind(("127.0.0.1", p as u16)).is_ok());
        if all_free {
            return first as u16;
        }
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "pehra-test-{name}-{}-{}",
            std::process::id(),
            free_udp_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `pehra zookeeper` process, SIGKILLed on drop if still running.
pub struct Zookeeper {
    pub child: Child,
    pub addr: SocketAddr,
    pub startup_line: String,
}

impl Zookeeper {
    /// Starts one on `addr` with data in `dir` and waits until it says it is listening.
    pub fn start(dir: &Path, addr: SocketAddr) -> Zookeeper {
        Self::start_with(dir, addr, &[])
    }

    /// Like [`Zookeeper::start`], with extra command-line arguments.
    pub fn start_with(dir: &Path, addr: SocketAddr, extra: &[&str]) -> Zookeeper {
        let mut args = vec![
            "zookeeper".to_string(),
            "--listen".into(),
            addr.to_string(),
            "--data-dir".into(),
        ];
        args.push(dir.display().to_string());
        args.extend(["--min-session-timeout-ms".to_string(), "300".into()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let (child, startup_line) = spawn_ready(&args, "listening on");
        Zookeeper {
            child,
            addr,
            startup_line,
        }
    }

    /// Starts one on a free port.
    pub fn start_fresh(dir: &Path) -> Zookeeper {
        Self::start(
            dir,
            format!("127.0.0.1:{}", free_udp_port()).parse().unwrap(),
        )
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait (bounded) for a clean exit; returns whether it exited 0.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id();
        unsafe_kill(pid, "TERM");
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        match wait_bounded(child, Duration::from_secs(10)) {
            Some(out) => out.status.success(),
            None => false,
        }
    }
}

impl Drop for Zookeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pehra ARGS` and waits (up to 20 s) until its stderr shows `ready`; returns the
/// child and that line. The rest of its stderr is drained in the background. If the
/// process exits first, the panic says how and shows the end of its stderr.
pub fn spawn_ready(args: &[String], ready: &'static str) -> (Child, String) {
    spawn_program_ready(&pehra_program(), args, ready)
}

/// The `pehra` program the tests run: `$PEHRA_BIN` if set (a copy made right after the
/// build, safe from other builds sharing the target directory), else the one cargo built.
pub fn pehra_program() -> PathBuf {
    std::env::var_os("PEHRA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pehra")))
}

/// [`spawn_ready`] with another program (a copy of `pehra`, say).
pub fn spawn_program_ready(
    program: &Path,
    args: &[String],
    ready: &'static str,
) -> (Child, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pehra");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // PEHRA_TEST_STDERR=DIR keeps every process's stderr in DIR/<pid>.log (debugging).
    let keep = std::env::var_os("PEHRA_TEST_STDERR").map(|dir| {
        let path = Path::new(&dir).join(format!("{}.log", child.id()));
        std::fs::File::create(path).expect("create the stderr copy")
    });
    std::thread::spawn(move || {
        let mut keep = keep;
        let mut tail: Vec<String> = Vec::new();
        let mut is_ready = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(file) = keep.as_mut() {
                use std::io::Write as _;
                let _ = writeln!(file, "{line}");
            }
            if is_ready {
                continue;
            }
            if line.contains(ready) {
                is_ready = true;
                let _ = tx.send(Ok(line));
            } else {
                if tail.len() == 20 {
                    tail.remove(0);
                }
                tail.push(line);
            }
        }
        // Stderr closed before `ready`: the process has exited; pass on what it said.
        if !is_ready {
            let _ = tx.send(Err(tail.join("\n")));
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(line)) => (child, line),
        Ok(Err(stderr)) => {
            let status = wait_bounded(child, Duration::from_secs(5)).map(|out| out.status);
            panic!("pehra {args:?} exited before it was ready ({status:?}); its stderr ended:\n{stderr}");
        }
        Err(_) => {
            let _ = child.kill();
            panic!("pehra {args:?} did not start within 20 s");
        }
    }
}

/// A `pehra broker` process, SIGKILLed on drop if still running.
pub struct BrokerProcess {
    pub child: Child,
    pub id: u32,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub zookeeper: SocketAddr,
}

impl BrokerProcess {
    /// Starts broker `id` on `addr` with data in `dir`, and waits until it listens.
    pub fn start(id: u32, addr: SocketAddr, dir: &Path, zookeeper: SocketAddr) -> BrokerProcess {
        Self::start_with(id, addr, dir, zookeeper, &[])
    }

    /// Like [`BrokerProcess::start`], with extra command-line arguments.
    pub fn start_with(
        id: u32,
        addr: SocketAddr,
        dir: &Path,
        zookeeper: SocketAddr,
        extra: &[&str],
    ) -> BrokerProcess {
        let mut args: Vec<String> = vec![
            "broker".into(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            addr.to_string(),
            "--zookeeper".into(),
            zookeeper.to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let (child, _) = spawn_ready(&args, "listening on");
        BrokerProcess {
            child,
            id,
            addr,
            dir: dir.to_path_buf(),
            zookeeper,
        }
    }

    /// SIGKILL, then start it again on the same address and data.
    pub fn crash_and_restart(mut self) -> BrokerProcess {
        let _ = self.child.kill();
        let _ = self.child.wait();
        BrokerProcess::start(self.id, self.addr, &self.dir, self.zookeeper)
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal by PID (`TERM`, `KILL`, `INT`, `STOP`, `CONT`, `HUP`); a process already gone
/// is no error.
pub fn unsafe_kill(pid: u32, signal: &str) {
    use rustix::process::{kill_process, Pid, Signal};
    let signal = match signal {
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        "INT" => Signal::INT,
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        "HUP" => Signal::HUP,
        other => panic!("unsafe_kill: no signal {other}"),
    };
    let pid = Pid::from_raw(pid as i32).expect("a PID above 0");
    let _ = kill_process(pid, signal);
}

/// Runs `pehra ARGS...` to completion (bounded) and returns (exit code, stdout, stderr).
pub fn pehra(args: &[&str]) -> (i32, String, String) {
    let child = Command::new(pehra_program())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("pehra {args:?} did not finish in 30 s"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits for a child to exit (collecting its output), killing it by PID after `limit`.
pub fn wait_bounded(child: Child, limit: Duration) -> Option<std::process::Output> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.ok(),
        Err(_) => {
            unsafe_kill(pid, "KILL");
            None
        }
    }
}

/// Runs `pehra ARGS...` with `input` on standard input (bounded); returns (code, stdout, stderr).
pub fn pehra_with_input(args: &[&str], input: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(pehra_program())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
    });
    let out = wait_bounded(child, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("pehra {args:?} did not finish in 60 s"));
    let _ = writer.join();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A zookeeper and brokers `1..=n` on loopback, real processes in one temporary
/// directory; every process is SIGKILLed (by PID) on drop, brokers first.
pub struct TestCluster {
    pub dir: TempDir,
    pub zookeeper: Option<Zookeeper>,
    pub zk_addr: SocketAddr,
    pub brokers: std::collections::BTreeMap<u32, BrokerProcess>,
    /// Each broker's address, kept across restarts.
    pub addrs: std::collections::BTreeMap<u32, SocketAddr>,
    broker_flags: Vec<String>,
    per_broker: std::collections::BTreeMap<u32, Vec<String>>,
}

/// How to start a [`TestCluster`].
pub struct TestClusterBuilder {
    dir: TempDir,
    zookeeper_flags: Vec<String>,
    broker_flags: Vec<String>,
    per_broker: std::collections::BTreeMap<u32, Vec<String>>,
}

impl TestClusterBuilder {
    /// The cluster's directory, there already (for files the flags name).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Extra flags of the zookeeper.
    pub fn zookeeper_flags(mut self, flags: &[&str]) -> Self {
        self.zookeeper_flags
            .extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Flags of every broker.
    pub fn broker_flags(mut self, flags: &[&str]) -> Self {
        self.broker_flags
            .extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// More flags for broker `id` only.
    pub fn flags_of(mut self, id: u32, flags: &[&str]) -> Self {
        self.per_broker
            .entry(id)
            .or_default()
            .extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Starts the zookeeper, then brokers `1..=n`, each once it says it listens.
    pub fn start(self, n: u32) -> TestCluster {
        let dir = self.dir;
        let zk_addr: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let flags: Vec<&str> = self.zookeeper_flags.iter().map(String::as_str).collect();
        let zookeeper = Zookeeper::start_with(&dir.path().join("zookeeper"), zk_addr, &flags);
        let mut cluster = TestCluster {
            dir,
            zookeeper: Some(zookeeper),
            zk_addr,
            brokers: Default::default(),
            addrs: Default::default(),
            broker_flags: self.broker_flags,
            per_broker: self.per_broker,
        };
        for id in 1..=n {
            cluster.start_broker(id);
        }
        cluster
    }
}

impl TestCluster {
    /// A cluster called `name` (its directory's name).
    pub fn builder(name: &str) -> TestClusterBuilder {
        TestClusterBuilder {
            dir: TempDir::new(name),
            zookeeper_flags: Vec::new(),
            broker_flags: Vec::new(),
            per_broker: Default::default(),
        }
    }

    /// Starts broker `id` (again: on the same address and data).
    pub fn start_broker(&mut self, id: u32) {
        let addr = *self
            .addrs
            .entry(id)
            .or_insert_with(|| format!("127.0.0.1:{}", free_udp_port()).parse().unwrap());
        let mut flags: Vec<&str> = self.broker_flags.iter().map(String::as_str).collect();
        if let Some(extra) = self.per_broker.get(&id) {
            flags.extend(extra.iter().map(String::as_str));
        }
        let data = self.dir.path().join(format!("broker-{id}"));
        let broker = BrokerProcess::start_with(id, addr, &data, self.zk_addr, &flags);
        self.brokers.insert(id, broker);
    }

    /// SIGKILLs broker `id` (a crash).
    pub fn kill_broker(&mut self, id: u32) {
        if let Some(mut broker) = self.brokers.remove(&id) {
            let _ = broker.child.kill();
            let _ = broker.child.wait();
        }
    }

    /// Broker `id`'s address.
    pub fn addr(&self, id: u32) -> SocketAddr {
        self.addrs[&id]
    }

    /// Broker `id`'s PID.
    pub fn pid(&self, id: u32) -> u32 {
        self.brokers[&id].child.id()
    }

    /// A zookeeper client without a session.
    pub async fn zk(&self) -> pehra_zookeeper::Client {
        pehra_zookeeper::Client::without_session(
            self.zk_addr,
            pehra_zookeeper::ClientOptions::default().coap,
        )
        .await
        .unwrap()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.brokers.clear();
        self.zookeeper.take();
    }
}
