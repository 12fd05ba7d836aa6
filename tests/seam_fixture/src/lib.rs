//! Breaks the seam rule on purpose, for `tests/seam_rules.rs`.
//!
//! With the `violations` feature, [`violations`] commits one violation of every entry of the
//! workspace's `clippy.toml` that the build at hand can name, so clippy must fail naming each.
//! Without it the crate is clean, although [`exempt`] and [`read_config`] touch the OS the way the
//! hosts and `Config::load` do: that proves their `#[allow]`s work (and reach nested modules).

pub mod exempt {
    //! Stands for `src/host/`: one `#![allow]` at the top covers the module and its submodules.
    #![allow(clippy::disallowed_methods, clippy::disallowed_types)]

    pub mod nested {
        //! Inherits the lint levels of its parent module.

        use std::time::{Duration, Instant};

        /// Reads the OS clock.
        pub fn now() -> Instant {
            Instant::now()
        }

        /// Sleeps on the runtime's timer.
        pub async fn nap() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Stands for `Config::load`: the allow covers this function alone.
#[allow(clippy::disallowed_methods)]
pub fn read_config(path: &std::path::Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[cfg(feature = "violations")]
pub mod violations;
