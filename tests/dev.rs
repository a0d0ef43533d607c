//! `pehra dev`, the main job (the README's first command): a zookeeper, three brokers and
//! simulated devices on loopback, a demo producer and consumer, the live view; it stops
//! by itself after `--duration` and leaves no process behind.

mod common;

use common::{free_udp_port, free_udp_ports, pehra, wait_bounded, TempDir};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn the_main_job_runs_a_sleeping_cluster_with_devices_and_stops_cleanly() {
    let dir = TempDir::new("dev");
    let data = dir.path().join("data");
    let zk_port = free_udp_port().to_string();
    let broker_port = free_udp_ports(3).to_string();
    let (code, out, err) = pehra(&[
        "dev",
        "--duration",
        "20",
        "--devices",
        "2",
        "--data-dir",
        data.to_str().unwrap(),
        "--zookeeper-port",
        &zk_port,
        "--broker-port",
        &broker_port,
        "--rate",
        "100",
        "--burst-s",
        "3",
        "--pause-s",
        "30",
        "--idle-before-sleep-ms",
        "1000",
    ]);
    let all = format!("{out}{err}").replace('\r', "\n");
    assert_eq!(code, 0, "{all}");
    // The live view: every broker alive, the burst produced and consumed in full, no
    // failed send, devices publishing.
    let last = all
        .lines()
        .rfind(|l| l.contains("brokers ") && l.contains("produced"))
        .unwrap_or_else(|| panic!("no live line:\n{all}"));
    let number_after = |name: &str| -> u64 {
        let at = last
            .find(name)
            .unwrap_or_else(|| panic!("{name} in {last}"))
            + name.len();
        last[at..]
            .split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {last}"))
    };
    assert!(last.contains("brokers 3/3 alive"), "{last}");
    let produced = number_after("produced ");
    assert!(produced >= 100, "{last}");
    assert_eq!(number_after("consumed "), produced, "{last}");
    assert_eq!(number_after("failed sends "), 0, "{last}");
    assert!(number_after("readings ") >= 1, "{last}");
    // After the burst the brokers fell asleep (PEHRA), as the view says.
    assert!(all.contains("fell asleep"), "{all}");
    assert!(all.contains("pehra dev: stopped"), "{all}");
    // It said where to scrape each process: its CoAP port number, over TCP.
    for port in [zk_port.clone(), broker_port.clone()] {
        let scrape = format!("metrics http://127.0.0.1:{port}/metrics");
        assert!(all.contains(&scrape), "{scrape} not said:\n{all}");
    }
    // Secure by default: it made keys, told where the client's are, and every process
    // spoke OSCORE (each server stored its OSCORE sequence ceiling after the Echo round
    // trips of its clients' first requests).
    let client_cred = data.join("keys/client.cred");
    assert!(
        all.contains(&format!("PEHRA_CREDENTIALS={}", client_cred.display())),
        "{all}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&client_cred)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "credentials readable by others: {mode:o}");
    for server in ["zookeeper", "broker-1", "broker-2", "broker-3"] {
        assert!(
            data.join(server).join("oscore-ceiling").exists(),
            "{server} never protected an answer"
        );
    }
    let left = processes_naming(data.to_str().unwrap());
    assert!(left.is_empty(), "still running: {left:?}");
}

#[test]
fn ctrl_c_in_a_terminal_stops_the_cluster_in_order() {
    // A terminal's Ctrl-C sends SIGINT to its whole foreground process group. `pehra dev`
    // must stop its children itself, the zookeeper last: no broker may find the
    // zookeeper gone in the middle of its controlled shutdown, and none may need a kill.
    let dir = TempDir::new("dev-ctrl-c");
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pehra"))
        .args(["dev", "--rate", "50", "--devices", "1"])
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--zookeeper-port", &free_udp_port().to_string()])
        .args(["--broker-port", &free_udp_ports(3).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = child.id();
    let (chunks, received) = mpsc::channel::<String>();
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            if chunks
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    // Until EOF, or `until` holds, or 30 s passed; returns everything read so far.
    let mut all = String::new();
    let read_until = |all: &mut String, until: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !until(all) {
            match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(chunk) => all.push_str(&chunk),
                Err(_) => break,
            }
        }
    };
    // Running: the live line is up.
    read_until(&mut all, &|all| all.contains("] brokers "));
    assert!(all.contains("] brokers "), "no live line:\n{all}");
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(group as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    read_until(&mut all, &|_| false); // to EOF
                                      // Bounded: a Ctrl-C that `pehra dev` missed once left this test waiting for ever.
    let status = wait_bounded(child, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("pehra dev did not stop within 60 s of Ctrl-C:\n{all}"))
        .status;
    let all = all.replace('\r', "\n");
    assert!(status.success(), "{status:?}\n{all}");
    assert!(all.contains("pehra dev: stopped"), "{all}");
    assert!(
        !all.contains("did not stop"),
        "a child had to be killed:\n{all}"
    );
    // In order: the devices, the brokers (the last started first), the zookeeper last.
    let order = [
        "the simulated devices stopped",
        "broker 3 stopped",
        "broker 2 stopped",
        "broker 1 stopped",
        "zookeeper stopped",
    ]
    .map(|line| {
        all.find(line)
            .unwrap_or_else(|| panic!("no {line:?}:\n{all}"))
    });
    assert!(order.is_sorted(), "stopped out of order:\n{all}");
    for id in 1..=3 {
        let log = std::fs::read_to_string(data.join(format!("logs/broker-{id}.log"))).unwrap();
        assert!(log.contains("leaving the cluster"), "broker {id}:\n{log}");
        assert!(
            !log.contains("did not answer") && !log.contains("no answer"),
            "broker {id} lost the zookeeper while leaving:\n{log}"
        );
    }
    let left = processes_naming(data.to_str().unwrap());
    assert!(left.is_empty(), "still running: {left:?}");
}

/// The command lines of the processes that name `dir` (what `pehra dev` started there).
fn processes_naming(dir: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.ok()?.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(dir).then_some(cmdline)
        })
        .collect()
}

