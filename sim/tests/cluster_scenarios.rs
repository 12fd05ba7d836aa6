//! The cluster scenarios of `scenarios/` (those with `scenario: cluster`), each over its pinned
//! seeds: faults under a write and delete workload, then the invariants (convergence by full
//! dump and hash-tree root within the liveness budget, no acknowledged write lost, no resurrected
//! delete). A failure names the scenario and the seed; `just replay <scenario> <seed>` runs that
//! seed alone and prints its timeline.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use kvs_sim::{cluster, sweep};

fn sweep_scenario(name: &str) {
    let scenario = cluster::load(name);
    let seeds = sweep::seeds(scenario.seeds.range());
    sweep::sweep(name, &seeds, || cluster::run(scenario.clone()));
}

#[test]
fn partition_heal() {
    sweep_scenario("partition_heal");
}

#[test]
fn asymmetric_partition() {
    sweep_scenario("asymmetric_partition");
}

#[test]
fn flapping_link() {
    sweep_scenario("flapping_link");
}

#[test]
fn packet_loss() {
    sweep_scenario("packet_loss");
}

#[test]
fn slow_network() {
    sweep_scenario("slow_network");
}

#[test]
fn mass_restart() {
    sweep_scenario("mass_restart");
}

#[test]
fn hot_keys() {
    sweep_scenario("hot_keys");
}

#[test]
fn dead_member() {
    sweep_scenario("dead_member");
}

#[test]
fn long_partition() {
    sweep_scenario("long_partition");
}

#[test]
fn crash_restart() {
    sweep_scenario("crash_restart");
}

#[test]
fn rolling_restart() {
    sweep_scenario("rolling_restart");
}

#[test]
fn clock_skew() {
    sweep_scenario("clock_skew");
}

#[test]
fn read_only_node() {
    sweep_scenario("read_only_node");
}

#[test]
fn timestamp_collision_storm() {
    sweep_scenario("timestamp_collision_storm");
}

#[test]
fn leave_rejoin() {
    sweep_scenario("leave_rejoin");
}

#[test]
fn join_bootstrap() {
    sweep_scenario("join_bootstrap");
}

#[test]
fn swarm() {
    sweep_scenario("swarm");
}

#[test]
fn swarm_reads() {
    sweep_scenario("swarm_reads");
}

#[test]
fn tombstone_grace() {
    sweep_scenario("tombstone_grace");
}

#[test]
fn bootstrap_past_grace() {
    sweep_scenario("bootstrap_past_grace");
}

#[test]
fn pause_resume() {
    sweep_scenario("pause_resume");
}

#[test]
fn tcp_stall() {
    sweep_scenario("tcp_stall");
}

#[test]
fn founder_restart() {
    sweep_scenario("founder_restart");
}

#[test]
fn sim_speed() {
    sweep_scenario("sim_speed");
}

/// Every seed of `scenarios/regressions.yaml`: each once broke an invariant.
#[test]
fn regressions() {
    let mut failures = Vec::new();
    for r in kvs_sim::scenario_file::regressions() {
        let (outcome, _) = kvs_sim::scenario_file::run_named(&r.scenario, r.seed);
        if !outcome.violations.is_empty() {
            failures.push(format!(
                "{} seed {} (once: {}): {}\n  replay: just replay {} {}",
                r.scenario,
                r.seed,
                r.found,
                outcome.violations.join("; "),
                r.scenario,
                r.seed
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
