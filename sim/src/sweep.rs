//! Running scenarios under seeds: one seed in a fresh runtime, a sweep over pinned seeds, and the
//! replay of a single seed through `KVS_SIM_SEED`.
//!
//! Seeds are pinned (never madsim's default, the time of day) so CI runs the same simulations
//! every time; a failure names its seed, and `KVS_SIM_SEED=<seed>` (or `just replay <scenario> <seed>`)
//! runs exactly that one again. A seed replays only with the same binary and toolchain.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::scenario::Outcome;

/// The environment variable that restricts a sweep to one seed.
pub const SEED_VAR: &str = "KVS_SIM_SEED";

/// The environment variable that, in a replay, names the HTML page to write the timeline to
/// (`crate::html`).
pub const HTML_VAR: &str = "KVS_SIM_HTML";

/// Violations shown per failing seed; the replay shows the rest, with the trace.
const SHOWN: usize = 3;

/// The environment variable that replaces the pinned seeds by a range: `FIRST:COUNT`.
pub const SEEDS_VAR: &str = "KVS_SIM_SEEDS";

/// The seeds to run: the one in `KVS_SIM_SEED` if it is set, else the range in
/// `KVS_SIM_SEEDS` (`FIRST:COUNT`) if that is set, else `pinned`.
///
/// # Panics
/// If either variable is set but malformed.
pub fn seeds(pinned: impl IntoIterator<Item = u64>) -> Vec<u64> {
    if let Ok(seed) = std::env::var(SEED_VAR) {
        return vec![seed
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={seed:?} is not a u64 seed"))];
    }
    if let Ok(range) = std::env::var(SEEDS_VAR) {
        let parsed = range.trim().split_once(':').and_then(|(first, count)| {
            Some((first.parse::<u64>().ok()?, count.parse::<u64>().ok()?))
        });
        let (first, count) =
            parsed.unwrap_or_else(|| panic!("{SEEDS_VAR}={range:?} is not FIRST:COUNT (two u64s)"));
        return (first..first.saturating_add(count)).collect();
    }
    pinned.into_iter().collect()
}

/// Runs `scenario` to completion in a fresh madsim runtime seeded with `seed` (with every node's
/// log on stderr if `RUST_LOG` is set: `timeline::install`).
pub fn run<Fut: Future>(seed: u64, scenario: Fut) -> Fut::Output {
    crate::timeline::install();
    madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default())
        .block_on(scenario)
}

/// Runs `scenario` (named `name`, its file's name) once per seed, and each seed that passed once
/// more to compare the two timelines (determinism), and panics, naming every failing seed and
/// the command that replays it, if any run reported a violation, panicked or diverged from its
/// first run. With `KVS_SIM_SEED` set (a replay), runs it once and prints the run's timeline.
pub fn sweep<F, Fut>(name: &str, seeds: &[u64], scenario: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut failures = Vec::new();
    let replaying = std::env::var_os(SEED_VAR).is_some();
    for &seed in seeds {
        let outcome = catch_unwind(AssertUnwindSafe(|| run(seed, scenario())));
        if let (true, Ok(outcome)) = (replaying, &outcome) {
            print!("{}", outcome.trace.text());
            let end = outcome.end_state.join("\n");
            println!(
                "end state: {} lines (metrics of every node, a last random draw), fnv1a64 {:016x}",
                outcome.end_state.len(),
                crate::trace::fnv1a64(end.as_bytes())
            );
            if let Some(path) = std::env::var_os(HTML_VAR) {
                let timeline = crate::html::parse(&outcome.trace.text());
                let page = crate::html::page(&format!("{name}, seed {seed}"), &timeline);
                match std::fs::write(&path, page) {
                    Ok(()) => eprintln!("timeline page: {}", std::path::Path::new(&path).display()),
                    Err(e) => panic!("writing {}: {e}", std::path::Path::new(&path).display()),
                }
            }
        }
        match outcome {
            // Determinism: a passing seed runs again and must tell the same story, line for
            // line (madsim's own check misses a divergence that changes only outputs).
            Ok(outcome) if outcome.violations.is_empty() && !replaying => {
                match catch_unwind(AssertUnwindSafe(|| run(seed, scenario()))) {
                    Ok(again) => {
                        let how =
                            crate::trace::divergence(&outcome.trace, &again.trace).or_else(|| {
                                crate::trace::end_divergence(&outcome.end_state, &again.end_state)
                            });
                        if let Some(how) = how {
                            failures.push(format!("seed {seed}: not deterministic: {how}"));
                        }
                    }
                    Err(panic) => failures.push(format!(
                        "seed {seed}: not deterministic: passed, then panicked: {}",
                        message(&*panic)
                    )),
                }
            }
            Ok(outcome) if outcome.violations.is_empty() => {}
            Ok(outcome) => failures.push(format!(
                "seed {seed}: {}{}",
                outcome.violations[..outcome.violations.len().min(SHOWN)].join("; "),
                match outcome.violations.len().saturating_sub(SHOWN) {
                    0 => String::new(),
                    more => format!("; and {more} more"),
                },
            )),
            Err(panic) => failures.push(format!("seed {seed}: panicked: {}", message(&*panic))),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds of {name} failed (replay one: `just replay {name} <seed>`):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n"),
    );
}

/// Log lines start with the simulated time since the run began and the madsim node that logged
/// (`NodeId(1)` is the first node started, `node-1`).
pub(crate) struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        // madsim itself logs while a runtime is being built (its seed, at info), before
        // there is a clock or a node to name.
        match madsim::time::TimeHandle::try_current() {
            Some(time) => write!(
                w,
                "t={}ms {}",
                time.elapsed().as_millis(),
                madsim::plugin::node()
            ),
            None => write!(w, "t=- (no runtime)"),
        }
    }
}

fn message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(a panic without a message)")
}
