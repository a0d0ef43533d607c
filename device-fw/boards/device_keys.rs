// The device's OSCORE identity, compiled in: `include!`d by each board's build.rs.
//
// PEHRA_DEVICE_CREDENTIALS names the device's credential file, `NAME.cred` as
// `pehra keys init DIR --devices NAME` (or `pehra keys add DIR NAME --role device`) wrote
// it: `{"name", "role": "device", "kid", "identity_key"}` (hex). build.rs turns it into
// `OUT_DIR/device_keys.rs`:
//
//     pub const NAME: &str;          // the device's name (its routes: /dev/NAME/...)
//     pub const KID: &[u8];          // its OSCORE key ID
//     pub const KEY: [u8; 32];       // its identity key
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
    let (name, kid, key, provisioned) = match std::env::var("PEHRA_DEVICE_CREDENTIALS") {
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
            let key = hex(&field("identity_key"))
                .filter(|k| k.len() == 32)
                .unwrap_or_else(|| panic!("{path}: identity_key is not 32 bytes of hex"));
            (name, kid, key, true)
        }
        _ => {
            println!(
                "cargo:warning=unprovisioned firmware: no PEHRA_DEVICE_CREDENTIALS (a NAME.cred from `pehra keys`): every cluster will refuse it"
            );
            let name = env_name.unwrap_or_else(|| default_name.to_string());
            (name, vec![0x03], vec![0; 32], false)
        }
    };
    let code = format!(
        "/// The device's name.\npub const NAME: &str = {name:?};\n\
         /// Its OSCORE key ID.\npub const KID: &[u8] = &{kid:?};\n\
         /// Its identity key.\npub const KEY: [u8; 32] = {key:?};\n\
         /// Whether a credential file was given.\npub const PROVISIONED: bool = {provisioned};\n"
    );
    std::fs::write(out.join("device_keys.rs"), code).unwrap();
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
