//! The `kvs` binary: a node (`kvs [CONFIG]`) or a client (`kvs put|get|delete|members|health`).

// The binary's edge: arguments, environment, runtime and exit code are its to touch (seam rule,
// clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::process::ExitCode;

use kvs::config::Config;

/// mimalloc instead of glibc's malloc: redb allocates and frees a page buffer per page it touches,
/// and under write load glibc's allocator took about a sixth of the node's CPU (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = kvs::cli::parse();
    match cli.command {
        Some(command) => kvs::cli::run(command),
        None => serve(cli.config),
    }
}

fn serve(config: Option<std::path::PathBuf>) -> ExitCode {
    // No argument: ./config.yaml, written with defaults on first run.
    let (path, create) = match config {
        Some(path) => (path, false),
        None => ("config.yaml".into(), true),
    };
    let creating = create && !path.exists();
    let config = match Config::load(&path, create) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kvs: configuration error: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    kvs::telemetry::init(config.log_level, config.log_format);
    if creating {
        tracing::info!(path = %path.display(), "wrote default configuration");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kvs: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kvs::host::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node stopped");
            eprintln!("kvs: {e}");
            ExitCode::FAILURE
        }
    }
}
