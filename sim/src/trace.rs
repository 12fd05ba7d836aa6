//! The run's trace: a short, human-readable timeline whose hash proves determinism and whose text
//! is snapshotted for review.
//!
//! Every line starts with the simulated time (`t=12ms PUT users/a -> 200 ...`), so two runs of one
//! seed produce the same text only if they made the same observations at the same virtual times.
//! The hash is FNV-1a (64 bit), written out here: it must not depend on a per-process hash seed
//! (as std's `DefaultHasher` may) or on a crate's version, because hashes are compared across runs.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use madsim::time::TimeHandle;

/// A shared, append-only timeline; clones append to the same trace.
#[derive(Clone)]
pub struct Trace {
    time: TimeHandle,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Trace {
    /// An empty trace on the current madsim runtime's clock.
    pub fn new() -> Self {
        Trace {
            time: TimeHandle::current(),
            lines: Arc::default(),
        }
    }

    /// Appends `event`, stamped with the simulated time in whole milliseconds.
    pub fn record(&self, event: impl fmt::Display) {
        let t = self.time.elapsed().as_millis();
        self.lock().push(format!("t={t}ms {event}"));
    }

    /// The simulated time in whole milliseconds, as lines are stamped.
    pub fn now_ms(&self) -> u64 {
        self.time.elapsed().as_millis() as u64
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// The lines so far, one per line, each ending in a newline.
    pub fn text(&self) -> String {
        self.lock().iter().map(|line| format!("{line}\n")).collect()
    }

    /// The FNV-1a hash of [`text`](Trace::text).
    pub fn hash(&self) -> u64 {
        fnv1a64(self.text().as_bytes())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<String>> {
        // The simulation runs on one thread; a poisoned lock means a test already panicked.
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Trace {
    fn default() -> Self {
        Trace::new()
    }
}

/// Where two runs' timelines part, if they do: the first differing line of each (or the one
/// that only the longer run has), for a determinism failure to name.
pub fn divergence(a: &Trace, b: &Trace) -> Option<String> {
    if a.hash() == b.hash() {
        return None;
    }
    first_difference(&a.lines(), &b.lines())
        .map(|how| format!("the two runs diverged at line {how}"))
}

/// Where two runs' end states (`scenario::end_state`) first differ, if they do.
pub fn end_divergence(a: &[String], b: &[String]) -> Option<String> {
    first_difference(a, b)
        .map(|how| format!("the two runs ended in different states, at line {how}"))
}

/// The first line at which `a` and `b` differ, and the two lines there.
fn first_difference(a: &[String], b: &[String]) -> Option<String> {
    let at = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))?;
    let line = |l: Option<&String>| l.map_or("(nothing)".to_owned(), |l| l.clone());
    Some(format!(
        "{at}: `{}` then `{}`",
        line(a.get(at)),
        line(b.get(at))
    ))
}

/// 64-bit FNV-1a of `bytes`: stable across processes, platforms and releases.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn lines_carry_the_simulated_time_and_the_hash_covers_them() {
        madsim::runtime::Runtime::new().block_on(async {
            let trace = Trace::new();
            trace.record("start");
            let other = Trace::new();
            other.record("start");
            tokio::time::sleep(Duration::from_millis(12)).await;
            trace
                .clone()
                .record(format_args!("PUT {} -> {}", "users/a", 200));
            assert_eq!(trace.lines(), ["t=0ms start", "t=12ms PUT users/a -> 200"]);
            assert_eq!(trace.text(), "t=0ms start\nt=12ms PUT users/a -> 200\n");
            assert_eq!(trace.hash(), fnv1a64(trace.text().as_bytes()));

            assert_eq!(divergence(&trace, &trace.clone()), None);
            assert_eq!(
                divergence(&trace, &other).as_deref(),
                Some(
                    "the two runs diverged at line 1: `t=12ms PUT users/a -> 200` then `(nothing)`"
                )
            );
        });
    }

    #[test]
    fn end_states_that_differ_name_their_first_differing_line() {
        let a: Vec<String> = ["rng 7", "node-1 kvs_frames 3"].map(String::from).to_vec();
        let mut b = a.clone();
        assert_eq!(end_divergence(&a, &b), None);
        b[1] = "node-1 kvs_frames 4".into();
        assert_eq!(
            end_divergence(&a, &b).as_deref(),
            Some(
                "the two runs ended in different states, at line 1: `node-1 kvs_frames 3` then \
                 `node-1 kvs_frames 4`"
            )
        );
        b.truncate(1);
        assert!(end_divergence(&a, &b).is_some_and(|how| how.ends_with("then `(nothing)`")));
    }
}
