//! `/metrics`: one Prometheus registry per node (prometheus-client), in OpenMetrics text.
//!
//! A registry is a plain value made in `Node::assemble`, and every metric is a cheap shared
//! handle given to the component that updates it: no global recorder, so the simulator's nodes,
//! which share one process and one thread, never mix their figures.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::cluster::{MemberStatus, NetCounters};
use crate::storage::PurgeCounters;
use crate::sync::conflict::ConflictCounters;
use crate::sync::SyncCounters;

/// Labels of an answered HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's template (`/kv/{*path}`), or `unmatched`: bounded, unlike paths.
    pub route: String,
    /// The method, or `other` for one outside the standard set: bounded too.
    pub method: &'static str,
    /// The status code.
    pub status: u16,
}

/// A member status, as a label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StatusLabel {
    /// `alive`, `suspect`, `dead` or `left`.
    pub status: &'static str,
}

/// A node's metrics: the registry and the handles its components update.
pub struct NodeMetrics {
    registry: Registry,
    /// Answered HTTP requests by route, method and status (errors are the 4xx and 5xx).
    pub requests: Family<RequestLabels, Counter>,
    /// Writes per group commit.
    pub batch_writes: Histogram,
    /// Members by status, as this node sees them (set when scraped).
    pub members: Family<StatusLabel, Gauge>,
    /// Garbage collection of tombstones.
    pub purges: PurgeCounters,
}

/// Every member status, for the gauges (one series each, zero included).
const STATUSES: [MemberStatus; 4] = [
    MemberStatus::Alive,
    MemberStatus::Suspect,
    MemberStatus::Dead,
    MemberStatus::Left,
];

impl NodeMetrics {
    /// A registry with every metric of a node, the gossip counters included.
    pub fn new(
        net: &NetCounters,
        sync: &SyncCounters,
        conflicts: &ConflictCounters,
    ) -> NodeMetrics {
        let mut registry = Registry::with_prefix("kvs");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        // 1, 2, 4 ... 1024 writes (the batch bound).
        let batch_writes = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "write_batch_writes",
            "Writes per group commit",
            batch_writes.clone(),
        );
        let members = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "members",
            "Cluster members by status, as this node sees them",
            members.clone(),
        );
        net.register(&mut registry);
        sync.register(&mut registry);
        conflicts.register(&mut registry);
        let purges = PurgeCounters::default();
        for (name, help, counter) in [
            (
                "tombstones_purged",
                "Tombstones garbage-collected after tombstone_grace_hours",
                &purges.tombstones_purged,
            ),
            (
                "records_forgotten",
                "Records dropped because a peer lacks them and purged a newer delete",
                &purges.records_forgotten,
            ),
            (
                "replication_obsolete_records",
                "Peers' records ignored as older than a purged delete, or as expired tombstones",
                &purges.records_obsolete,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        NodeMetrics {
            registry,
            requests,
            batch_writes,
            members,
            purges,
        }
    }

    /// Sets the member gauges from a member list.
    pub fn set_members(&self, statuses: impl IntoIterator<Item = MemberStatus>) {
        let mut counts = [0i64; STATUSES.len()];
        for status in statuses {
            let i = STATUSES.iter().position(|s| *s == status).expect("listed");
            counts[i] += 1;
        }
        for (status, count) in STATUSES.iter().zip(counts) {
            self.members
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(count);
        }
    }

    /// The registry in OpenMetrics text, every family's series in a stable order.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding into a String");
        stable(&text)
    }
}

/// `text` with the series of each counter and gauge family sorted. prometheus-client keeps a
/// family's label sets in a hash map, so their order changes from run to run; a scrape that
/// reads the same figures the same way keeps the simulator's traces comparable. (A histogram's
/// lines keep their order: its buckets must stay in increasing `le`.)
fn stable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut series: Vec<&str> = Vec::new();
    let mut sortable = false;
    let flush = |series: &mut Vec<&str>, sortable: bool, out: &mut String| {
        if sortable {
            series.sort_unstable();
        }
        for line in series.drain(..) {
            out.push_str(line);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut series, sortable, &mut out);
            if let Some(kind) = line.strip_prefix("# TYPE ") {
                sortable = kind.ends_with(" counter") || kind.ends_with(" gauge");
            }
            out.push_str(line);
            out.push('\n');
        } else {
            series.push(line);
        }
    }
    flush(&mut series, sortable, &mut out);
    out
}

/// A method as a bounded label.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_with_the_kvs_prefix() {
        let metrics = NodeMetrics::new(
            &NetCounters::default(),
            &SyncCounters::default(),
            &ConflictCounters::default(),
        );
        metrics
            .requests
            .get_or_create(&RequestLabels {
                route: "/kv/{*path}".into(),
                method: "PUT",
                status: 200,
            })
            .inc();
        metrics.batch_writes.observe(3.0);
        metrics.set_members([MemberStatus::Alive, MemberStatus::Alive, MemberStatus::Dead]);
        let text = metrics.render();
        for line in [
            "kvs_http_requests_total{route=\"/kv/{*path}\",method=\"PUT\",status=\"200\"} 1",
            "kvs_write_batch_writes_count 1",
            "kvs_members{status=\"alive\"} 2",
            "kvs_members{status=\"suspect\"} 0",
            "kvs_members{status=\"dead\"} 1",
            "kvs_gossip_datagrams_sent_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn counter_series_are_sorted_and_histogram_buckets_keep_their_order() {
        let text = "# TYPE a counter\na_total{x=\"b\"} 1\na_total{x=\"a\"} 2\n\
                    # TYPE h histogram\nh_bucket{le=\"2.0\"} 0\nh_bucket{le=\"10.0\"} 0\n# EOF\n";
        assert_eq!(
            stable(text),
            "# TYPE a counter\na_total{x=\"a\"} 2\na_total{x=\"b\"} 1\n\
             # TYPE h histogram\nh_bucket{le=\"2.0\"} 0\nh_bucket{le=\"10.0\"} 0\n# EOF\n"
        );
    }
}
