//! With feature `defmt`, links defmt's symbol table script (`defmt.x`, which the defmt
//! crate puts on the linker's search path), as esp-hal's `linkall.x` is linked through
//! `.cargo/config.toml`.

include!("../device_keys.rs");

fn main() {
    // The device's credentials (PEHRA_DEVICE_CREDENTIALS), compiled in.
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    write_device_keys(&out, "");
    if std::env::var_os("CARGO_FEATURE_DEFMT").is_some() {
        println!("cargo:rustc-link-arg=-Tdefmt.x");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
