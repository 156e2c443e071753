//! Builds the runtime library (release) and embeds it in `ftail`, so that
//! an `ftail` installed on its own (`cargo install`) can still preload it:
//! `ftail record` writes the embedded copy to the user's cache directory
//! when no runtime library sits next to the binary.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let runtime = manifest.join("../ftail-runtime");
    let abi = manifest.join("../ftail-abi");
    for dir in [
        runtime.join("src"),
        runtime.join("Cargo.toml"),
        abi.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out.join("runtime-build");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // A separate target directory, so the outer build's lock is not
    // needed; no clippy driver (under `cargo clippy`), which lints the
    // runtime on its own.
    let status = Command::new(cargo)
        .args(["build", "--release", "--lib", "--manifest-path"])
        .arg(runtime.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .status()
        .expect("running cargo to build the runtime library");
    assert!(status.success(), "building the runtime library failed");
    let built = target_dir.join("release/libftail_runtime.so");
    std::fs::copy(&built, out.join("libftail_runtime.so"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
}
