# kvs recipes. `just --list` shows them. Plain cargo works too: these only save typing.

# Run a node on ./config.yaml (written with defaults on first run).
run *ARGS:
    cargo run --release -- {{ARGS}}

# Everything: unit, integration (real binary on loopback) and the madsim simulator.
test:
    cargo test

# Formatting and lints, in the normal build and in the simulator build.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo clippy -p kvs-sim --all-targets -- -D warnings

# What CI runs on a clean clone.
ci:
    bash .ci/run
