//! Node configuration: KVS's YAML keys and defaults, plus what kvs adds, validated at load.
//!
//! Unknown keys and bad values are refused with a message that names the key: a typo in a config
//! file must never silently fall back to a default.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::ClusterSecret;
use crate::limits::{NODE_ID_BYTES_MAX, VALUE_BYTES_MAX};

/// Why a configuration could not be used. Each message names the file and the key once.
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
    /// A key in a file is unknown, has a value of the wrong type or an unusable value, or the
    /// YAML itself does not parse.
    #[error("{path}: {key}: {message}")]
    Key {
        /// The config file.
        path: PathBuf,
        /// The offending key (`.` for the document itself).
        key: String,
        /// What was wrong, without the key.
        message: String,
    },
    /// A value is not usable (a configuration built in code, not read from a file).
    #[error("{key}: {message}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// Longest accepted `sync_interval` and `catchup_interval` (s): a day.
pub const INTERVAL_S_MAX: u64 = 24 * 3600;
/// Longest accepted `tombstone_grace_hours`: ten years.
pub const GRACE_HOURS_MAX: u64 = 10 * 365 * 24;
/// Longest accepted `throttle_delay_ms` and `fetch_delay_ms`: a minute.
pub const DELAY_MS_MAX: u64 = 60_000;

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
    /// Pause between anti-entropy rounds (s; KVS's default is 300, kvs's LAN default 10).
    pub sync_interval: u64,
    /// Pause between catch-up syncs when behind (s).
    pub catchup_interval: u64,
    /// Oldest data a bootstrapping node fetches (h).
    pub bootstrap_max_age_hours: u64,
    /// kvs: how long a tombstone is kept before garbage collection (h).
    pub tombstone_grace_hours: u64,
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
    /// kvs: most HTTP connections open at once (peers' frame connections have as many places of
    /// their own); a few more wait for one to close, beyond that they are answered 503.
    pub max_connections: usize,
    /// KVS: the cluster's shared secret, 64 hex digits (256 bits); empty: read from
    /// `data_dir/cluster_secret`, or generated there by a node without seed nodes.
    pub cluster_secret: String,
    /// kvs: secrets still accepted from peers while a new `cluster_secret` is rolled out.
    pub cluster_secrets_previous: Vec<String>,
    /// kvs: how long a dead or departed member stays in `/members/` (s).
    pub member_reap_after_s: u64,
    /// kvs: the IP address peers reach this node at; empty means `bind_address` (which must then
    /// not be `0.0.0.0` in a cluster).
    pub advertise_address: String,
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
            sync_interval: 10,
            catchup_interval: 1,
            bootstrap_max_age_hours: 720,
            tombstone_grace_hours: 168,
            throttle_delay_ms: 10,
            fetch_delay_ms: 5,
            log_format: LogFormat::Text,
            max_value_bytes: 1024 * 1024,
            shutdown_timeout_ms: 10_000,
            max_connections: 1024,
            cluster_secret: String::new(),
            cluster_secrets_previous: Vec::new(),
            member_reap_after_s: 600,
            advertise_address: String::new(),
        }
    }
}

