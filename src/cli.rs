//! The command line: `kvs [CONFIG]` runs a node; `kvs put|get|delete|members|health` talks to one.
//!
//! The client never hangs (a connect timeout and a timeout for the whole exchange), never dumps a
//! page that is not kvs's (a foreign answer is summarized in one line), prints a value as the node
//! stores it, and refuses a value that is not JSON before sending it. Exit codes: 0 done; 1 the
//! request failed, was refused, timed out, or its value is not JSON; 2 the command line is wrong
//! (clap's usage errors, a `--server` that is not an http:// URL, `put` without a value on a
//! terminal). `main.rs` adds 78 for a node's configuration error.

// The binary's edge: a client on stdin, the environment and sockets, not an actor (seam rule,
// clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::limits::VALUE_BYTES_MAX;

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
    /// A name that is not an existing file must have a path separator or a .yaml/.yml extension,
    /// so that a mistyped command is not taken for one.
    pub config: Option<PathBuf>,
    /// A client command instead of running a node.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Parses the process's arguments, exiting with clap's message and code (2) on a usage error.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses `args` (the program name first). A first word that is neither a command nor possibly a
/// config file (see [`may_name_a_config`]) is a mistyped command: clap's own parser would take it
/// for CONFIG, so it is refused here with clap's usage error and "did you mean".
pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cli = Cli::command();
    cli.build();
    if let Some(word) = args.get(1).and_then(|a| a.to_str()) {
        if cli.find_subcommand(word).is_none() && !may_name_a_config(word.as_ref()) {
            return Err(unknown_command(&mut cli, word));
        }
    }
    Cli::try_parse_from(&args)
}

/// Whether `kvs ARG` may be a node on config file ARG (or a flag such as `--help`): an existing
/// file, a path with a separator (`./node1`, `/etc/kvs/a`), a `.yaml`/`.yml` name, or a flag.
fn may_name_a_config(arg: &OsStr) -> bool {
    let text = arg.to_string_lossy();
    let path = Path::new(arg);
    text.starts_with('-')
        || text.chars().any(std::path::is_separator)
        || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
        || path.exists()
}

/// clap's "unrecognized subcommand" error for `word`, suggesting the commands it may be a typo
/// of, or, if none is close, how to name a config file. clap's own rule (Jaro similarity above
/// 0.7, which it still applies to flags) misses one swapped letter in a short name (`gte` is 0.56
/// from `get`), so a command one edit away (insertion, deletion, substitution or swap of
/// neighbours) is suggested too.
fn unknown_command(cli: &mut clap::Command, word: &str) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let mut similar: Vec<(usize, String)> = cli
        .get_subcommands()
        .map(clap::Command::get_name)
        .filter(|name| strsim::jaro(word, name) > 0.7 || strsim::osa_distance(word, name) <= 1)
        .map(|name| (strsim::osa_distance(word, name), name.to_owned()))
        .collect();
    similar.sort();
    let mut error = clap::Error::new(ErrorKind::InvalidSubcommand).with_cmd(cli);
    error.insert(
        ContextKind::InvalidSubcommand,
        ContextValue::String(word.to_owned()),
    );
    if similar.is_empty() {
        error.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![format!(
                "to run a node, give its config file as a path or a .yaml name: 'kvs ./{word}', \
                 'kvs {word}.yaml'"
            )
            .into()]),
        );
    } else {
        error.insert(
            ContextKind::SuggestedSubcommand,
            ContextValue::Strings(similar.into_iter().map(|(_, name)| name).collect()),
        );
    }
    error.insert(
        ContextKind::Usage,
        ContextValue::StyledStr(cli.render_usage()),
    );
    error
}

/// The node to talk to, and how long to wait for it.
#[derive(Debug, Args)]
pub struct Server {
    /// Base URL of a kvs node; http:// is assumed when no scheme is given.
    #[arg(
        long,
        env = "KVS_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = BaseUrl::parse
    )]
    pub server: BaseUrl,
    /// Seconds to wait for the connection to the node to open.
    #[arg(
        long,
        env = "KVS_CONNECT_TIMEOUT",
        value_name = "SECS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub connect_timeout: u64,
    /// Seconds the whole exchange may take: connecting, sending, and the complete answer.
    #[arg(
        long,
        env = "KVS_TIMEOUT",
        value_name = "SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout: u64,
}