/// The PIDs of the processes whose parent is `parent` (from /proc/PID/stat).
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "PID (COMM) STATE PPID ...": COMM may hold spaces, so split after its ')'.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

#[test]
fn a_killed_pehra_dev_takes_its_children_with_it() {
    // SIGKILL gives `pehra dev` no chance to stop anything: the kernel must
    // (PR_SET_PDEATHSIG), or its zookeeper and brokers would hold the ports forever.
    let dir = TempDir::new("dev-sigkill");
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pehra"))
        .args(["dev", "--brokers", "2", "--rate", "20", "--devices", "1"])
        .args(["--data-dir", data.to_str().unwrap()])
        .args(["--zookeeper-port", &free_udp_port().to_string()])
        .args(["--broker-port", &free_udp_ports(2).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        let mut seen = false;
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            all.extend_from_slice(&buf[..n]);
            if !seen && String::from_utf8_lossy(&all).contains("] brokers ") {
                seen = true;
                let _ = tx.send(Ok(()));
            }
        }
        // Its stderr closed: say what it printed (a failure to start shows here).
        let _ = tx.send(Err(String::from_utf8_lossy(&all).into_owned()));
    });
    // Running, devices included: the live line is up.
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(())) => {}
        Ok(Err(all)) => panic!("pehra dev ended before its live line:\n{all}"),
        Err(e) => panic!("pehra dev shows no live line in 60 s: {e}"),
    }
    let children = children_of(child.id());
    assert_eq!(
        children.len(),
        4,
        "zookeeper, 2 brokers, devices: {children:?}"
    );
    // A pidfd per child, opened before the kill: readable once that process has exited
    // (an event to wait for, and immune to PID reuse).
    let pidfds: Vec<_> = children
        .iter()
        .map(|&pid| {
            let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
            (
                pid,
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap(),
            )
        })
        .collect();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let timeout = rustix::event::Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    let left: Vec<_> = pidfds
        .iter()
        .filter(|(_, fd)| {
            let mut poll = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
            rustix::event::poll(&mut poll, Some(&timeout)).unwrap() == 0
        })
        .map(|(pid, _)| *pid)
        .collect();
    for pid in &left {
        let _ = rustix::process::kill_process(*pid, rustix::process::Signal::KILL);
        // clean up
    }
    assert!(
        left.is_empty(),
        "still running 10 s after pehra dev was killed: {left:?}"
    );
}

