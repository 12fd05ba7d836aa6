//! The sweep itself (see `main.rs`).

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use kvs_sim::scenario_file::{self, Regression};

/// One run's result, as a child reports it on its stdout (one JSON line).
#[derive(serde::Serialize, serde::Deserialize)]
struct Report {
    violations: Vec<String>,
    simulated_ms: u64,
}

/// What the summary counts per scenario.
#[derive(Default)]
struct Tally {
    runs: u64,
    failed: u64,
    simulated: Duration,
    wall: Duration,
}

pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        return one(&args[1], args[2].parse().expect("a u64 seed"));
    }
    let scenario = args.first().cloned().unwrap_or_else(|| "all".into());
    let count: u64 = match args.get(1) {
        Some(n) => n
            .parse()
            .unwrap_or_else(|_| usage(&format!("{n:?} is not a count"))),
        None => 20,
    };
    let known = scenario_file::names();
    let scenarios = if scenario == "all" {
        known
    } else if known.contains(&scenario) {
        vec![scenario]
    } else {
        usage(&format!(
            "no scenario {scenario:?}; the scenarios: {}",
            known.join(", ")
        ))
    };
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "sweep: {} scenario(s) x seeds {start}..{} on {cores} cores",
        scenarios.len(),
        start + count
    );
    let mut jobs: Vec<(String, u64)> = scenarios
        .iter()
        .flat_map(|s| (start..start + count).map(move |seed| (s.clone(), seed)))
        .collect();
    jobs.reverse();
    let bar = ProgressBar::new(jobs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {msg} [{elapsed}, eta {eta}]")
            .expect("a valid template"),
    );
    let exe = std::env::current_exe().expect("the sweep knows its own path");
    let mut running: Vec<(String, u64, Instant, Child)> = Vec::new();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures: Vec<Regression> = Vec::new();
    let began = Instant::now();
    while !jobs.is_empty() || !running.is_empty() {
        while running.len() < cores {
            let Some((scenario, seed)) = jobs.pop() else {
                break;
            };
            let child = Command::new(&exe)
                .args(["--one", &scenario, &seed.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the sweep starts a child");
            running.push((scenario, seed, Instant::now(), child));
        }
        let done = running
            .iter_mut()
            .position(|(_, _, _, c)| c.try_wait().expect("a child's status").is_some());
        let Some(i) = done else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let (scenario, seed, started, mut child) = running.swap_remove(i);
        let wall = started.elapsed();
        let mut out = String::new();
        let mut err = String::new();
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_string(&mut out)
            .ok();
        child
            .stderr
            .take()
            .expect("piped")
            .read_to_string(&mut err)
            .ok();
        let report: Report =
            serde_json::from_str(out.lines().last().unwrap_or("")).unwrap_or_else(|_| Report {
                violations: vec![format!(
                    "panicked: {}",
                    err.lines()
                        .find(|l| l.contains("panicked"))
                        .map_or(err.trim(), |l| l.trim())
                )],
                simulated_ms: 0,
            });
        let tally = tallies.entry(scenario.clone()).or_default();
        tally.runs += 1;
        tally.wall += wall;
        tally.simulated += Duration::from_millis(report.simulated_ms);
        if !report.violations.is_empty() {
            tally.failed += 1;
            bar.suspend(|| {
                println!(
                    "FAILED {scenario} seed {seed}: {}\n  replay: just replay {scenario} {seed}",
                    report.violations.join("; ")
                )
            });
            failures.push(Regression {
                scenario: scenario.clone(),
                seed,
                found: first_words(&report.violations[0]),
            });
        }
        bar.set_message(format!("{} failed", failures.len()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    summary(&tallies, began.elapsed(), cores);
    if !failures.is_empty() {
        scenario_file::record_regressions(&failures);
        println!(
            "{} failing seed(s) added to scenarios/regressions.yaml: cargo test replays them",
            failures.len()
        );
        std::process::exit(1);
    }
}

/// Runs one seed of one scenario and reports it as a JSON line (a child's work).
fn one(scenario: &str, seed: u64) {
    let (outcome, simulated) = scenario_file::run_named(scenario, seed);
    let report = Report {
        violations: outcome.violations,
        simulated_ms: simulated.as_millis() as u64,
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("a report serializes")
    );
}

/// The table printed at the end: per scenario, runs, failures, and simulation speed.
fn summary(tallies: &BTreeMap<String, Tally>, wall: Duration, cores: usize) {
    println!(
        "{:<28} {:>5} {:>6} {:>12} {:>14} {:>10}",
        "scenario", "runs", "failed", "simulated s", "sim s / wall s", "seeds/min"
    );
    for (name, t) in tallies {
        let wall_s = t.wall.as_secs_f64().max(1e-9);
        println!(
            "{:<28} {:>5} {:>6} {:>12.1} {:>14.1} {:>10.1}",
            name,
            t.runs,
            t.failed,
            t.simulated.as_secs_f64(),
            t.simulated.as_secs_f64() / wall_s,
            t.runs as f64 * 60.0 / wall_s,
        );
    }
    let runs: u64 = tallies.values().map(|t| t.runs).sum();
    let failed: u64 = tallies.values().map(|t| t.failed).sum();
    println!(
        "{runs} runs, {failed} failed, in {:.1} s on {cores} cores (per-scenario speeds are per core)",
        wall.as_secs_f64()
    );
}

/// The start of a violation, short enough for the regression list.
fn first_words(violation: &str) -> String {
    let mut s: String = violation.chars().take(160).collect();
    if s.len() < violation.len() {
        s.push_str("...");
    }
    s
}

fn usage(problem: &str) -> ! {
    eprintln!("sweep: {problem}\nusage: just sweep [SCENARIO|all] [N]");
    std::process::exit(2);
}
