//! Build script shared by every package that links libucp (engine, bench, tests): it makes
//! the binaries load the UCX runtime that `scripts/install-deps` installs, without anyone
//! exporting LD_LIBRARY_PATH.
//!
//! ucx1-sys builds UCX 1.12.1 from source for its headers and links `-lucp` dynamically, so
//! at run time the dynamic loader picks whichever `libucp.so.0` it finds first: Debian's
//! libucx0 (1.13.1, built with assertions, which a stranger's malformed connection request
//! aborts), or under `cargo test`/`cargo run` ucx1-sys' own build directory, which cargo puts
//! on LD_LIBRARY_PATH. A DT_RPATH (not the newer DT_RUNPATH) is searched before
//! LD_LIBRARY_PATH and is also used for the libraries libucp itself loads, so every binary
//! of this workspace gets the installed runtime in every setting: systemd, scripts, tests,
//! bench. Where the directory does not exist the loader falls through to the usual search
//! and the engine's start-up check (`engine::ucx::runtime`) says what was loaded instead.
//! To try another runtime on purpose: LD_PRELOAD its libucm, libucs, libuct and libucp.

fn main() {
    let prefix = std::env::var("SWRING_UCX_PREFIX").unwrap_or_else(|_| "/opt/seaweed-ring/ucx".to_string());
    println!("cargo:rerun-if-env-changed=SWRING_UCX_PREFIX");
    println!("cargo:rerun-if-changed=../engine/ucx_runtime_path.rs");
    println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{prefix}/lib");
    println!("cargo:rustc-env=SWRING_UCX_RUNTIME_DIR={prefix}/lib");
}
