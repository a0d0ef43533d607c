//! `pehra dev`, the main job (the README's first command): a zookeeper, three brokers and
//! simulated devices on loopback, a demo producer and consumer, the live view; it stops
//! by itself after `--duration` and leaves no process behind.

mod common;

use common::{free_udp_port, free_udp_ports, pehra, TempDir};

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
    // Nothing it started runs on: no process names its data directory.
    let data = data.to_str().unwrap().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.ok()?.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&data).then_some(cmdline)
        })
        .collect();
    assert!(left.is_empty(), "still running: {left:?}");
}