/// A node's base URL as `--server` gives it, normalized: a scheme (http:// when none was given)
/// and no trailing slash, so request paths can be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// Normalizes `text`, refusing what is not an http:// URL with a host. https:// is refused
    /// too: nodes serve plain HTTP and this client is built without TLS.
    pub fn parse(text: &str) -> Result<BaseUrl, String> {
        let url = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let uri: ureq::http::Uri = url
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected http://HOST:PORT"))?;
        match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
                return Err("https is not supported: kvs nodes serve plain HTTP; use \
                            http://HOST:PORT"
                    .to_owned())
            }
            scheme => {
                return Err(format!(
                    "unsupported scheme {}; expected http://HOST:PORT",
                    scheme.unwrap_or("(none)")
                ))
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err("no host; expected http://HOST:PORT".to_owned());
        }
        Ok(BaseUrl(url.trim_end_matches('/').to_owned()))
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Client commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store a JSON value: `kvs put users/john '{"name":"John"}'`, or `kvs put users/john - <file`.
    Put {
        /// Key path, e.g. users/john/profile.
        path: String,
        /// JSON document; `-` reads it from stdin, as does leaving it out when stdin is not a
        /// terminal. It is checked to be JSON before it is sent.
        value: Option<String>,
        /// The node to talk to.
        #[command(flatten)]
        server: Server,
    },
    /// Print the JSON value stored under a key, byte for byte as it was stored.
    Get {
        /// Key path.
        path: String,
        /// Indent the value (keys keep their stored order).
        #[arg(long)]
        pretty: bool,
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

/// How a client command that did not succeed ends.
#[derive(Debug)]
enum Failure {
    /// Exit 1 with `kvs: <message>` on stderr.
    Failed(String),
    /// Exit 2 with clap's usage message: the command line lacks something.
    Usage(clap::Error),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Failed(message)
    }
}

/// Runs a client command; prints the answer on stdout, errors on stderr.
pub fn run(command: Command) -> ExitCode {
    match execute(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed(message)) => {
            eprintln!("kvs: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(error)) => error.exit(),
    }
}

/// Runs `command`, printing its answer on stdout.
fn execute(command: Command) -> Result<(), Failure> {
    match command {
        Command::Put {
            path,
            value,
            server,
        } => {
            let value = read_value(value)?;
            check_value(&value)?;
            let ack = call(&server, Method::Put(value), &kv_path(&path))?;
            print(indent(&ack).as_bytes())?;
        }
        Command::Get {
            path,
            pretty,
            server,
        } => {
            let value = call(&server, Method::Get, &kv_path(&path))?;
            if pretty {
                print(indent(&value).as_bytes())?;
            } else {
                print(value.as_bytes())?;
            }
        }
        Command::Delete { path, server } => {
            call(&server, Method::Delete, &kv_path(&path))?;
            print(format!("deleted {path}").as_bytes())?;
        }
        Command::Members { server } => {
            print(indent(&call(&server, Method::Get, "/members/")?).as_bytes())?;
        }
        Command::Health { server } => {
            print(indent(&call(&server, Method::Get, "/health")?).as_bytes())?;
        }
    }
    Ok(())
}

/// Writes `text` on stdout, ending it with a newline if it lacks one (a value stored with its
/// own final newline is not given a second).
fn print(text: &[u8]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(text)
        .and_then(|()| match text.last() {
            Some(b'\n') => Ok(()),
            _ => out.write_all(b"\n"),
        })
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing the answer to stdout: {e}"))
}

/// `/kv/` plus the path with each segment percent-encoded, so spaces or `?` survive the trip.
fn kv_path(path: &str) -> String {
    let encoded: Vec<String> = path
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    format!("/kv/{}", encoded.join("/"))
}

/// The value to store: the argument, or stdin for `-` or for no argument when stdin is not a
/// terminal (`echo '{}' | kvs put k`). With no argument on a terminal, waiting for input nobody
/// knows is expected would look like a hang: that is a usage error at once.
fn read_value(value: Option<String>) -> Result<Vec<u8>, Failure> {
    match value {
        Some(value) if value != "-" => Ok(value.into_bytes()),
        None if std::io::stdin().is_terminal() => Err(Failure::Usage(missing_value())),
        _ => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| format!("reading the value from stdin: {e}"))?;
            Ok(bytes)
        }
    }
}

/// The usage error of `kvs put KEY` on a terminal, with `put`'s usage line.
fn missing_value() -> clap::Error {
    let message = "no value to store: give it as `kvs put KEY VALUE`, or pipe it in and use `-` \
                   (`kvs put KEY - < value.json`)";
    let mut cli = Cli::command();
    // Built, so that the usage line reads `kvs put ...`.
    cli.build();
    cli.find_subcommand_mut("put")
        .expect("put is a command")
        .error(ErrorKind::MissingRequiredArgument, message)
}