/// The generated file's groups: each key with its meaning and unit (the default is appended).
pub(crate) const KEY_DOCS: &[(&str, &[(&str, &str)])] = &[
    (
        "node",
        &[
            ("node_id", "unique id of this node in its cluster; two nodes on one host need different ids"),
            ("bind_address", "IP address the HTTP server binds; \"0.0.0.0\" for every interface"),
            ("advertise_address", "IP address peers reach this node at; \"\" means bind_address (required in a cluster when that is 0.0.0.0)"),
            ("port", "HTTP port; 0 picks a free one, logged at start"),
            ("data_dir", "directory of the database and its write-ahead log, relative to the working directory"),
            ("read_only", "refuse client writes with 403; replication is still applied"),
        ],
    ),
    (
        "cluster",
        &[
            ("seed_nodes", "HTTP host:port of nodes to join through (gossip uses the same port number over UDP); [] starts a new cluster"),
            ("cluster_secret", "64 hex digits shared by every node; \"\" reads data_dir/cluster_secret, which a node without seed_nodes generates"),
            ("cluster_secrets_previous", "secrets still accepted from peers while a new cluster_secret is rolled out"),
            ("member_reap_after_s", "how long a dead or departed member stays listed in /members/, seconds"),
            ("gossip_interval_min", "KVS's shortest pause between gossip rounds, seconds; not used: membership probes every second (SWIM)"),
            ("gossip_interval_max", "KVS's longest pause between gossip rounds, seconds; not used, as above"),
        ],
    ),
    (
        "sync",
        &[
            ("sync_interval", "pause between anti-entropy rounds with a random peer, seconds (KVS: 300)"),
            ("catchup_interval", "pause between anti-entropy rounds while they still find differences, seconds (KVS: 120)"),
            ("bootstrap_max_age_hours", "oldest data a new node pulls from the cluster when it bootstraps, hours"),
            ("tombstone_grace_hours", "how long a delete's tombstone is kept before garbage collection, hours; a node away longer must not bring deleted keys back (README, \"Deletes\")"),
            ("throttle_delay_ms", "pause before each request of an anti-entropy round after its first, milliseconds (KVS: 100)"),
            ("fetch_delay_ms", "pause between fetches of records: a round's batches of 256 keys, a bootstrap's pages, milliseconds (KVS: 50)"),
        ],
    ),
    (
        "limits",
        &[
            ("max_value_bytes", "largest accepted value, bytes; larger ones get 413"),
            ("max_connections", "most HTTP connections open at once (peers get as many of their own); 64 more wait, beyond that 503"),
            ("shutdown_timeout_ms", "how long a stop waits for in-flight work, milliseconds"),
        ],
    ),
    (
        "logging",
        &[
            ("log_level", "trace, debug (adds one line per request), info, warn or error; RUST_LOG overrides"),
            ("log_format", "text, or json for one object per line (on stderr)"),
        ],
    ),
];

fn lookup<'a>(values: &'a [(String, String)], key: &str) -> &'a str {
    let (_, value) = values
        .iter()
        .find(|(k, _)| k == key)
        .expect("every documented key is a config key");
    value
}

/// A configuration read from a file, with what the node should say about where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// The file, as an absolute path (logged at start).
    pub path: PathBuf,
    /// Whether the file was just written with the defaults.
    pub created: bool,
    /// Whether `node_id` was missing and defaulted to the host name (two nodes on one host
    /// would then share an id).
    pub node_id_from_host: bool,
}

