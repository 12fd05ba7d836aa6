//! The seam rule: outside the hosts and the binary's edge, code never touches the OS clock, OS
//! randomness, threads, sockets or the environment directly; it goes through the actor seam
//! (`Context`: clock, seeded RNG, timers, mailboxes), so the simulator can decide all of it.
//!
//! Scans every `.rs` file under `src/` except `src/host/` (host adapters and OS glue) and the edge
//! files `src/main.rs`, `src/cli.rs` and `src/telemetry.rs`, and fails listing `file:line` for any
//! forbidden use. Comment lines (`//`, `///`, `//!`) are ignored. The scanner is itself tested on
//! sample text, so the rule cannot pass by scanning nothing.
#![cfg(not(madsim))]

use std::path::{Path, PathBuf};

/// What only hosts and edge code may use.
const FORBIDDEN: &[&str] = &[
    "SystemTime",
    "Instant::now",
    "tokio::time",
    "std::time::Instant",
    "thread_rng",
    "rand::rng(",
    "OsRng",
    "getrandom",
    "std::thread::spawn",
    "tokio::net",
    "std::net::Tcp",
    "std::net::Udp",
    "tokio::spawn",
    "std::env::var",
];

/// Paths under `src/` (with `/` separators) exempt from the rule: a trailing `/` exempts a folder.
const EXEMPT: &[&str] = &["host/", "main.rs", "cli.rs", "telemetry.rs"];

/// Forbidden uses in `text`, as (1-based line number, pattern, line).
fn scan(text: &str) -> Vec<(usize, &'static str, String)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for pattern in FORBIDDEN {
            if line.contains(pattern) {
                found.push((index + 1, *pattern, line.trim().to_owned()));
            }
        }
    }
    found
}

/// Whether `relative` (a path under `src/`, `/`-separated) is exempt.
fn exempt(relative: &str) -> bool {
    EXEMPT.iter().any(|e| match e.strip_suffix('/') {
        Some(folder) => relative.starts_with(e) || relative == folder,
        None => relative == *e,
    })
}

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    // Bounded by the size of the tree (no symlinks are followed).
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let entry = entry.expect("dir entry");
            let kind = entry.file_type().expect("file type");
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `file:line: pattern: code` for every forbidden use under `src`, and how many files were scanned.
fn violations(src: &Path) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut scanned = 0;
    for file in rust_files(src) {
        let relative = file
            .strip_prefix(src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        if exempt(&relative) {
            continue;
        }
        scanned += 1;
        let text = std::fs::read_to_string(&file).expect("read source");
        for (line, pattern, code) in scan(&text) {
            out.push(format!("src/{relative}:{line}: `{pattern}` in `{code}`"));
        }
    }
    (out, scanned)
}

#[test]
fn core_code_goes_through_the_seam() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (found, scanned) = violations(&src);
    assert!(
        scanned >= 10,
        "scanned only {scanned} files under {}",
        src.display()
    );
    assert!(
        found.is_empty(),
        "only src/host/ and the edge (main.rs, cli.rs, telemetry.rs) may touch the OS clock, \
         randomness, threads, sockets or the environment; use the actor Context instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scanner_flags_forbidden_uses_and_skips_comments() {
    let sample = "\
use std::time::SystemTime;
// SystemTime::now() in a comment is fine
    /// so is `tokio::spawn` in a doc comment
//! and `OsRng` in a module doc
let t = std::time::Instant::now();
let n = rand::rng().random::<u8>();
let s = tokio::net::TcpListener::bind(addr);
let a = std::env::var(\"HOME\"); let b = getrandom::fill(&mut x);
tokio::spawn(async {}); std::thread::spawn(|| ());
let u = std::net::UdpSocket::bind(a); let c = std::net::TcpStream::connect(a);
let r = thread_rng(); let o = OsRng; tokio::time::sleep(d);
let clock = ctx.clock().wall_ms();
";
    let found: Vec<(usize, &str)> = scan(sample).into_iter().map(|(l, p, _)| (l, p)).collect();
    assert_eq!(
        found,
        [
            (1, "SystemTime"),
            (5, "Instant::now"),
            (5, "std::time::Instant"),
            (6, "rand::rng("),
            (7, "tokio::net"),
            (8, "getrandom"),
            (8, "std::env::var"),
            (9, "std::thread::spawn"),
            (9, "tokio::spawn"),
            (10, "std::net::Tcp"),
            (10, "std::net::Udp"),
            (11, "tokio::time"),
            (11, "thread_rng"),
            (11, "OsRng"),
        ],
    );
    // Every forbidden pattern is caught by at least one line above.
    for pattern in FORBIDDEN {
        assert!(
            found.iter().any(|(_, p)| p == pattern),
            "{pattern} not exercised"
        );
    }
}

#[test]
fn only_hosts_and_edge_files_are_exempt() {
    for path in [
        "host/server.rs",
        "host/ractor.rs",
        "host",
        "main.rs",
        "cli.rs",
        "telemetry.rs",
    ] {
        assert!(exempt(path), "{path} should be exempt");
    }
    for path in [
        "lib.rs",
        "config.rs",
        "api/kv.rs",
        "storage/actor.rs",
        "seam/clock.rs",
        "hosting.rs",
        "hostile/x.rs",
        "api/main.rs",
        "api/host/x.rs",
    ] {
        assert!(!exempt(path), "{path} must be scanned");
    }
}

#[test]
fn the_scan_reports_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("core")).unwrap();
    std::fs::create_dir_all(src.join("host")).unwrap();
    std::fs::write(
        src.join("core/a.rs"),
        "fn f() {}\nfn g() { tokio::spawn(x); }\n",
    )
    .unwrap();
    std::fs::write(src.join("host/b.rs"), "fn h() { tokio::spawn(x); }\n").unwrap();
    std::fs::write(src.join("main.rs"), "fn main() { std::env::var(\"X\"); }\n").unwrap();
    std::fs::write(src.join("notes.txt"), "tokio::spawn\n").unwrap();
    let (found, scanned) = violations(src);
    assert_eq!(scanned, 1);
    assert_eq!(
        found,
        ["src/core/a.rs:2: `tokio::spawn` in `fn g() { tokio::spawn(x); }`"]
    );
}
