//! The sync actor's figures for `/metrics`: replication lag, pushes, anti-entropy rounds, keys
//! and bytes, records refused.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// The replication lag histogram: 1 ms to 32 s in powers of two.
#[derive(Debug, Clone)]
pub struct LagHistogram(pub Histogram);

impl Default for LagHistogram {
    fn default() -> Self {
        LagHistogram(Histogram::new(exponential_buckets(0.001, 2.0, 16)))
    }
}

impl LagHistogram {
    /// Adds one arrival, `seconds` after its stamp.
    pub fn observe(&self, seconds: f64) {
        self.0.observe(seconds);
    }
}

/// Counters of the sync actor, exported on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct SyncCounters {
    /// Records pushed to peers (each copy counted).
    pub pushed_records: Counter,
    /// Pushes given up after every attempt (left to anti-entropy).
    pub pushes_abandoned: Counter,
    /// Pushes dropped because too many were outstanding.
    pub pushes_dropped: Counter,
    /// Records received from peers and handed to storage.
    pub received_records: Counter,
    /// Records received that failed validation.
    pub malformed_records: Counter,
    /// Records received stamped too far ahead of this node's clock.
    pub skewed_records: Counter,
    /// Anti-entropy rounds begun.
    pub rounds: Counter,
    /// Anti-entropy rounds that found the peer in agreement at the root.
    pub rounds_in_agreement: Counter,
    /// Anti-entropy rounds that found differences to repair (each followed by a catch-up round).
    pub rounds_repairing: Counter,
    /// Seconds between a pushed record's timestamp and its arrival here.
    pub replication_lag: LagHistogram,
    /// Keys anti-entropy fetched from peers.
    pub repaired_fetched: Counter,
    /// Keys anti-entropy pushed to peers.
    pub repaired_pushed: Counter,
}

impl SyncCounters {
    /// Adds the counters to a node's registry.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "replication_lag_seconds",
            "How long after its timestamp a pushed record arrived (includes clock differences)",
            self.replication_lag.0.clone(),
        );
        let pairs: [(&str, &str, &Counter); 11] = [
            (
                "antientropy_rounds_repairing",
                "Anti-entropy rounds that found differences (the next comes at the catch-up pace)",
                &self.rounds_repairing,
            ),
            (
                "replication_skewed_records",
                "Peers' records refused as stamped too far in the future",
                &self.skewed_records,
            ),
            (
                "antientropy_rounds",
                "Anti-entropy rounds begun",
                &self.rounds,
            ),
            (
                "antientropy_rounds_in_agreement",
                "Anti-entropy rounds that found the peer in agreement",
                &self.rounds_in_agreement,
            ),
            (
                "antientropy_fetched_keys",
                "Keys anti-entropy fetched from peers",
                &self.repaired_fetched,
            ),
            (
                "antientropy_pushed_keys",
                "Keys anti-entropy pushed to peers",
                &self.repaired_pushed,
            ),
            (
                "replication_pushed_records",
                "Records pushed to peers (each copy)",
                &self.pushed_records,
            ),
            (
                "replication_pushes_abandoned",
                "Pushes given up after every attempt, left to anti-entropy",
                &self.pushes_abandoned,
            ),
            (
                "replication_pushes_dropped",
                "Pushes dropped because too many were outstanding",
                &self.pushes_dropped,
            ),
            (
                "replication_received_records",
                "Records received from peers and handed to storage",
                &self.received_records,
            ),
            (
                "replication_malformed_records",
                "Records from peers that failed validation",
                &self.malformed_records,
            ),
        ];
        for (name, help, counter) in pairs {
            registry.register(name, help, counter.clone());
        }
    }
}
