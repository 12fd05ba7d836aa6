//! Log output for the binary: tracing-subscriber at the configured level and format, on stderr.

// The binary's edge: reads RUST_LOG and writes stderr (seam rule, clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogLevel};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level` (per-module filters).
pub fn init(level: LogLevel, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},ractor=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