/// Refuses, before anything is sent, a value the node would refuse for not being JSON (the
/// node's own check: UTF-8, then one JSON document), saying why, with a hint to quote what looks
/// like a bare word meant as a string.
fn check_value(value: &[u8]) -> Result<(), String> {
    if value.iter().all(u8::is_ascii_whitespace) {
        return Err(
            "the value is empty; give a JSON document, e.g. '{}', '[1,2]' or '\"text\"'".to_owned(),
        );
    }
    let text = std::str::from_utf8(value)
        .map_err(|e| format!("the value is not UTF-8 ({e}); JSON text must be"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| {
        let word = text.trim();
        let hint = if word.starts_with(['{', '[', '"']) || word.contains('\n') {
            String::new()
        } else {
            let quoted = serde_json::Value::from(word).to_string();
            format!(
                "; to store a string, quote it: '{}'",
                quoted.replace('\'', r"'\''")
            )
        };
        format!("the value is not valid JSON ({e}){hint}")
    })?;
    Ok(())
}

/// The request to send.
enum Method {
    /// `GET`.
    Get,
    /// `PUT` with this body (already checked to be JSON).
    Put(Vec<u8>),
    /// `DELETE`.
    Delete,
}

/// Sends one request to `path` under the server's URL. Success is a 2xx with a JSON body, or for
/// DELETE a 204, and gives the body; a non-2xx answer in kvs's shape `{"error": "..."}` is that
/// message with the status; anything else (another server's page, an empty body) is summarized
/// in one line, never printed.
fn call(server: &Server, method: Method, path: &str) -> Result<String, String> {
    let url = format!("{}{path}", server.server);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(server.connect_timeout)))
        .timeout_global(Some(Duration::from_secs(server.timeout)))
        // A node never redirects: a redirect is another server's answer, reported as such.
        .max_redirects(0)
        .build()
        .into();
    let expects_json = !matches!(method, Method::Delete);
    let sent = match method {
        Method::Put(body) => agent
            .put(&url)
            .header("content-type", "application/json")
            // Lets the node refuse an oversized value (413) before the body is sent, instead of
            // closing the connection under a client still writing it.
            .header("expect", "100-continue")
            .send(body),
        Method::Delete => agent.delete(&url).call(),
        Method::Get => agent.get(&url).call(),
    };
    let mut response = sent.map_err(|e| transport_error(server, &url, e))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let body = response
        .body_mut()
        .with_config()
        // The largest value a node may hold (a GET's answer is the value itself): anything larger
        // is not a node's answer.
        .limit(VALUE_BYTES_MAX as u64)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::Timeout(_) => transport_error(server, &url, e),
            e => format!("reading the answer from {url}: {e}"),
        })?;
    let empty = body.is_empty();
    let unexpected = || {
        let what = match (&content_type, empty) {
            (_, true) => "empty body",
            (Some(content_type), false) => content_type.as_str(),
            (None, false) => "no content type",
        };
        format!("unexpected response from {url}: HTTP {status}, {what}")
    };
    let json = String::from_utf8(body)
        .ok()
        .filter(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
    if (200..300).contains(&status) {
        return match (expects_json, json) {
            (true, Some(text)) => Ok(text),
            (false, _) if status == 204 => Ok(String::new()),
            _ => Err(unexpected()),
        };
    }
    let message = json
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("error").and_then(|m| m.as_str()).map(str::to_owned));
    match message {
        Some(message) => Err(format!("{message} (HTTP {status})")),
        None => Err(unexpected()),
    }
}

/// The one line for a request that got no HTTP answer: a timeout names the limit that expired.
fn transport_error(server: &Server, url: &str, error: ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(ureq::Timeout::Connect) => format!(
            "no answer from {} after {} s",
            server.server, server.connect_timeout
        ),
        ureq::Error::Timeout(_) => {
            format!(
                "no answer from {} after {} s",
                server.server, server.timeout
            )
        }
        ureq::Error::Protocol(e) => format!("unexpected response from {url}: {e}"),
        // ureq's own rendering prefixes "io: ".
        ureq::Error::Io(e) => format!("cannot reach {}: {e}", server.server),
        e => format!("cannot reach {}: {e}", server.server),
    }
}

