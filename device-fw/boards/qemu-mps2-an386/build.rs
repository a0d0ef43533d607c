use std::{env, fs, path::PathBuf};

include!("../device_keys.rs");

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    // cortex-m-rt's `device` feature includes device.x (PROVIDEs for named interrupt
    // handlers); our vector table `__INTERRUPTS` is built in main.rs, so it is empty.
    fs::write(
        out.join("device.x"),
        "/* interrupts: see __INTERRUPTS in src/main.rs */\n",
    )
    .unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    write_device_keys(&out, "qemu-1");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    for v in [
        "PEHRA_GATEWAY_IP",
        "PEHRA_GATEWAY_PORT",
        "PEHRA_CYCLES",
        "PEHRA_GATEWAY_BROKER",
        "PEHRA_ALARM_S",
        "PEHRA_ACKS",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
}
