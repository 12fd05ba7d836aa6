# kvs recipes. `just --list` shows them. Plain cargo works too: these only save typing.

# Run a node on ./config.yaml (written with defaults on first run).
run *ARGS:
    cargo run --release -- {{ARGS}}

# Everything: unit, integration (real binary on loopback) and the madsim simulator.
test:
    cargo test

# The madsim simulator alone: unit tests, scenarios, the seed sweep, the trace snapshot.
sim *ARGS:
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo test -p kvs-sim {{ARGS}}

# Replay one seed of the crash sweep and print its trace.
replay SEED:
    KVS_SIM_SEED={{SEED}} RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo test -p kvs-sim --test sweep -- --nocapture

# Formatting and lints, in the normal build and in the simulator build.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo clippy -p kvs-sim --all-targets -- -D warnings

# What CI runs on a clean clone.
ci:
    bash .ci/run
