//! Node configuration: KVS's YAML keys and defaults, plus what kvs adds, validated at load.
//!
//! Unknown keys and bad values are refused with a message that names the key: a typo in a config
//! file must never silently fall back to a default.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::{NODE_ID_BYTES_MAX, VALUE_BYTES_MAX};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The default file could not be written.
    #[error("writing default config to {path}: {source}")]
    Write {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML did not parse, or a key is unknown or has a value of the wrong type.
    #[error("{path}: {key}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The offending key (`.` for the document itself).
        key: String,
        /// What was wrong.
        message: String,
    },
    /// A value parsed but is not usable.
    #[error("{key}: {message}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-batch storage traces.
    Trace,
    /// Diagnostics.
    Debug,
    /// Lifecycle events.
    Info,
    /// Recoverable trouble.
    Warn,
    /// Failures only.
    Error,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        })
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A node's configuration. Every key is optional in the file; missing keys take these defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Unique id of this node in its cluster (default: the host name).
    pub node_id: String,
    /// IP address the HTTP server binds to.
    pub bind_address: String,
    /// HTTP port (0 picks a free port, logged at start).
    pub port: u16,
    /// Directory holding the database file.
    pub data_dir: PathBuf,
    /// `host:port` of nodes to join through; empty means standalone.
    pub seed_nodes: Vec<String>,
    /// Refuse client writes (replication is still applied).
    pub read_only: bool,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Shortest pause between gossip rounds (s).
    pub gossip_interval_min: u64,
    /// Longest pause between gossip rounds (s).
    pub gossip_interval_max: u64,
    /// Pause between regular anti-entropy syncs (s).
    pub sync_interval: u64,
    /// Pause between catch-up syncs when behind (s).
    pub catchup_interval: u64,
    /// Oldest data a bootstrapping node fetches (h).
    pub bootstrap_max_age_hours: u64,
    /// Pause between sync requests (ms).
    pub throttle_delay_ms: u64,
    /// Pause between fetches of single values (ms).
    pub fetch_delay_ms: u64,
    /// kvs: log line format.
    pub log_format: LogFormat,
    /// kvs: largest accepted value in bytes (KVS: 1 MB).
    pub max_value_bytes: usize,
    /// kvs: how long shutdown waits for in-flight work before giving up (ms).
    pub shutdown_timeout_ms: u64,
    /// kvs: most HTTP connections open at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: gethostname::gethostname().to_string_lossy().into_owned(),
            bind_address: "127.0.0.1".into(),
            port: 8080,
            data_dir: PathBuf::from("./data"),
            seed_nodes: Vec::new(),
            read_only: false,
            log_level: LogLevel::Info,
            gossip_interval_min: 60,
            gossip_interval_max: 120,
            sync_interval: 300,
            catchup_interval: 120,
            bootstrap_max_age_hours: 720,
            throttle_delay_ms: 100,
            fetch_delay_ms: 50,
            log_format: LogFormat::Text,
            max_value_bytes: 1024 * 1024,
            shutdown_timeout_ms: 10_000,
            max_connections: 1024,
        }
    }
}