/// `json` (valid JSON text) indented two spaces a level, as serde_json's pretty printer lays it
/// out, but copied token by token rather than parsed into a map: keys keep the order they were
/// stored in and numbers and strings their exact text (`1.0e3` stays `1.0e3`).
fn indent(json: &str) -> String {
    fn new_line(out: &mut String, depth: usize) {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    }
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0;
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(c);
                while let Some(c) = chars.next() {
                    out.push(c);
                    match c {
                        '\\' => out.extend(chars.next()),
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '{' | '[' => {
                out.push(c);
                while chars.next_if(char::is_ascii_whitespace).is_some() {}
                match chars.next_if(|&next| next == '}' || next == ']') {
                    Some(close) => out.push(close),
                    None => {
                        depth += 1;
                        new_line(&mut out, depth);
                    }
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                new_line(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                new_line(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_are_encoded_per_segment() {
        assert_eq!(kv_path("users/john doe/a?b"), "/kv/users/john%20doe/a%3Fb");
        assert_eq!(kv_path("a/é"), "/kv/a/%C3%A9");
    }

    #[test]
    fn server_urls_are_normalized_and_other_schemes_refused() {
        let ok = |text: &str| BaseUrl::parse(text).map(|u| u.to_string());
        assert_eq!(ok("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(ok("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(ok("HTTP://h:1").unwrap(), "HTTP://h:1");
        assert_eq!(ok("localhost").unwrap(), "http://localhost");
        let ftp = ok("ftp://h:1").unwrap_err();
        assert!(ftp.contains("ftp") && ftp.contains("http://"), "{ftp}");
        let https = ok("https://h:1").unwrap_err();
        assert!(https.contains("https is not supported"), "{https}");
        assert!(ok("http://").is_err());
    }

    #[test]
    fn client_commands_and_node_config_parse() {
        let cli = try_parse_from(["kvs", "put", "a/b", "{}", "--server", "x:1"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Put { .. })));
        for config in ["node.yaml", "a.YML", "./conf/x", "/abs/path"] {
            let cli = try_parse_from(["kvs", config]).unwrap();
            assert_eq!(cli.config, Some(PathBuf::from(config)));
            assert!(cli.command.is_none());
        }
        let cli = try_parse_from(["kvs"]).unwrap();
        assert!(cli.config.is_none() && cli.command.is_none());
        let e = try_parse_from(["kvs", "get"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let cli = try_parse_from(["kvs", "get", "k", "--timeout", "3", "--pretty"]).unwrap();
        match cli.command {
            Some(Command::Get { pretty, server, .. }) => {
                assert!(pretty);
                assert_eq!(server.timeout, 3);
            }
            other => panic!("{other:?}"),
        }
        let e = try_parse_from(["kvs", "get", "k", "--timeout", "0"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn a_mistyped_command_gets_a_suggestion() {
        let e = try_parse_from(["kvs", "gte", "users/john"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSubcommand);
        let text = e.to_string();
        assert!(text.contains("'gte'") && text.contains("'get'"), "{text}");
        for (typo, command) in [("gte", "get"), ("dleete", "delete"), ("membres", "members")] {
            let e = try_parse_from(["kvs", typo]).unwrap_err();
            assert!(e.to_string().contains(&format!("'{command}'")), "{e}");
        }
        let e = try_parse_from(["kvs", "node1"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSubcommand, "{e}");
        assert!(e.to_string().contains("kvs ./node1"), "{e}");
        // `help` is a command too.
        let e = try_parse_from(["kvs", "help"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{e}");
    }

    #[test]
    fn values_that_are_not_json_are_refused_with_a_reason() {
        assert!(check_value(b"{\"a\": [1, \"x\"]}\n").is_ok());
        assert!(check_value(b" 12 ").is_ok());
        assert_eq!(
            check_value(b"hello").unwrap_err(),
            "the value is not valid JSON (expected value at line 1 column 1); to store a \
             string, quote it: '\"hello\"'"
        );
        assert_eq!(
            check_value(b"it's\n").unwrap_err(),
            "the value is not valid JSON (expected value at line 1 column 1); to store a \
             string, quote it: '\"it'\\''s\"'"
        );
        let broken = check_value(b"{\"a\":").unwrap_err();
        assert!(
            broken.contains("not valid JSON") && !broken.contains("quote"),
            "{broken}"
        );
        for empty in [&b""[..], b" \n"] {
            assert!(check_value(empty).unwrap_err().contains("empty"));
        }
        assert!(check_value(b"\"\xff\"").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn indent_matches_serde_json_pretty_and_keeps_order_and_text() {
        for compact in [
            r#"{"a":1,"b":[true,null,{"c":"x"}],"d":{},"e":[]}"#,
            r#"[[],[{}],"{[,:\"\\]}",-1.5e-7]"#,
            r#""just a string""#,
            "7",
        ] {
            let value: serde_json::Value = serde_json::from_str(compact).unwrap();
            assert_eq!(
                indent(compact),
                serde_json::to_string_pretty(&value).unwrap()
            );
        }
        let spaced = "{ \"b\" : [ 1 , 2 ] ,\n \"a\" : { } }\n";
        assert_eq!(
            indent(spaced),
            "{\n  \"b\": [\n    1,\n    2\n  ],\n  \"a\": {}\n}"
        );
        assert_eq!(
            indent(r#"{"n":1.0e3,"big":123456789012345678901234567890}"#),
            "{\n  \"n\": 1.0e3,\n  \"big\": 123456789012345678901234567890\n}"
        );
    }
}
