// The device's OSCORE identity, compiled in: `include!`d by each board's build.rs.
//
// PEHRA_DEVICE_CREDENTIALS names the device's credential file, `NAME.cred` as
// `pehra keys init DIR --devices NAME` (or `pehra keys add DIR NAME --role device`) wrote
// it: `{"name", "role": "device", "kid", "identity_key"}` (hex); or, for an EDHOC
// identity (`pehra keys add DIR NAME --role device --edhoc`), `"edhoc": {"private_key",
// "cred"}` and `"edhoc_peers": [{"kid", "cred"}, ...]` instead of `identity_key` (the
// board must be built with its `edhoc` feature). build.rs turns it into
// `OUT_DIR/device_keys.rs`:
//
//     pub const NAME: &str;          // the device's name (its routes: /dev/NAME/...)
//     pub const KID: &[u8];          // its OSCORE key ID
//     pub const KEY: [u8; 32];       // its identity key (zero for an EDHOC identity)
//     pub const EDHOC_KEY: Option<([u8; 32], &[u8])>;  // EDHOC: private key and CCS
//     pub const EDHOC_SERVERS: &[(&[u8], &[u8])];     // EDHOC: servers' key IDs and CCS
//     pub const PROVISIONED: bool;   // false: no file given
//
// Without the variable the firmware is built *unprovisioned*: the same OSCORE code, with
// key ID `03` and an all-zero key that no cluster knows, so every request is refused
// (a cargo warning says so); the size figures are those of a real build.
// PEHRA_DEVICE_NAME, if set, must agree with the file's name.

fn write_device_keys(out: &std::path::Path, default_name: &str) {
    println!("cargo:rerun-if-env-changed=PEHRA_DEVICE_CREDENTIALS");
    println!("cargo:rerun-if-env-changed=PEHRA_DEVICE_NAME");
    let env_name = std::env::var("PEHRA_DEVICE_NAME")
        .ok()
        .filter(|n| !n.is_empty());
    let (name, kid, key, edhoc, provisioned) = match std::env::var("PEHRA_DEVICE_CREDENTIALS") {
        Ok(path) if !path.is_empty() => {
            println!("cargo:rerun-if-changed={path}");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("PEHRA_DEVICE_CREDENTIALS={path}: {e}"));
            let field = |f: &str| {
                json_string(&text, f).unwrap_or_else(|| {
                    panic!("{path}: no \"{f}\" (a credential file from `pehra keys`?)")
                })
            };
            if field("role") != "device" {
                panic!(
                    "{path}: role {:?}, not a device's credentials",
                    field("role")
                );
            }
            let name = field("name");
            if let Some(n) = &env_name {
                if *n != name {
                    panic!("PEHRA_DEVICE_NAME={n} but {path} is device {name}'s credentials");
                }
            }
            let kid = hex(&field("kid")).unwrap_or_else(|| panic!("{path}: kid is not hex"));
            if let Some(edhoc) = edhoc_identity(&text, &path) {
                (name, kid, vec![0; 32], Some(edhoc), true)
            } else {
                let key = hex(&field("identity_key"))
                    .filter(|k| k.len() == 32)
                    .unwrap_or_else(|| panic!("{path}: identity_key is not 32 bytes of hex"));
                (name, kid, key, None, true)
            }
        }
        _ => {
            println!(
                "cargo:warning=unprovisioned firmware: no PEHRA_DEVICE_CREDENTIALS (a NAME.cred from `pehra keys`): every cluster will refuse it"
            );
            let name = env_name.unwrap_or_else(|| default_name.to_string());
            (name, vec![0x03], vec![0; 32], None, false)
        }
    };
    let (edhoc_key, edhoc_servers) = match edhoc {
        Some((private, ccs, servers)) => {
            let servers: Vec<String> = servers
                .iter()
                .map(|(kid, ccs)| format!("(&{kid:?}, &{ccs:?})"))
                .collect();
            (
                format!("Some(({private:?}, &{ccs:?}))"),
                format!("&[{}]", servers.join(", ")),
            )
        }
        None => ("None".to_string(), "&[]".to_string()),
    };
    let code = format!(
        "/// The device's name.\npub const NAME: &str = {name:?};\n\
         /// Its OSCORE key ID.\npub const KID: &[u8] = &{kid:?};\n\
         /// Its identity key.\npub const KEY: [u8; 32] = {key:?};\n\
         /// An EDHOC identity's private key and CCS.\n\
         #[allow(dead_code)]\npub const EDHOC_KEY: Option<([u8; 32], &[u8])> = {edhoc_key};\n\
         /// An EDHOC identity's servers: key ID and CCS.\n\
         #[allow(dead_code)]\npub const EDHOC_SERVERS: &[(&[u8], &[u8])] = {edhoc_servers};\n\
         /// Whether a credential file was given.\npub const PROVISIONED: bool = {provisioned};\n"
    );
    std::fs::write(out.join("device_keys.rs"), code).unwrap();
}

/// An EDHOC identity's private key, CCS and servers (key ID, CCS) from its credential
/// file, `None` if the file is not an EDHOC identity's. Panics (a build error) if it is
/// one but the board is built without its `edhoc` feature, or a value is not hex.
#[allow(clippy::type_complexity)]
fn edhoc_identity(text: &str, path: &str) -> Option<(Vec<u8>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)> {
    let at = text.find("\"edhoc\"")?;
    if std::env::var_os("CARGO_FEATURE_EDHOC").is_none() {
        panic!("{path} is an EDHOC identity's: build the board with --features edhoc (or give a pre-shared identity from `pehra keys add … --role device`)");
    }
    let bad = |what: &str| -> ! { panic!("{path}: {what} is not hex") };
    let object = &text[at..at + text[at..].find('}').unwrap_or_else(|| bad("edhoc"))];
    let private = hex(&json_string(object, "private_key").unwrap_or_else(|| bad("edhoc.private_key")))
        .filter(|k| k.len() == 32)
        .unwrap_or_else(|| bad("edhoc.private_key"));
    let ccs = hex(&json_string(object, "cred").unwrap_or_else(|| bad("edhoc.cred")))
        .unwrap_or_else(|| bad("edhoc.cred"));
    let mut servers = Vec::new();
    if let Some(peers) = text.find("\"edhoc_peers\"") {
        let end = peers + text[peers..].find(']').unwrap_or_else(|| bad("edhoc_peers"));
        let mut rest = &text[peers..end];
        while let Some(open) = rest.find('{') {
            let close = open + rest[open..].find('}').unwrap_or_else(|| bad("edhoc_peers"));
            let peer = &rest[open..close];
            let kid = json_string(peer, "kid").and_then(|k| hex(&k));
            let cred = json_string(peer, "cred").and_then(|c| hex(&c));
            match (kid, cred) {
                (Some(kid), Some(cred)) => servers.push((kid, cred)),
                _ => bad("an edhoc_peers entry"),
            }
            rest = &rest[close..];
        }
    }
    Some((private, ccs, servers))
}

/// The string value of `"field": "..."` in a flat JSON object (what `pehra keys` writes:
/// no escapes in names, kids or keys).
fn json_string(text: &str, field: &str) -> Option<String> {
    let at = text.find(&format!("\"{field}\""))? + field.len() + 2;
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
