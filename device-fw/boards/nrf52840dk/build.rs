use std::{env, fs, path::PathBuf};

include!("../device_keys.rs");

fn main() {
    // memory.x on the linker's search path (cortex-m-rt's link.x includes it).
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    // The device's credentials (PEHRA_DEVICE_CREDENTIALS), compiled in.
    write_device_keys(&out, "");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    // The network settings are read with `option_env!` (src/settings.rs): rebuild when
    // they change.
    for v in [
        "PEHRA_GATEWAY",
        "PEHRA_IPV6_ADDR",
        "PEHRA_IPV6_ROUTER",
        "PEHRA_PAN_ID",
        "PEHRA_CHANNEL",
        "PEHRA_INTERVAL_S",
        "PEHRA_TOPIC",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
}
