# kvs recipes. `just --list` shows them. Plain cargo works too: these only save typing.

# Run a node on ./config.yaml (written with defaults on first run).
run *ARGS:
    cargo run --release -- {{ARGS}}

# Everything: unit, integration (real binary on loopback) and the madsim simulator.
test:
    cargo test

# The madsim simulator alone: unit tests, scenarios, the seed sweep, the trace snapshots.
sim *ARGS:
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo test -p kvs-sim {{ARGS}}

# Replay one seed of a scenario (a file of scenarios/, e.g. partition_heal or crash_sweep) and
# print its timeline: the same run, bit for bit.
replay SCENARIO SEED:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ "{{SCENARIO}}" = crash_sweep ]; then test=(--test sweep --); else test=(--test cluster_scenarios {{SCENARIO}} -- --exact); fi
    KVS_SIM_SEED={{SEED}} RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo test -p kvs-sim "${test[@]}" --nocapture

# Replay one seed of a cluster scenario and write its timeline as a self-contained HTML page
# (target/timelines/SCENARIO_SEED.html: a lane per node, faults shaded, writes, conflicts,
# membership and convergence marked), then render it in headless Chromium (Debian's `chromium`)
# to check that it draws, with a screenshot next to it.
timeline SCENARIO SEED:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p target/timelines
    page="$PWD/target/timelines/{{SCENARIO}}_{{SEED}}.html"
    KVS_SIM_HTML="$page" KVS_SIM_SEED={{SEED}} RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim         cargo test -q -p kvs-sim --test cluster_scenarios {{SCENARIO}} -- --exact --nocapture >/dev/null
    browser=$(command -v chromium || command -v chromium-browser || true)
    if [ -z "$browser" ]; then
        echo "wrote $page; no chromium to check it with (apt-get install chromium)" >&2
        exit 1
    fi
    dom=$("$browser" --headless --no-sandbox --disable-gpu --window-size=1400,700 --dump-dom "file://$page" 2>/dev/null)
    rendered=$(grep -o 'data-rendered="[^"]*"' <<<"$dom" || true)
    lanes=$(grep -o '<g class="lane"' <<<"$dom" | wc -l)
    if [ -z "$rendered" ] || [ "$lanes" -eq 0 ]; then
        echo "chromium did not render $page" >&2
        exit 1
    fi
    "$browser" --headless --no-sandbox --disable-gpu --window-size=1400,700 --screenshot="${page%.html}.png" "file://$page" >/dev/null 2>&1
    echo "$page: chromium rendered it: $rendered; screenshot ${page%.html}.png"

# Review the simulator's changed timelines (snapshots/*.snap.new, written by a run that found a
# difference outside CI) with cargo-insta, accepting or rejecting each.
review:
    cargo insta --version >/dev/null 2>&1 || cargo install cargo-insta --locked
    cargo insta review --workspace-root .

# N more seeds (default 20) of one scenario of scenarios/ (default: all of them), from a random
# start, on every core: a progress bar, every failure with its replay command, a summary table
# with simulation speed. Failing seeds are added to scenarios/regressions.yaml (cargo test replays them).
sweep SCENARIO="all" N="20":
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo run -q -p kvs-sim --bin sweep -- {{SCENARIO}} {{N}}

# Proof that the tests catch bugs: each broken variant of sim/mutants/*.patch applied to a
# scratch worktree and its check run; prints a table (all variants take several minutes).
mutants *NAMES:
    sim/mutants/run.sh {{NAMES}}

# Formatting and lints, in the normal build and in the simulator build.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo clippy -p kvs-sim --all-targets -- -D warnings

# What CI runs on a clean clone.
ci:
    bash .ci/run

# HTTP throughput and latency of a node against a trivial axum baseline, measured in one run
# (prints a table; asserts nothing). KVS_BENCH_SECS sets the seconds per phase (default 5),
# KVS_BENCH_DIR where the node's data lives; RUST_LOG=kvs=trace adds group commit sizes.
bench:
    cargo bench --bench http

# Simulator speed: N seeds (default 8) of scenarios/sim_speed.yaml (5 nodes, 50 writes/s) in a
# release build, one process per core; prints simulated seconds per wall second, per core.
bench-sim N="8":
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo run -q --release -p kvs-sim --bin sweep -- sim_speed {{N}}

# Cluster figures on real processes (throughput with peers vs alone, replication lag, failure
# detection, bootstrap, anti-entropy bytes), each next to a same-run reference. KVS_BENCH_SECS
# sets the seconds per throughput phase (default 5), KVS_BENCH_KEYS the keys (default 100000).
bench-cluster:
    cargo bench --bench cluster
