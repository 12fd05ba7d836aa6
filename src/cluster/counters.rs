//! Counters of what the network brought and what was dropped, by reason: shared between the
//! socket glue (which drops what fails the envelope) and the membership actor (which drops what
//! foca cannot parse), and exported on `/metrics` (prometheus-client counters: plain shared
//! atomics, one set per node, so the simulator's nodes never mix theirs).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::envelope::Rejected;

/// A drop's reason, as a metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `Rejected::label`, or why a healthy datagram was not passed on.
    pub reason: &'static str,
}

/// A frame exchange's kind and direction, as metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FrameLabels {
    /// `SyncRequest::kind`.
    pub kind: &'static str,
    /// `sent` (the request) or `received` (its answer).
    pub direction: &'static str,
}

/// A frame exchange's kind, as a metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    /// `SyncRequest::kind`.
    pub kind: &'static str,
}

/// Datagram and frame counters of one node.
#[derive(Debug, Clone, Default)]
pub struct NetCounters {
    /// Datagrams sent.
    pub sent: Counter,
    /// Datagrams received and accepted by the envelope.
    pub received: Counter,
    /// Datagrams dropped, by reason: the envelope's and the protocol's rejections, a full send
    /// queue (`send_queue_full`), a full membership mailbox (`receive_queue_full`).
    dropped: Family<ReasonLabel, Counter>,
    /// Frame connections dropped, by reason (bad MAC, malformed, oversized, truncated...).
    frames_dropped: Family<ReasonLabel, Counter>,
    /// Bytes of this node's requests and of their answers, whole frames, by request kind.
    frame_bytes: Family<FrameLabels, Counter>,
    /// This node's requests answered, one per frame, by request kind (`direction="sent"`).
    frame_requests: Family<FrameLabels, Counter>,
    /// Peers' requests this node answered, one per frame, by kind.
    served: Family<KindLabel, Counter>,
    /// Bytes of the peers' requests this node answered (`received`) and of its answers
    /// (`sent`), whole frames, by kind.
    served_bytes: Family<FrameLabels, Counter>,
    /// HTTP connections answered 503 and closed: too many open and waiting (`host::listener`).
    pub http_refused: Counter,
    /// Peers this node has a request task (a queue and a kept connection) for now: one per peer
    /// it talked to lately, ended after `host::frames::PEER_IDLE_EXIT` without a request.
    pub peer_links: Gauge,
}

impl NetCounters {
    /// Counts a rejected datagram and says whether to log it: the 1st, 2nd, 4th, 8th... of each
    /// reason, so that a flood of junk is visible in the log at a bounded rate.
    pub fn reject(&self, reason: Rejected) -> bool {
        self.drop_for(reason.label())
    }

    /// How many datagrams were rejected for `reason`.
    pub fn rejected(&self, reason: Rejected) -> u64 {
        self.dropped_for(reason.label())
    }

    /// Counts a datagram dropped because a queue was full (`send_queue_full`,
    /// `receive_queue_full`); says whether to log it, as [`NetCounters::reject`] does.
    pub fn drop_for(&self, reason: &'static str) -> bool {
        let before = self.dropped.get_or_create(&ReasonLabel { reason }).inc();
        (before + 1).is_power_of_two()
    }

    /// How many datagrams were dropped for `reason`.
    pub fn dropped_for(&self, reason: &'static str) -> u64 {
        self.dropped.get_or_create(&ReasonLabel { reason }).get()
    }

    /// Counts a frame connection dropped for `reason`; says whether to log it (powers of two).
    pub fn frame_drop_for(&self, reason: &'static str) -> bool {
        let before = self
            .frames_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
        (before + 1).is_power_of_two()
    }

    /// How many frame connections were dropped for `reason`.
    pub fn frames_dropped_for(&self, reason: &'static str) -> u64 {
        self.frames_dropped
            .get_or_create(&ReasonLabel { reason })
            .get()
    }

    /// Counts one request this node sent and got an answer to, and the bytes of both.
    pub fn exchanged(&self, kind: &'static str, sent: usize, received: usize) {
        self.frame_requests
            .get_or_create(&FrameLabels {
                kind,
                direction: "sent",
            })
            .inc();
        for (direction, bytes) in [("sent", sent), ("received", received)] {
            self.frame_bytes
                .get_or_create(&FrameLabels { kind, direction })
                .inc_by(bytes as u64);
        }
    }

    /// Counts one peer's request this node answered, and the bytes of both frames.
    pub fn served(&self, kind: &'static str, received: usize, sent: usize) {
        self.served.get_or_create(&KindLabel { kind }).inc();
        for (direction, bytes) in [("received", received), ("sent", sent)] {
            self.served_bytes
                .get_or_create(&FrameLabels { kind, direction })
                .inc_by(bytes as u64);
        }
    }

    /// How many peers' requests of `kind` this node answered.
    pub fn served_count(&self, kind: &'static str) -> u64 {
        self.served.get_or_create(&KindLabel { kind }).get()
    }

    /// Bytes counted for `kind` in `direction`.
    pub fn exchanged_bytes(&self, kind: &'static str, direction: &'static str) -> u64 {
        self.frame_bytes
            .get_or_create(&FrameLabels { kind, direction })
            .get()
    }

    /// Adds the counters to a node's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gossip_datagrams_sent",
            "Gossip datagrams sent",
            self.sent.clone(),
        );
        registry.register(
            "gossip_datagrams_received",
            "Gossip datagrams received and authenticated",
            self.received.clone(),
        );
        registry.register(
            "gossip_datagrams_dropped",
            "Gossip datagrams dropped, by reason",
            self.dropped.clone(),
        );
        registry.register(
            "frame_connections_dropped",
            "Sync frame connections dropped, by reason",
            self.frames_dropped.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections answered 503 and closed: max_connections open and too many waiting",
            self.http_refused.clone(),
        );
        registry.register(
            "frame_peer_links",
            "Peers with a request queue and kept connection open now (ended after idling)",
            self.peer_links.clone(),
        );
        registry.register(
            "frame_requests",
            "This node's sync requests answered (one frame each), by kind",
            self.frame_requests.clone(),
        );
        registry.register(
            "frame_bytes",
            "Bytes of this node's sync requests and their answers, by kind (anti-entropy: branches, leaves, segments, fetch)",
            self.frame_bytes.clone(),
        );
        registry.register(
            "frames_served",
            "Peers' sync requests this node answered (one frame each), by kind",
            self.served.clone(),
        );
        registry.register(
            "frames_served_bytes",
            "Bytes of the peers' sync requests this node answered (received) and of its answers (sent), by kind",
            self.served_bytes.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_counted_by_reason_and_logged_at_powers_of_two() {
        let counters = NetCounters::default();
        let logged: Vec<bool> = (0..9).map(|_| counters.reject(Rejected::Mac)).collect();
        assert_eq!(
            logged,
            [true, true, false, true, false, false, false, true, false]
        );
        assert_eq!(counters.rejected(Rejected::Mac), 9);
        assert_eq!(counters.rejected(Rejected::Oversized), 0);
    }

    #[test]
    fn the_counters_are_exported_by_reason() {
        let counters = NetCounters::default();
        counters.reject(Rejected::Mac);
        counters.drop_for("send_queue_full");
        counters.sent.inc();
        let mut registry = Registry::with_prefix("kvs");
        counters.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "kvs_gossip_datagrams_sent_total 1",
            "kvs_gossip_datagrams_dropped_total{reason=\"bad_mac\"} 1",
            "kvs_gossip_datagrams_dropped_total{reason=\"send_queue_full\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
