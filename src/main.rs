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

/// Runs a node. Each start-up error is reported once: a configuration error on stderr (there is no
/// logger before the configuration), anything later as one error log line.
fn serve(config: Option<std::path::PathBuf>) -> ExitCode {
    // No argument: ./config.yaml, written with defaults on first run.
    let (path, create) = match config {
        Some(path) => (path, false),
        None => ("config.yaml".into(), true),
    };
    let loaded = match Config::load(&path, create) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("kvs: configuration error: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    let config = loaded.config;
    kvs::telemetry::init(config.log_level, config.log_format);
    if loaded.created {
        tracing::info!(path = %loaded.path.display(), "wrote the default configuration");
    }
    if loaded.node_id_from_host {
        tracing::warn!(
            node_id = %config.node_id,
            config = %loaded.path.display(),
            "node_id is not set, so it is the host name: set it, or two nodes on this host \
             will share one id"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kvs::host::server::run(config, &loaded.path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
