//! The command line: `kvs [CONFIG]` runs a node; `kvs put|get|delete|members|health` talks to one.

// The binary's edge: a client on stdin, the environment and sockets, not an actor (seam rule,
// clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters left as they are in a key path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// kvs: a clustered, eventually consistent key-value store.
#[derive(Debug, Parser)]
#[command(name = "kvs", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Config file for a node. Without it, ./config.yaml is used (written with defaults if missing).
    pub config: Option<PathBuf>,
    /// A client command instead of running a node.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where the node to talk to is.
#[derive(Debug, Args)]
pub struct Server {
    /// Base URL of a kvs node.
    #[arg(long, env = "KVS_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
}

/// Client commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store a JSON value: `kvs put users/john '{"name":"John"}'` (value from stdin if omitted).
    Put {
        /// Key path, e.g. users/john/profile.
        path: String,
        /// JSON document.
        value: Option<String>,
        /// The node to talk to.
        #[command(flatten)]
        server: Server,
    },
    /// Print the JSON value stored under a key.
    Get {
        /// Key path.
        path: String,
        /// The node to talk to.
        #[command(flatten)]
        server: Server,
    },
    /// Delete a key.
    Delete {
        /// Key path.
        path: String,
        /// The node to talk to.
        #[command(flatten)]
        server: Server,
    },
    /// List the cluster's members.
    Members {
        /// The node to talk to.
        #[command(flatten)]
        server: Server,
    },
    /// Show the node's health.
    Health {
        /// The node to talk to.
        #[command(flatten)]
        server: Server,
    },
}

/// Runs a client command; prints the answer on stdout, errors on stderr.
pub fn run(command: Command) -> ExitCode {
    let outcome = match command {
        Command::Put {
            path,
            value,
            server,
        } => read_value(value).and_then(|v| call(&server, "PUT", &kv_url(&server, &path), Some(v))),
        Command::Get { path, server } => call(&server, "GET", &kv_url(&server, &path), None),
        Command::Delete { path, server } => call(&server, "DELETE", &kv_url(&server, &path), None),
        Command::Members { server } => call(&server, "GET", &url(&server, "/members/"), None),
        Command::Health { server } => call(&server, "GET", &url(&server, "/health"), None),
    };
    match outcome {
        Ok(body) => {
            if !body.is_empty() {
                println!("{body}");
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("kvs: {message}");
            ExitCode::FAILURE
        }
    }
}

fn url(server: &Server, path: &str) -> String {
    format!("{}{path}", server.server.trim_end_matches('/'))
}

/// `/kv/` plus the path with each segment percent-encoded, so spaces or `?` survive the trip.
fn kv_url(server: &Server, path: &str) -> String {
    let encoded: Vec<String> = path
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    url(server, &format!("/kv/{}", encoded.join("/")))
}

fn read_value(value: Option<String>) -> Result<String, String> {
    match value {
        Some(value) => Ok(value),
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("reading the value from stdin: {e}"))?;
            Ok(text)
        }
    }
}

/// Sends one request; a non-2xx answer becomes the server's `error` message with its status.
fn call(server: &Server, method: &str, url: &str, body: Option<String>) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let sent = match (method, body) {
        ("PUT", Some(body)) => agent
            .put(url)
            .header("content-type", "application/json")
            // Lets the node refuse an oversized value (413) before the body is sent, instead of
            // closing the connection under a client still writing it.
            .header("expect", "100-continue")
            .send(body),
        ("DELETE", _) => agent.delete(url).call(),
        _ => agent.get(url).call(),
    };
    let mut response = sent.map_err(|e| format!("cannot reach {}: {e}", server.server))?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading the answer from {}: {e}", server.server))?;
    if status.is_success() {
        return Ok(pretty(&text));
    }
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or(text);
    Err(format!("{message} (HTTP {})", status.as_u16()))
}

fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_are_encoded_per_segment() {
        let server = Server {
            server: "http://h:1/".into(),
        };
        assert_eq!(
            kv_url(&server, "users/john doe/a?b"),
            "http://h:1/kv/users/john%20doe/a%3Fb"
        );
        assert_eq!(kv_url(&server, "a/é"), "http://h:1/kv/a/%C3%A9");
    }

    #[test]
    fn client_commands_and_node_config_parse() {
        let cli = Cli::try_parse_from(["kvs", "put", "a/b", "{}", "--server", "http://x"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Put { .. })));
        let cli = Cli::try_parse_from(["kvs", "node.yaml"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("node.yaml")));
        assert!(cli.command.is_none());
        assert!(Cli::try_parse_from(["kvs", "get"]).is_err());
    }
}