impl Config {
    /// Parses and validates YAML text; `origin` names the source in error messages.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
                path: origin.to_owned(),
                key: e.path().to_string(),
                message: e.into_inner().to_string(),
            })?
        };
        config.validate()?;
        Ok(config)
    }

    /// Loads `path`. With `create` set, a missing file is first written with the defaults.
    // The binary's edge reads its config file here, before any actor runs (seam rule, clippy.toml).
    #[allow(clippy::disallowed_methods)]
    pub fn load(path: &Path, create: bool) -> Result<Config, ConfigError> {
        if create && !path.exists() {
            let text = Config::default().to_yaml();
            std::fs::write(path, text).map_err(|source| ConfigError::Write {
                path: path.to_owned(),
                source,
            })?;
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml(&text, path)
    }

    /// The configuration as YAML, every key present.
    pub fn to_yaml(&self) -> String {
        // A struct of strings, numbers and plain enums always serializes.
        serde_yaml_ng::to_string(self).expect("config serializes")
    }

    /// The address to bind, parsed.
    pub fn bind_ip(&self) -> Result<IpAddr, ConfigError> {
        self.bind_address.parse().map_err(|_| ConfigError::Invalid {
            key: "bind_address",
            message: format!("{:?} is not an IP address", self.bind_address),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.node_id.trim().is_empty() {
            return invalid("node_id", "must not be empty".into());
        }
        if self.node_id.len() > NODE_ID_BYTES_MAX {
            return invalid(
                "node_id",
                format!(
                    "is {} bytes; the limit is {NODE_ID_BYTES_MAX}",
                    self.node_id.len()
                ),
            );
        }
        self.bind_ip()?;
        for seed in &self.seed_nodes {
            let port = seed
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p != 0) {
                return invalid("seed_nodes", format!("{seed:?} is not host:port"));
            }
        }
        if self.gossip_interval_min == 0 {
            return invalid("gossip_interval_min", "must be at least 1".into());
        }
        if self.gossip_interval_max < self.gossip_interval_min {
            return invalid(
                "gossip_interval_max",
                format!(
                    "must be at least gossip_interval_min ({})",
                    self.gossip_interval_min
                ),
            );
        }
        for (key, value) in [
            ("sync_interval", self.sync_interval),
            ("catchup_interval", self.catchup_interval),
            ("bootstrap_max_age_hours", self.bootstrap_max_age_hours),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
            ("max_connections", self.max_connections as u64),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if !(1..=VALUE_BYTES_MAX).contains(&self.max_value_bytes) {
            return invalid(
                "max_value_bytes",
                format!("must be between 1 and {VALUE_BYTES_MAX}"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests may use the OS
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("test.yaml"))
    }

    #[test]
    fn defaults_match_kvs() {
        let c = Config::default();
        assert_eq!((c.bind_address.as_str(), c.port), ("127.0.0.1", 8080));
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.seed_nodes.is_empty() && !c.read_only);
        assert_eq!((c.gossip_interval_min, c.gossip_interval_max), (60, 120));
        assert_eq!((c.sync_interval, c.catchup_interval), (300, 120));
        assert_eq!(c.bootstrap_max_age_hours, 720);
        assert_eq!((c.throttle_delay_ms, c.fetch_delay_ms), (100, 50));
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.max_value_bytes, 1 << 20);
        assert!(!c.node_id.is_empty());
    }

    #[test]
    fn reads_a_kvs_config_file_and_round_trips() {
        let c = parse(
            "node_id: \"node2\"\nport: 8082\nseed_nodes: [\"127.0.0.1:8081\"]\nread_only: true\nlog_level: debug\n",
        )
        .unwrap();
        assert_eq!(c.node_id, "node2");
        assert_eq!(c.port, 8082);
        assert_eq!(c.seed_nodes, vec!["127.0.0.1:8081".to_string()]);
        assert!(c.read_only);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.sync_interval, 300, "missing keys take defaults");
        assert_eq!(parse(&c.to_yaml()).unwrap(), c);
        assert_eq!(parse("").unwrap().port, 8080);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let msg = |text: &str| parse(text).unwrap_err().to_string();
        assert!(
            msg("prot: 8080\n").contains("prot"),
            "{}",
            msg("prot: 8080\n")
        );
        assert!(msg("port: eighty\n").contains("port"));
        assert!(msg("port: 70000\n").contains("port"));
        assert!(msg("read_only: maybe\n").contains("read_only"));
        assert!(msg("log_level: loud\n").contains("log_level"));
        assert!(msg("bind_address: nowhere\n").contains("bind_address"));
        assert!(msg("seed_nodes: [\"nohost\"]\n").contains("seed_nodes"));
        assert!(msg("gossip_interval_min: 10\ngossip_interval_max: 5\n")
            .contains("gossip_interval_max"));
        assert!(msg("sync_interval: 0\n").contains("sync_interval"));
        assert!(msg("max_connections: 0\n").contains("max_connections"));
        assert!(msg("max_value_bytes: 0\n").contains("max_value_bytes"));
        assert!(msg("node_id: \"\"\n").contains("node_id"));
        let long_id = "n".repeat(NODE_ID_BYTES_MAX + 1);
        assert!(msg(&format!("node_id: {long_id}\n")).contains("node_id"));
        assert!(parse(&format!("node_id: {}\n", &long_id[1..])).is_ok());
        let over = VALUE_BYTES_MAX + 1;
        assert!(msg(&format!("max_value_bytes: {over}\n")).contains("max_value_bytes"));
        assert!(parse(&format!("max_value_bytes: {VALUE_BYTES_MAX}\n")).is_ok());
        assert!(msg("- just\n- a list\n").contains("test.yaml"));
    }

    #[test]
    fn load_creates_the_default_file_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        assert!(matches!(
            Config::load(&path, false),
            Err(ConfigError::Read { .. })
        ));
        let created = Config::load(&path, true).unwrap();
        assert_eq!(created.port, 8080);
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "node_id",
            "bind_address",
            "seed_nodes",
            "fetch_delay_ms",
            "log_format",
        ] {
            assert!(
                text.contains(key),
                "{key} missing from the written defaults"
            );
        }
        assert_eq!(Config::load(&path, true).unwrap(), created);
    }
}
