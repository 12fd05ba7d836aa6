//! One violation of each `clippy.toml` entry the build at hand can name. `tokio` is madsim-tokio,
//! as in the root crate: real tokio in the normal build, madsim's `time`, `task`, `net` and `signal`
//! under `--cfg madsim`, so the same line breaks a `tokio::` entry in one build and a `madsim::`
//! entry in the other. Nothing here runs: clippy only has to see it.

use std::path::Path;
use std::time::Duration;

/// The clock and timers.
pub async fn clock_and_timers(d: Duration) {
    let _ = std::time::Instant::now();
    let _ = std::time::SystemTime::now();
    std::thread::sleep(d);
    tokio::time::sleep(d).await;
    tokio::time::sleep_until(tokio::time::Instant::now()).await;
    let _ = tokio::time::timeout(d, async {}).await;
    tokio::time::interval(d).tick().await;
    tokio::time::interval_at(tokio::time::Instant::now(), d)
        .tick()
        .await;
}

/// Clock and timer types.
pub fn clock_types(
    _: &std::time::Instant,
    _: &std::time::SystemTime,
    _: &tokio::time::Instant,
    _: &tokio::time::Sleep,
    _: &tokio::time::Interval,
) {
}

/// Threads and tasks.
#[allow(deprecated)] // madsim's spawn_blocking: "not allowed in simulation"
pub async fn tasks() {
    let _ = std::thread::spawn(|| ());
    std::thread::scope(|_| ());
    let _ = tokio::spawn(async {}).await;
    let _ = tokio::task::spawn_blocking(|| ()).await;
    let _ = tokio::task::spawn_local(async {}).await;
}

/// Thread and runtime types.
pub fn task_types(
    _: &std::thread::Builder,
    _: &tokio::runtime::Runtime,
    _: &tokio::runtime::Builder,
    _: &tokio::runtime::Handle,
) {
}

/// What a text scanner misses: the paths are only whole after `use`.
pub async fn imported(d: Duration) {
    use std::{env, fs};
    use tokio::{spawn, time};

    let _ = spawn(async {}).await;
    time::sleep(d).await;
    let _ = fs::read("x");
    let _ = env::var("X");
}

/// OS randomness.
pub fn randomness() {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    let mut raw = [std::mem::MaybeUninit::uninit(); 8];
    let _ = getrandom::fill_uninit(&mut raw);
    let _ = getrandom::u32();
    let _ = getrandom::u64();
}

/// Name resolution.
pub async fn sockets() {
    let _ = tokio::net::lookup_host("localhost:80").await;
}

/// Socket types.
#[allow(clippy::too_many_arguments)]
pub fn socket_types(
    _: &std::net::TcpStream,
    _: &std::net::TcpListener,
    _: &std::net::UdpSocket,
    _: &tokio::net::TcpStream,
    _: &tokio::net::TcpListener,
    _: &tokio::net::UdpSocket,
    _: &tokio::net::UnixStream,
    _: &tokio::net::UnixListener,
    _: &tokio::net::UnixDatagram,
) {
}

/// The environment.
#[allow(deprecated)] // home_dir
pub fn environment() {
    let _ = std::env::var("X");
    let _ = std::env::var_os("X");
    let _ = std::env::vars();
    let _ = std::env::vars_os();
    let _ = std::env::args();
    let _ = std::env::args_os();
    let _ = std::env::current_dir();
    let _ = std::env::set_current_dir("x");
    let _ = std::env::temp_dir();
    let _ = std::env::home_dir();
    std::env::set_var("X", "1");
    std::env::remove_var("X");
}

/// Ends the process.
pub fn exit() -> ! {
    std::process::exit(1)
}

/// Ends the process harder.
pub fn abort() -> ! {
    std::process::abort()
}

/// Signals and processes.
pub async fn signals(_: &std::process::Command) {
    let _ = tokio::signal::ctrl_c().await;
}

/// The file system.
pub fn files(permissions: std::fs::Permissions) {
    let _ = std::fs::read("x");
    let _ = std::fs::read_to_string("x");
    let _ = std::fs::write("x", b"");
    let _ = std::fs::read_dir("x");
    let _ = std::fs::create_dir("x");
    let _ = std::fs::create_dir_all("x");
    let _ = std::fs::remove_file("x");
    let _ = std::fs::remove_dir("x");
    let _ = std::fs::remove_dir_all("x");
    let _ = std::fs::rename("x", "y");
    let _ = std::fs::copy("x", "y");
    let _ = std::fs::hard_link("x", "y");
    let _ = std::fs::metadata("x");
    let _ = std::fs::symlink_metadata("x");
    let _ = std::fs::canonicalize("x");
    let _ = std::fs::read_link("x");
    let _ = std::fs::set_permissions("x", permissions);
    let _ = std::fs::exists("x");
    let path = Path::new("x");
    let _ = path.exists();
    let _ = path.try_exists();
    let _ = path.is_file();
    let _ = path.is_dir();
    let _ = path.is_symlink();
    let _ = path.metadata();
    let _ = path.symlink_metadata();
    let _ = path.canonicalize();
    let _ = path.read_dir();
    let _ = path.read_link();
}

/// File types.
pub fn file_types(_: &std::fs::File, _: &std::fs::OpenOptions, _: &std::fs::DirBuilder) {}

/// What real tokio has and madsim-tokio does not simulate.
#[cfg(not(madsim))]
pub mod tokio_only {
    /// Tokio-only timers and tasks.
    pub async fn calls() {
        let _ = tokio::time::timeout_at(tokio::time::Instant::now(), async {}).await;
        tokio::task::block_in_place(|| ());
    }

    /// Tokio-only types.
    pub fn types(
        _: &tokio::task::JoinSet<()>,
        _: &tokio::task::LocalSet,
        _: &tokio::net::TcpSocket,
    ) {
    }
}

/// What only the simulator build's graph holds, named directly.
#[cfg(madsim)]
pub mod madsim_only {
    /// madsim's own files and randomness, and rand's and getrandom's older majors.
    pub async fn calls() {
        let _ = madsim::fs::read("x").await;
        let _ = madsim::fs::metadata("x").await;
        let _ = madsim::rand::thread_rng();
        let _: u8 = madsim::rand::random();
        let _ = rand::thread_rng();
        let _: u8 = rand::random();
        let mut bytes = [0u8; 8];
        let _ = getrandom02::getrandom(&mut bytes);
    }

    /// madsim's own types, and rand's.
    pub fn types(
        _: &madsim::task::Builder<'_>,
        _: &madsim::net::Endpoint,
        _: &madsim::fs::File,
        _: &madsim::rand::GlobalRng,
        _: &rand::rngs::ThreadRng,
        _: &rand_core::OsRng,
    ) {
    }
}
