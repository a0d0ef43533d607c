//! A zookeeper ensemble of three real `pehra zookeeper` processes on loopback, for the
//! tests that start, crash, pause and restart its members.

use super::{free_udp_ports, unsafe_kill, TempDir, Zookeeper};
use pehra_shared::coap::Config;
use pehra_zookeeper::ensemble::EnsembleStatus;
use pehra_zookeeper::Client;
use std::net::SocketAddr;

/// Three members on consecutive free ports, data under `dir`.
pub struct Ensemble {
    pub dir: TempDir,
    pub addrs: Vec<SocketAddr>,
    pub members: Vec<Option<Zookeeper>>,
    /// Extra flags of every member.
    pub flags: Vec<String>,
}

impl Ensemble {
    /// Three members with data under a new temporary directory `name`.
    pub fn start(name: &str) -> Ensemble {
        Self::start_with(TempDir::new(name), Vec::new())
    }

    /// Three members with data under `dir`, each started with `flags` too.
    pub fn start_with(dir: TempDir, flags: Vec<String>) -> Ensemble {
        let first = free_udp_ports(3);
        let addrs: Vec<SocketAddr> = (0..3)
            .map(|i| format!("127.0.0.1:{}", first + i).parse().unwrap())
            .collect();
        let mut ensemble = Ensemble {
            dir,
            addrs,
            members: Vec::new(),
            flags,
        };
        for id in 1..=3 {
            let member = ensemble.start_member(id);
            ensemble.members.push(Some(member));
        }
        ensemble
    }

    /// The `--peers` argument: `1=ADDR,2=ADDR,3=ADDR`.
    pub fn peers(&self) -> String {
        self.addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `id` (1-based) on its address and data directory.
    pub fn start_member(&self, id: usize) -> Zookeeper {
        let data = self.dir.path().join(format!("member{id}"));
        let (id, peers) = (id.to_string(), self.peers());
        let mut flags = vec!["--id", &id, "--peers", &peers];
        flags.extend(self.flags.iter().map(String::as_str));
        Zookeeper::start_with(&data, self.addrs[id.parse::<usize>().unwrap() - 1], &flags)
    }

    /// SIGKILL the member at `addr` (a crash).
    pub fn kill(&mut self, addr: SocketAddr) {
        let i = self.addrs.iter().position(|a| *a == addr).unwrap();
        self.members[i].take().expect("running").kill();
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the member at `addr`.
    pub fn signal(&self, addr: SocketAddr, signal: &str) {
        let i = self.addrs.iter().position(|a| *a == addr).unwrap();
        unsafe_kill(
            self.members[i].as_ref().expect("running").child.id(),
            signal,
        );
    }

    /// The running member at `addr`, out of the ensemble's hands.
    pub fn take(&mut self, addr: SocketAddr) -> Zookeeper {
        let i = self.addrs.iter().position(|a| *a == addr).unwrap();
        self.members[i].take().expect("running")
    }

    /// Starts the member at `addr` again, on its own data.
    pub fn restart(&mut self, addr: SocketAddr) {
        let i = self.addrs.iter().position(|a| *a == addr).unwrap();
        self.members[i] = Some(self.start_member(i + 1));
    }
}

/// The status of the member at `addr` (its own view).
pub async fn status_of(addr: SocketAddr) -> EnsembleStatus {
    let client = Client::without_session(addr, Config::default())
        .await
        .unwrap();
    client.ensemble_status().await.unwrap().unwrap()
}

/// The leader's id as the member at `addr` sees it.
pub async fn leader_seen_by(addr: SocketAddr) -> Option<u64> {
    let client = Client::without_session(addr, Config::default())
        .await
        .unwrap();
    client.ensemble_status().await.unwrap().unwrap().leader
}
