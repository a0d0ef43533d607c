//! The processes `pehra dev` starts: children that die with it, signals by PID, and who
//! holds a UDP port that it needs.

use anyhow::{bail, Result};
use std::net::{SocketAddr, UdpSocket};

/// Makes the child started by `command` die (SIGKILL) when this process dies, however it
/// dies (SIGKILL included): Linux's `PR_SET_PDEATHSIG`, set in the child between fork and
/// exec. The signal is SIGKILL rather than SIGTERM: a parent that died without stopping
/// its children in order leaves nothing to coordinate with, and the servers' data is
/// crash-safe.
///
/// The kernel sends it when the *thread* that forked the child exits, so children must be
/// started from a thread that lives as long as the process: `pehra dev` starts them from
/// its main thread (the runtime's `block_on`) or a runtime worker, never from
/// `spawn_blocking`'s pool, whose idle threads end.
pub fn die_with_parent(command: &mut tokio::process::Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: it makes two system calls (prctl, getppid), and
    // builds an io::Error from an errno, which neither allocates nor locks.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died between fork and prctl: the signal would never come.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(
                    rustix::io::Errno::SRCH.raw_os_error(),
                ));
            }
            Ok(())
        });
    }
}

/// Sends SIGTERM to `pid` (a child that may have exited already: no error then).
pub fn terminate(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Checks that each of `addrs` can be bound (UDP) now; the first that cannot is an error
/// saying what holds it: "127.0.0.1:2181 is in use by pid 1234 (pehra zookeeper) — a
/// previous `pehra dev`? stop it with `kill 1234`".
pub fn check_ports_free(addrs: &[SocketAddr]) -> Result<()> {
    for addr in addrs {
        match UdpSocket::bind(addr) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(in_use_message(*addr)),
            Err(e) => bail!("cannot listen on {addr}: {e}"),
        }
    }
    Ok(())
}

/// The one-line message for a UDP address already bound.
fn in_use_message(addr: SocketAddr) -> String {
    match udp_holder(addr) {
        Some((pid, command)) if command.starts_with("pehra ") => format!(
            "{addr} is in use by pid {pid} ({command}) — a previous `pehra dev`? stop it with `kill {pid}`"
        ),
        Some((pid, command)) => {
            format!("{addr} is in use by pid {pid} ({command}): stop it, or choose another port")
        }
        None => format!(
            "{addr} is in use (by a process this user cannot see): stop it, or choose another port"
        ),
    }
}

/// The PID and the command (program name and first argument) of the process holding the
/// UDP socket bound to `addr` (or to the wildcard address on its port): the socket's
/// inode from /proc/net/udp{,6}, then the process with a descriptor on it.
pub fn udp_holder(addr: SocketAddr) -> Option<(i32, String)> {
    let sockets = procfs::net::udp()
        .unwrap_or_default()
        .into_iter()
        .chain(procfs::net::udp6().unwrap_or_default());
    let inodes: Vec<u64> = sockets
        .filter(|s| {
            s.local_address.port() == addr.port()
                && (s.local_address.ip() == addr.ip() || s.local_address.ip().is_unspecified())
        })
        .map(|s| s.inode)
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for process in procfs::process::all_processes().ok()?.flatten() {
        let Ok(fds) = process.fd() else { continue };
        let holds = fds.flatten().any(|fd| {
            matches!(fd.target, procfs::process::FDTarget::Socket(inode) if inodes.contains(&inode))
        });
        if holds {
            let words = process.cmdline().unwrap_or_default();
            let program = words
                .first()
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                .unwrap_or_else(|| "?".into());
            let command = match words.get(1) {
                Some(first) => format!("{program} {first}"),
                None => program,
            };
            return Some((process.pid, command));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_of_a_port_is_this_process() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let (pid, _) = udp_holder(addr).expect("a holder");
        assert_eq!(pid as u32, std::process::id());
        let error = check_ports_free(&[addr]).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{addr} is in use by pid {pid} (")),
            "{error}"
        );
        drop(socket);
        check_ports_free(&[addr]).unwrap();
    }
}
