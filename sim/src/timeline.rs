//! What the nodes themselves report, in the run's timeline: membership changes, conflict
//! decisions, bootstraps, refused clock skew, records forgotten.
//!
//! A `tracing` layer picks the production code's own log events (by message, see [`REPORTED`])
//! out of every node's log and appends them to the trace of the run on the current thread, named
//! by the node that logged them (`t=812ms node-2 member down node_id=node-3 generation=1 left=false`). madsim
//! runs a simulation on the thread that started it, so the trace is per thread ([`follow`]); the
//! events are emitted in the simulation's deterministic order, so the lines replay with the seed.
//! The same subscriber prints every node's log when `RUST_LOG` is set ([`install`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Once;

use madsim::task::NodeId;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::trace::Trace;

/// The log messages (their beginnings) that go into the timeline.
pub const REPORTED: &[&str] = &[
    "member up",
    "member down",
    "member is leaving",
    "joined the cluster",
    "rejoining through the members known",
    "declared down while alive",
    "rejoined: dropped the suspicions",
    "conflict decided",
    "new node: syncing",
    "bootstrap ",
    "dropped a peer's record stamped too far in the future",
    "forgetting records the peer lacks",
];

/// Fields left out of a timeline line: addresses repeat the node ids, durations add nothing.
const SKIPPED_FIELDS: &[&str] = &["addr", "took_ms", "every_ms"];

thread_local! {
    static CURRENT: RefCell<Option<Following>> = const { RefCell::new(None) };
}

struct Following {
    trace: Trace,
    names: BTreeMap<NodeId, String>,
}

/// While alive, the node events of the simulation on this thread go into `trace`.
pub struct Guard(());

impl Drop for Guard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// Sends the node events of the simulation running on this thread to `trace`, until the guard
/// is dropped. Installs the subscriber if it is not yet.
pub fn follow(trace: &Trace) -> Guard {
    install();
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Following {
            trace: trace.clone(),
            names: BTreeMap::new(),
        })
    });
    Guard(())
}

/// Names the madsim node `id` in the timeline (`node-3`); events from unnamed nodes are left
/// out (the simulator's own).
pub fn name(id: NodeId, name: &str) {
    CURRENT.with(|c| {
        if let Some(following) = c.borrow_mut().as_mut() {
            following.names.insert(id, name.to_owned());
        }
    });
}

/// Installs the process's subscriber once: the timeline layer, and every node's log on stderr
/// (stamped with simulated time and the madsim node) when `RUST_LOG` is set.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let log = std::env::var_os("RUST_LOG").is_some().then(|| {
            tracing_subscriber::fmt::layer()
                .with_timer(crate::sweep::SimTime)
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .with_filter(tracing_subscriber::EnvFilter::from_default_env())
        });
        let _ = tracing_subscriber::registry()
            .with(log)
            .with(TimelineLayer.with_filter(Reported))
            .try_init();
    });
}

/// Lets through the events that may be reported: info and above, from kvs.
struct Reported;

impl Reported {
    fn wants(meta: &Metadata<'_>) -> bool {
        meta.is_event() && *meta.level() <= Level::INFO && meta.target().starts_with("kvs::")
    }
}

impl<S> Filter<S> for Reported {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        Reported::wants(meta)
    }

    // Decided once per call site: the debug and trace events of the hot paths then cost nothing
    // (the simulator ran at half speed while every event was offered to this filter).
    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if Reported::wants(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
}

/// Appends reported events to the current thread's trace.
struct TimelineLayer;

impl<S: Subscriber> Layer<S> for TimelineLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut line = Line::default();
        event.record(&mut line);
        if !REPORTED.iter().any(|r| line.message.starts_with(r)) {
            return;
        }
        CURRENT.with(|c| {
            let current = c.borrow();
            let Some(following) = current.as_ref() else {
                return;
            };
            let Some(node) = following.names.get(&madsim::plugin::node()) else {
                return;
            };
            following
                .trace
                .record(format_args!("{node} {}{}", line.message, line.fields));
        });
    }
}

/// An event's message and its fields as ` key=value`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else if !SKIPPED_FIELDS.contains(&field.name()) {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else if !SKIPPED_FIELDS.contains(&field.name()) {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
