//! `pehra keys` from the command line: a keys directory's files, what servers are
//! given after add, revoke and rotate, and the permissions of everything written.

mod common;

use common::{pehra, TempDir};
use pehra_shared::security::credentials::Credentials;
use pehra_shared::security::{broker_kid, kid, pairwise_secret, zookeeper_kid, Role};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let (code, stdout, stderr) = pehra(args);
    assert_eq!(code, 0, "pehra {args:?}: {stderr}");
    stdout
}

#[track_caller]
fn fails(args: &[&str]) -> String {
    let (code, stdout, stderr) = pehra(args);
    assert_eq!(code, 1, "pehra {args:?} should fail: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

const SERVERS: [&str; 4] = ["zookeeper", "broker-1", "broker-2", "broker-3"];

/// Every server's peers: server name → (peer name → secret).
fn peers(dir: &Path) -> BTreeMap<String, BTreeMap<String, [u8; 32]>> {
    SERVERS
        .iter()
        .map(|server| {
            let creds = Credentials::load(dir.join(format!("{server}.cred"))).unwrap();
            let table = creds.key_table().expect("a server's file has peers");
            let peers = table
                .iter()
                .map(|p| (p.identity.name.clone(), p.secret))
                .collect();
            (server.to_string(), peers)
        })
        .collect()
}

fn server_kid(server: &str) -> Vec<u8> {
    match server.strip_prefix("broker-") {
        Some(id) => broker_kid(id.parse().unwrap()),
        None => zookeeper_kid(),
    }
}

#[test]
fn init_add_revoke_rotate_list() {
    let tmp = TempDir::new("keys");
    let dir = tmp.path().join("keys");
    let d = dir.to_str().unwrap();

    let out = ok(&[
        "keys",
        "init",
        d,
        "--clients",
        "alice,bob",
        "--devices",
        "sensor-1",
    ]);
    assert!(
        out.contains("copy broker-2.cred to broker 2's machine and restart it"),
        "{out}"
    );
    assert!(
        out.contains("zookeeper.cred to the zookeeper's machine"),
        "{out}"
    );
    assert_eq!(mode(&dir), 0o700);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "admin.cred",
            "alice.cred",
            "bob.cred",
            "broker-1.cred",
            "broker-2.cred",
            "broker-3.cred",
            "registry.json",
            "sensor-1.cred",
            "zookeeper.cred"
        ]
    );
    for name in &names {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    assert!(fails(&["keys", "init", d]).contains("already a keys directory"));

    // Every server holds, for every other identity, what that identity derives for it.
    let alice = Credentials::load(dir.join("alice.cred")).unwrap();
    assert_eq!(alice.identity().kid, kid(Role::Client, 1));
    assert!(alice.key_table().is_none());
    let before = peers(&dir);
    for (server, peers) in &before {
        assert_eq!(peers.len(), 7, "{server}: everyone but itself");
        assert!(!peers.contains_key(server));
        assert_eq!(peers["alice"], alice.secret_for(&server_kid(server)));
    }
    let b2 = Credentials::load(dir.join("broker-2.cred")).unwrap();
    assert_eq!(
        before["zookeeper"]["broker-2"],
        pairwise_secret(b2.identity_key(), &zookeeper_kid())
    );

    // add
    let out = ok(&["keys", "add", d, "carol", "--role", "client"]);
    assert!(out.contains("added client carol (key ID 0203)"), "{out}");
    assert!(
        out.contains("copy carol.cred to where client carol runs"),
        "{out}"
    );
    let carol = Credentials::load(dir.join("carol.cred")).unwrap();
    assert_eq!(mode(&dir.join("carol.cred")), 0o600);
    let after_add = peers(&dir);
    for (server, peers) in &after_add {
        assert_eq!(peers["carol"], carol.secret_for(&server_kid(server)));
        assert_eq!(peers.len(), 8);
    }
    ok(&["keys", "add", d, "broker-4", "--role", "broker"]);
    assert_eq!(
        Credentials::load(dir.join("broker-4.cred"))
            .unwrap()
            .key_table()
            .unwrap()
            .len(),
        9
    );
    assert!(fails(&["keys", "add", d, "carol", "--role", "device"]).contains("taken"));
    assert!(fails(&["keys", "add", d, "b5", "--role", "broker"]).contains("broker-N"));
    // a bad argument is clap's usage error (exit 2)
    let (code, _, stderr) = pehra(&["keys", "add", d, "x", "--role", "root"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown role \"root\""), "{stderr}");

    // revoke: bob disappears from every server's peers, his file is gone
    let out = ok(&["keys", "revoke", d, "bob"]);
    assert!(out.contains("revoked client bob"), "{out}");
    assert!(out.contains("broker-3.cred"), "{out}");
    assert!(
        !out.contains("alice.cred"),
        "only the servers' files change: {out}"
    );
    assert!(!dir.join("bob.cred").exists());
    let after_revoke = peers(&dir);
    for (server, peers) in &after_revoke {
        assert!(!peers.contains_key("bob"), "{server} still has bob");
        assert!(peers.contains_key("alice"));
    }
    assert!(fails(&["keys", "revoke", d, "bob"]).contains("bob is revoked"));
    assert!(fails(&["keys", "rotate", d, "nobody"]).contains("no identity named"));
    assert!(fails(&["keys", "add", d, "bob", "--role", "client"]).contains("revoked"));

    // rotate: alice's secrets change on every server, everyone else's stay
    let out = ok(&["keys", "rotate", d, "alice"]);
    assert!(out.contains("new identity key for client alice"), "{out}");
    let alice2 = Credentials::load(dir.join("alice.cred")).unwrap();
    assert_ne!(alice2.identity_key(), alice.identity_key());
    assert_eq!(alice2.identity(), alice.identity());
    let after_rotate = peers(&dir);
    for (server, peers) in &after_rotate {
        assert_ne!(peers["alice"], after_revoke[server]["alice"], "{server}");
        assert_eq!(peers["alice"], alice2.secret_for(&server_kid(server)));
        for (name, secret) in peers {
            if name != "alice" {
                assert_eq!(*secret, after_revoke[server][name], "{server}: {name}");
            }
        }
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }

    // list: everyone, no secrets
    let out = ok(&["keys", "list", d]);
    assert!(out.contains("revoked"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("broker-2") && l.contains("0102")),
        "{out}"
    );
    let registry = std::fs::read_to_string(dir.join("registry.json")).unwrap();
    let key_hex = |c: &Credentials| {
        c.identity_key()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert!(registry.contains(&key_hex(&alice2)));
    assert!(!out.contains(&key_hex(&alice2)));
    assert!(!out.contains(&key_hex(&carol)));

    // not a keys directory
    let e = fails(&["keys", "list", tmp.path().to_str().unwrap()]);
    assert!(e.contains("is not a keys directory"), "{e}");
}

#[test]
fn a_readable_credential_file_is_refused() {
    let tmp = TempDir::new("keys-perms");
    let dir = tmp.path().join("k");
    ok(&["keys", "init", dir.to_str().unwrap(), "--brokers", "1"]);
    let path = dir.join("client.cred");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Credentials::load(&path).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
}

#[test]
fn acl_show_and_check() {
    let out = ok(&["acl", "show"]);
    assert!(out.contains("allow role:broker znode:/brokers/ids/{id} create,write,delete"));
    let out = ok(&[
        "acl",
        "check",
        "broker-2",
        "--role",
        "broker",
        "znode:/brokers/ids/2",
        "create",
    ]);
    assert!(out.starts_with("allowed"), "{out}");
    let (code, out, _) = pehra(&[
        "acl",
        "check",
        "alice",
        "--role",
        "client",
        "znode:/brokers/ids/1",
        "write",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        out.trim(),
        "denied: client alice may not write /brokers/ids/1: no rule allows it"
    );

    let tmp = TempDir::new("acl-file");
    let file = tmp.path().join("acl.json");
    std::fs::write(
        &file,
        r#"{"rules": ["deny name:alice topic:secret.* all"]}"#,
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out, _) = pehra(&[
        "acl",
        "--file",
        f,
        "check",
        "alice",
        "--role",
        "client",
        "topic:secret.x",
        "consume",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("denied by rule"), "{out}");
    ok(&[
        "acl",
        "--file",
        f,
        "check",
        "alice",
        "--role",
        "client",
        "topic:public",
        "consume",
    ]);
    std::fs::write(&file, r#"{"rules": ["allow any topic:x read"]}"#).unwrap();
    let e = fails(&["acl", "--file", f, "show"]);
    assert!(
        e.contains("rules[0]: read is not an action on topics"),
        "{e}"
    );
}