impl Config {
    /// Parses and validates YAML text; `origin` names the source in error messages.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        Ok(Config::parse(text, origin)?.0)
    }

    /// Parses and validates YAML text; also says whether `node_id` was given.
    fn parse(text: &str, origin: &Path) -> Result<(Config, bool), ConfigError> {
        let in_file = |key: String, message: String| ConfigError::Key {
            path: origin.to_owned(),
            key,
            message,
        };
        let (config, node_id_given) = if text.trim().is_empty() {
            (Config::default(), false)
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
                let key = e.path().to_string();
                let message = e.into_inner().to_string();
                // serde_yaml_ng starts its message with the key too: say it once.
                let message = match message.strip_prefix(&format!("{key}: ")) {
                    Some(rest) => rest.to_owned(),
                    None => message,
                };
                in_file(key, message)
            })?;
            // It parsed as a `Config`, so it is a mapping (or null): look for the key itself.
            let value: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(text).map_err(|e| in_file(".".into(), e.to_string()))?;
            (config, value.get("node_id").is_some())
        };
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, message } => in_file(key.into(), message),
            other => other,
        })?;
        Ok((config, node_id_given))
    }

    /// Loads `path`. With `create` set, a missing file is first written with the defaults, as
    /// the commented template of [`Config::commented_yaml`].
    // The binary's edge reads its config file here, before any actor runs (seam rule, clippy.toml).
    #[allow(clippy::disallowed_methods)]
    pub fn load(path: &Path, create: bool) -> Result<Loaded, ConfigError> {
        let created = create && !path.exists();
        if created {
            let text = Config::default().commented_yaml();
            std::fs::write(path, text).map_err(|source| ConfigError::Write {
                path: path.to_owned(),
                source,
            })?;
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let (config, node_id_given) = Config::parse(&text, path)?;
        Ok(Loaded {
            config,
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
            created,
            node_id_from_host: !node_id_given,
        })
    }

    /// The configuration as YAML, every key present.
    pub fn to_yaml(&self) -> String {
        // A struct of strings, numbers and plain enums always serializes.
        serde_yaml_ng::to_string(self).expect("config serializes")
    }

    /// The configuration as the YAML file a new user reads: every key, grouped, each after one
    /// comment line giving its meaning, unit and default. Parses back to `self`.
    pub fn commented_yaml(&self) -> String {
        let defaults = Config::default().yaml_values();
        let values = self.yaml_values();
        // Every key documented exactly once, and nothing documented that is not a key.
        let mut documented: Vec<&str> = KEY_DOCS
            .iter()
            .flat_map(|(_, keys)| keys.iter().map(|(key, _)| *key))
            .collect();
        documented.sort_unstable();
        let mut keys: Vec<&str> = values.iter().map(|(key, _)| key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            documented, keys,
            "KEY_DOCS must document every config key once"
        );

        let mut out = String::from(
            "# kvs node configuration. Every key is optional: a missing key takes its default.\n\
             # Unknown keys and bad values stop the node with a message naming the key.\n",
        );
        for (group, keys) in KEY_DOCS {
            out.push_str(&format!("\n# --- {group} ---\n"));
            for (key, meaning) in *keys {
                let default = if *key == "node_id" {
                    "the host name".to_owned()
                } else {
                    lookup(&defaults, key).to_owned()
                };
                out.push_str(&format!("# {meaning} (default: {default})\n"));
                out.push_str(&format!("{key}: {}\n", lookup(&values, key)));
            }
        }
        out
    }

    /// Each key with its value as one line of YAML: JSON's notation (`"text"`, `[..]`), which
    /// YAML reads as it is, so that lists and strings stay on the key's line.
    fn yaml_values(&self) -> Vec<(String, String)> {
        let serde_json::Value::Object(map) = serde_json::to_value(self).expect("config serializes")
        else {
            unreachable!("a struct serializes to an object")
        };
        map.into_iter()
            .map(|(key, value)| (key, value.to_string()))
            .collect()
    }

    /// The IP address peers reach this node at: `advertise_address`, else `bind_address`.
    pub fn advertise_ip(&self) -> Result<IpAddr, ConfigError> {
        if self.advertise_address.is_empty() {
            return self.bind_ip();
        }
        self.advertise_address
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "advertise_address",
                message: format!("{:?} is not an IP address", self.advertise_address),
            })
    }

    /// Anti-entropy's pace, from the sync keys.
    pub fn pace(&self) -> crate::sync::Pace {
        crate::sync::Pace::new(
            Duration::from_secs(self.sync_interval),
            Duration::from_secs(self.catchup_interval),
            Duration::from_millis(self.throttle_delay_ms),
            Duration::from_millis(self.fetch_delay_ms),
        )
    }

    /// How long tombstones are kept (`tombstone_grace_hours`).
    pub fn tombstone_grace(&self) -> Duration {
        Duration::from_secs(self.tombstone_grace_hours * 3600)
    }

    /// How far back a new node's bootstrap pulls (`bootstrap_max_age_hours`).
    pub fn bootstrap_max_age(&self) -> Duration {
        Duration::from_secs(self.bootstrap_max_age_hours.saturating_mul(3600))
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
        if !self.advertise_address.is_empty() {
            match self.advertise_address.parse::<IpAddr>() {
                Ok(ip) if !ip.is_unspecified() => {}
                _ => {
                    return invalid(
                        "advertise_address",
                        format!(
                            "{:?} is not an IP address peers can reach",
                            self.advertise_address
                        ),
                    )
                }
            }
        }
        for seed in &self.seed_nodes {
            let port = seed
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(p))) if !host.is_empty() && p != 0) {
                return invalid("seed_nodes", format!("{seed:?} is not host:port"));
            }
        }
        if !self.cluster_secret.is_empty() {
            if let Err(e) = ClusterSecret::from_hex(&self.cluster_secret) {
                return invalid("cluster_secret", e.to_string());
            }
        }
        for previous in &self.cluster_secrets_previous {
            if let Err(e) = ClusterSecret::from_hex(previous) {
                return invalid("cluster_secrets_previous", e.to_string());
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
            ("member_reap_after_s", self.member_reap_after_s),
            ("tombstone_grace_hours", self.tombstone_grace_hours),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        for (key, value, max) in [
            ("sync_interval", self.sync_interval, INTERVAL_S_MAX),
            ("catchup_interval", self.catchup_interval, INTERVAL_S_MAX),
            ("throttle_delay_ms", self.throttle_delay_ms, DELAY_MS_MAX),
            ("fetch_delay_ms", self.fetch_delay_ms, DELAY_MS_MAX),
            (
                "tombstone_grace_hours",
                self.tombstone_grace_hours,
                GRACE_HOURS_MAX,
            ),
        ] {
            if value > max {
                return invalid(key, format!("must be at most {max}"));
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
        // LAN-fast where KVS waits minutes.
        assert_eq!((c.sync_interval, c.catchup_interval), (10, 1));
        assert_eq!(c.bootstrap_max_age_hours, 720);
        assert_eq!((c.throttle_delay_ms, c.fetch_delay_ms), (10, 5));
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
        assert_eq!(c.sync_interval, 10, "missing keys take defaults");
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
        assert!(msg("sync_interval: 86401\n").contains("sync_interval: must be at most 86400"));
        assert!(msg("throttle_delay_ms: 60001\n").contains("throttle_delay_ms"));
        assert!(msg("fetch_delay_ms: 18446744073709551615\n").contains("fetch_delay_ms"));
        assert!(msg("max_connections: 0\n").contains("max_connections"));
        assert!(msg("max_value_bytes: 0\n").contains("max_value_bytes"));
        assert!(msg("node_id: \"\"\n").contains("node_id"));
        assert!(msg("cluster_secret: abc\n").contains("cluster_secret: must be 64"));
        assert!(msg("advertise_address: 0.0.0.0\n").contains("advertise_address"));
        assert!(msg("advertise_address: host\n").contains("advertise_address"));
        assert!(parse("advertise_address: 10.1.2.3\n").is_ok());
        assert!(msg("cluster_secrets_previous: [\"x\"]\n").contains("cluster_secrets_previous"));
        assert!(parse(&format!("cluster_secret: \"{}\"\n", "0f".repeat(32))).is_ok());
        let long_id = "n".repeat(NODE_ID_BYTES_MAX + 1);
        assert!(msg(&format!("node_id: {long_id}\n")).contains("node_id"));
        assert!(parse(&format!("node_id: {}\n", &long_id[1..])).is_ok());
        let over = VALUE_BYTES_MAX + 1;
        assert!(msg(&format!("max_value_bytes: {over}\n")).contains("max_value_bytes"));
        assert!(parse(&format!("max_value_bytes: {VALUE_BYTES_MAX}\n")).is_ok());
        assert!(msg("- just\n- a list\n").contains("test.yaml"));
    }

    #[test]
    fn errors_name_the_file_and_the_key_once() {
        let msg = |text: &str| parse(text).unwrap_err().to_string();
        let m = msg("port: eighty\n");
        assert!(m.starts_with("test.yaml: port: invalid type"), "{m}");
        assert_eq!(m.matches("port").count(), 1, "{m}");
        let m = msg("bind_address: nowhere\n");
        assert_eq!(
            m,
            "test.yaml: bind_address: \"nowhere\" is not an IP address"
        );
        let m = msg("prot: 1\n");
        assert!(
            m.starts_with("test.yaml: prot: unknown field `prot`"),
            "{m}"
        );
    }

    #[test]
    fn the_commented_file_documents_every_key_once_and_parses_back() {
        let config = Config::default();
        let text = config.commented_yaml();
        assert_eq!(parse(&text).unwrap(), config);
        let lines: Vec<&str> = text.lines().collect();
        for (key, _) in config.yaml_values() {
            let at: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].starts_with(&format!("{key}: ")))
                .collect();
            assert_eq!(at.len(), 1, "{key} once:\n{text}");
            let comment = lines[at[0] - 1];
            assert!(
                comment.starts_with("# ") && comment.contains("(default: "),
                "{key}: {comment:?}"
            );
        }
        for group in ["node", "cluster", "sync", "limits", "logging"] {
            assert!(text.contains(&format!("# --- {group} ---")), "{group}");
        }
        // Non-default values (a list, a quoted string) round-trip too.
        let custom =
            parse("seed_nodes: [\"127.0.0.1:8081\", \"h:2\"]\nnode_id: \"a: b\"\n").unwrap();
        assert_eq!(parse(&custom.commented_yaml()).unwrap(), custom);
    }

    #[test]
    fn load_says_whether_node_id_came_from_the_host_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.yaml");
        std::fs::write(&path, "port: 1\n").unwrap();
        assert!(Config::load(&path, false).unwrap().node_id_from_host);
        std::fs::write(&path, "node_id: x\n").unwrap();
        let loaded = Config::load(&path, false).unwrap();
        assert!(!loaded.node_id_from_host && !loaded.created);
        assert!(loaded.path.is_absolute());
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
        assert!(created.created && !created.node_id_from_host);
        assert_eq!(created.config.port, 8080);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, Config::default().commented_yaml());
        let again = Config::load(&path, true).unwrap();
        assert_eq!(again.config, created.config);
        assert!(!again.created);
    }
}
