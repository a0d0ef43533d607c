//! Configuration files: `pehra zookeeper|broker --config FILE`, flags over the file, and
//! `pehra config check`.

mod common;

use common::{free_udp_port, pehra, pehra_with_input, spawn_ready, TempDir};
use std::process::Child;

/// A process killed (by PID) and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_cluster_runs_from_a_config_file_and_flags_override_it() {
    let dir = TempDir::new("config-file");
    let zk_port = free_udp_port();
    let file_port = free_udp_port(); // the file's broker port, overridden by --listen
    let broker_port = free_udp_port();
    let file = dir.path().join("pehra.toml");
    std::fs::write(
        &file,
        format!(
            "[zookeeper]\nlisten = \"127.0.0.1:{zk_port}\"\ndata-dir = {zk_dir:?}\n\
             min-session-timeout-ms = 300\n\n\
             [broker]\nid = 7\nlisten = \"127.0.0.1:{file_port}\"\nzookeeper = \"127.0.0.1:{zk_port}\"\n\
             data-dir = {broker_dir:?}\nsegment-mib = 1\n",
            zk_dir = dir.path().join("zk"),
            broker_dir = dir.path().join("broker"),
        ),
    )
    .unwrap();
    let config = file.to_str().unwrap().to_string();
    let (zookeeper, line) = spawn_ready(
        &["zookeeper".into(), "--config".into(), config.clone()],
        "listening on",
    );
    let _zookeeper = Killed(zookeeper);
    assert!(line.contains(&format!("127.0.0.1:{zk_port}")), "{line}");
    let (broker, line) = spawn_ready(
        &[
            "broker".into(),
            "--config".into(),
            config,
            "--listen".into(),
            format!("127.0.0.1:{broker_port}"),
        ],
        "listening on",
    );
    let _broker = Killed(broker);
    assert!(
        line.contains(&format!("127.0.0.1:{broker_port}")) && line.contains("broker 7"),
        "the flag's port, the file's id: {line}"
    );

    let zk = format!("127.0.0.1:{zk_port}");
    let (code, _, err) = pehra(&[
        "topic",
        "create",
        "t",
        "-p",
        "1",
        "--replication-factor",
        "1",
        "--zookeeper",
        &zk,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = pehra_with_input(&["produce", "t", "--zookeeper", &zk], b"from a file\n");
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = pehra(&["consume", "t", "--from-beginning", "--zookeeper", &zk]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("from a file"), "{out}");
}

#[test]
fn a_bad_file_is_one_line_with_its_line_number_and_exit_code_1() {
    let dir = TempDir::new("config-bad");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[broker]\nid = 1\n\nretention-hourz = 24\n").unwrap();
    let path = file.display();
    let expected = format!(
        "pehra: {path}:4: [broker] unknown key `retention-hourz` (the keys are the flags of \
         `pehra broker --help`, without their dashes)\n"
    );
    let (code, out, err) = pehra(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", expected.as_str())
    );
    // The server refuses it the same way, before starting.
    let (code, _, err) = pehra(&["broker", "--config", file.to_str().unwrap()]);
    assert_eq!((code, err.as_str()), (1, expected.as_str()));

    // A file without the command's table is a mistake, not an empty configuration.
    std::fs::write(&file, "[broker]\nid = 1\n").unwrap();
    let (code, _, err) = pehra(&["zookeeper", "--config", file.to_str().unwrap()]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            format!(
                "pehra: {path}: no [zookeeper] table: the settings of `pehra zookeeper` go there\n"
            )
            .as_str()
        )
    );

    std::fs::write(&file, "[zookeeper]\nlisten = \"127.0.0.1:2181\n").unwrap();
    let (code, _, err) = pehra(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&format!("pehra: {path}:2: invalid TOML: ")) && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn the_documented_example_checks() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pehra.toml.example");
    let (code, out, err) = pehra(&["config", "check", example]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok ([zookeeper] "), "{out}");
}