#[test]
fn a_port_in_use_is_reported_at_once_with_its_holder() {
    // What a killed `pehra dev` of old left behind: its zookeeper holding the port.
    let dir = TempDir::new("dev-port-taken");
    let port = free_udp_port();
    let zookeeper = common::Zookeeper::start(
        &dir.path().join("zk"),
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    let holder = zookeeper.child.id();
    let (code, _, err) = pehra(&[
        "dev",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--zookeeper-port",
        &port.to_string(),
        "--broker-port",
        &free_udp_ports(3).to_string(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "pehra: 127.0.0.1:{port} is in use by pid {holder} (pehra zookeeper) — a previous \
             `pehra dev`? stop it with `kill {holder}`"
        )
    );
    // A broker port held by something else (this test) is named too.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = socket.local_addr().unwrap().port();
    let (code, _, err) = pehra(&[
        "dev",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--zookeeper-port",
        &free_udp_port().to_string(),
        "--broker-port",
        &taken.to_string(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.trim_end().starts_with(&format!(
            "pehra: 127.0.0.1:{taken} is in use by pid {} (",
            std::process::id()
        )) && err.trim_end().lines().count() == 1,
        "{err}"
    );
}

/// `pehra dev` running with its stderr read line by line (the live view redraws with
/// `\r`); killed when dropped (its children die with it: PR_SET_PDEATHSIG).
struct RunningDev {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl RunningDev {
    fn start(args: &[&str]) -> RunningDev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pehra"))
            .arg("dev")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|&b| b == b'\r' || b == b'\n') {
                    let line = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..=end);
                    if !line.trim().is_empty() && tx.send(line).is_err() {
                        return;
                    }
                }
            }
        });
        RunningDev { child, lines }
    }

    /// The first live line (`[ Ns] brokers ...`) for which `want` holds, within `limit`;
    /// panics with the last lines seen otherwise.
    fn live_line(&self, limit: Duration, what: &str, want: impl Fn(&LiveLine) -> bool) -> LiveLine {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(live) = LiveLine::parse(&line) {
                        if want(&live) {
                            return live;
                        }
                    }
                    seen.push(line);
                    if seen.len() > 20 {
                        seen.remove(0);
                    }
                }
                Err(e) => panic!(
                    "no live line with {what} ({e}); the last lines:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for RunningDev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a live line of `pehra dev` says.
#[derive(Debug)]
struct LiveLine {
    alive: (u32, u32),
    /// Partition → leader broker id.
    leaders: Vec<(u32, u32)>,
    produced: u64,
    consumed: u64,
}

impl LiveLine {
    fn parse(line: &str) -> Option<LiveLine> {
        let after = |name: &str| -> Option<&str> {
            let at = line.find(name)? + name.len();
            Some(&line[at..])
        };
        let number = |name: &str| -> Option<u64> {
            after(name)?
                .split(|c: char| !c.is_ascii_digit())
                .find(|s| !s.is_empty())?
                .parse()
                .ok()
        };
        let (alive, of) = after("] brokers ")?
            .split_whitespace()
            .next()?
            .split_once('/')?;
        let leaders = after("leaders ")?
            .split('|')
            .next()?
            .split_whitespace()
            .filter_map(|pair| {
                let (p, l) = pair.split_once('→')?;
                Some((p.parse().ok()?, l.parse().ok()?))
            })
            .collect();
        Some(LiveLine {
            alive: (alive.parse().ok()?, of.parse().ok()?),
            leaders,
            produced: number("produced ")?,
            consumed: number("consumed ")?,
        })
    }
}

/// The PID of `pehra dev`'s child whose command line has `--listen ADDR`.
fn child_listening_on(parent: u32, addr: &str) -> u32 {
    children_of(parent)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .is_ok_and(|c| c.contains(&format!("--listen {addr} ")))
        })
        .unwrap_or_else(|| panic!("no child of pehra dev listens on {addr}"))
}

#[test]
fn an_ensemble_under_pehra_dev_outlives_its_leader_and_then_a_broker() {
    // `pehra dev --zookeepers 3`: the brokers, the demo producer and consumer are given
    // every member. SIGKILL of the ensemble's leader: the sessions move to the others (no
    // broker is lost) and records keep flowing. Then SIGKILL of broker 1: the controller,
    // now on the new leader, moves its partitions, and records keep flowing.
    let dir = TempDir::new("dev-ensemble");
    let data = dir.path().join("data");
    let zk_port = free_udp_ports(3);
    let members: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", zk_port + i))
        .collect();
    let broker_port = free_udp_ports(3);
    let dev = RunningDev::start(&[
        "--zookeepers",
        "3",
        "--rate",
        "50",
        "--pause-s",
        "0",
        "--data-dir",
        data.to_str().unwrap(),
        "--zookeeper-port",
        &zk_port.to_string(),
        "--broker-port",
        &broker_port.to_string(),
    ]);
    let running = dev.live_line(Duration::from_secs(60), "3 brokers, records flowing", |l| {
        l.alive == (3, 3) && l.produced >= 50 && l.leaders.len() == 3
    });
    // The ensemble's leader, as `pehra cluster status` shows it (GET /ensemble is
    // cluster:admin: the admin's credentials).
    let admin = data.join("keys/admin.cred");
    let (code, out, err) = pehra(&[
        "cluster",
        "status",
        "--zookeeper",
        &members.join(","),
        "--credentials",
        admin.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let leader = out
        .lines()
        .find_map(|l| {
            let cols: Vec<_> = l.split_whitespace().collect();
            (cols.get(2) == Some(&"leader")).then(|| cols[1].to_string())
        })
        .unwrap_or_else(|| panic!("no leader in:\n{out}"));
    assert!(members.contains(&leader), "{leader} in {members:?}");
    let kill = |pid: u32| {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
    };
    kill(child_listening_on(dev.child.id(), &leader));
    let after_zk = dev.live_line(
        Duration::from_secs(60),
        "100 more records, all consumed, every broker alive",
        |l| l.produced >= running.produced + 100 && l.consumed == l.produced && l.alive == (3, 3),
    );
    kill(child_listening_on(
        dev.child.id(),
        &format!("127.0.0.1:{broker_port}"),
    ));
    dev.live_line(
        Duration::from_secs(90),
        "broker 1 gone, its partitions led by others, 100 more records, all consumed",
        |l| {
            l.alive == (2, 3)
                && l.leaders.len() == 3
                && l.leaders.iter().all(|&(_, b)| b != 1)
                && l.produced >= after_zk.produced + 100
                && l.consumed == l.produced
        },
    );
}
