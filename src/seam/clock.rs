//! Time as actors see it: a monotonic face for timers and a wall-clock face for version timestamps.

use std::time::Duration;

/// A node's clock. Hosts implement it: the production host from the OS, the simulator from madsim's
/// virtual time plus a per-node offset it controls (skew, drift and jumps apply to `wall_ms` only).
pub trait Clock: Send + Sync + 'static {
    /// Time since an arbitrary fixed point; never goes backwards. Use it for timers and timeouts.
    fn monotonic(&self) -> Duration;

    /// Milliseconds since the Unix epoch as this node believes it; may jump. Use it for versions.
    fn wall_ms(&self) -> u64;
}
