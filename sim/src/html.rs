//! A run's timeline as a self-contained HTML page: a lane per node, partitions, pauses, power
//! cuts and departures shaded across the lanes they struck, client writes, conflict decisions,
//! membership changes and each node's final hash-tree root marked, every mark with its trace line
//! on hover. `just timeline SCENARIO SEED` writes one (and checks it in headless Chromium).
//!
//! The page is drawn in the browser by a small inline script from the events embedded as JSON,
//! so it needs nothing but itself; the events come from the very text the snapshots hold
//! ([`parse`]), so the picture and the snapshot never disagree.

use std::collections::BTreeMap;

use serde::Serialize;

/// What the page shows of one trace line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mark {
    /// Simulated ms since the start of the run.
    pub t: u64,
    /// The node whose lane it goes on (`None`: the whole cluster).
    pub node: Option<String>,
    /// How it is drawn: `write`, `refused`, `conflict`, `member`, `root`, `fault` or `note`.
    pub kind: &'static str,
    /// The trace line, without its time.
    pub text: String,
}

/// A stretch of time a fault held a node (or, with no node, the whole cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Its node (`None`: every lane).
    pub node: Option<String>,
    /// When it began and ended (simulated ms).
    pub from: u64,
    /// When it ended (the end of the run if never undone).
    pub to: u64,
    /// `cut` (partitioned or one-way), `loss`, `tcp` (stalled), `paused`, `off` or `left`.
    pub kind: &'static str,
}

/// A timeline, parsed from a trace's text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Timeline {
    /// The nodes, in order of number.
    pub nodes: Vec<String>,
    /// The last instant in the trace.
    pub end: u64,
    /// Every mark, in time order.
    pub marks: Vec<Mark>,
    /// Every shaded stretch.
    pub spans: Vec<Span>,
}

/// Reads a trace's text (`t=12ms ...` lines) into marks and spans.
pub fn parse(text: &str) -> Timeline {
    let mut timeline = Timeline::default();
    // Open spans by (node, kind).
    let mut open = Open::new();
    let mut nodes: BTreeMap<u64, String> = BTreeMap::new();
    for line in text.lines() {
        let Some((t, rest)) = line
            .strip_prefix("t=")
            .and_then(|l| l.split_once("ms "))
            .and_then(|(t, rest)| Some((t.parse::<u64>().ok()?, rest)))
        else {
            continue;
        };
        timeline.end = timeline.end.max(t);
        let first = rest.split(' ').next().unwrap_or("");
        let node = first
            .strip_prefix("node-")
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| {
                nodes.insert(n, first.to_owned());
                first.to_owned()
            });
        let kind = if let Some(fault) = rest.strip_prefix("fault ") {
            if fault.contains("skipped") {
                "note"
            } else {
                for (span_node, kind, opens) in fault_spans(fault) {
                    let key = (span_node, kind);
                    if opens {
                        open.entry(key).or_insert(t);
                    } else {
                        close(&mut open, &mut timeline.spans, key, t);
                    }
                }
                if fault.starts_with("Heal") {
                    close_network(&mut open, &mut timeline.spans, t);
                }
                "fault"
            }
        } else if rest.starts_with("healed") {
            close_network(&mut open, &mut timeline.spans, t);
            "fault"
        } else if rest.contains(" PUT ") || rest.contains(" DELETE ") {
            if rest.ends_with("-> 200") || rest.ends_with("-> 204") {
                "write"
            } else {
                "refused"
            }
        } else if rest.contains(" conflict decided ") {
            "conflict"
        } else if rest.contains(" member ")
            || rest.contains(" joined the cluster")
            || rest.contains(" rejoin")
        {
            "member"
        } else if rest.contains(" root ") {
            "root"
        } else {
            "note"
        };
        timeline.marks.push(Mark {
            t,
            node,
            kind,
            text: rest.to_owned(),
        });
    }
    for (key, from) in open {
        timeline.spans.push(Span {
            node: key.0,
            from,
            to: timeline.end,
            kind: key.1,
        });
    }
    timeline.nodes = nodes.into_values().collect();
    timeline
}

/// Spans open by (node, kind), with when they opened.
type Open = BTreeMap<(Option<String>, &'static str), u64>;

/// Ends the span `key` at `t`, if it is open.
fn close(open: &mut Open, spans: &mut Vec<Span>, key: (Option<String>, &'static str), t: u64) {
    if let Some(from) = open.remove(&key) {
        spans.push(Span {
            node: key.0,
            from,
            to: t,
            kind: key.1,
        });
    }
}

/// Ends every network span (cut, loss, TCP stall) at `t`: a heal undoes them all.
fn close_network(open: &mut Open, spans: &mut Vec<Span>, t: u64) {
    let network: Vec<_> = open
        .keys()
        .filter(|(_, k)| matches!(*k, "cut" | "loss" | "tcp"))
        .cloned()
        .collect();
    for key in network {
        close(open, spans, key, t);
    }
}

/// The spans a fault (its `Debug` text) opens or closes: (node, kind, opens).
fn fault_spans(fault: &str) -> Vec<(Option<String>, &'static str, bool)> {
    let numbers: Vec<u64> = fault
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let node = |n: &u64| Some(format!("node-{n}"));
    let one = |kind, opens| {
        numbers
            .first()
            .map(|n| (node(n), kind, opens))
            .into_iter()
            .collect()
    };
    match fault.split(['(', ' ']).next().unwrap_or("") {
        "Isolate" => numbers.iter().map(|n| (node(n), "cut", true)).collect(),
        "OneWay" => one("cut", true),
        "Loss" | "Latency" => vec![(None, "loss", true)],
        "Pause" => one("paused", true),
        "Resume" => one("paused", false),
        "PowerOff" | "Die" => one("off", true),
        "PowerOn" => one("off", false),
        "Leave" => one("left", true),
        "TcpStall" => one("tcp", true),
        "TcpResume" => one("tcp", false),
        "Reboot" | "Crash" => one("left", false),
        _ => Vec::new(),
    }
}

/// The page for `timeline`, titled `title`.
pub fn page(title: &str, timeline: &Timeline) -> String {
    let data = serde_json::to_string(timeline)
        .expect("a timeline serializes")
        // Inside <script>, "</" would end the element.
        .replace("</", "<\\/");
    let title = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    TEMPLATE
        .replace("{{TITLE}}", &title)
        .replace("{{DATA}}", &data)
}

/// The page, with `{{TITLE}}` and `{{DATA}}` to fill in.
const TEMPLATE: &str = include_str!("timeline.html");

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "t=36ms 3 nodes started: x
t=80ms node-1 member up node_id=node-2 generation=1
t=100ms fault Isolate([2, 3])
t=120ms node-1 PUT k1 -> 200
t=130ms node-2 PUT k1 -> 503
t=150ms node-3 conflict decided path=c0 reason=majority
t=200ms fault Heal
t=250ms fault PowerOff(1)
t=300ms fault Pause(3)
t=350ms fault TcpStall(2)
t=400ms fault PowerOn(1)
t=450ms fault Leave(2)
t=500ms healed; checking convergence
t=600ms node-1 root 00ff since 0 ms after healing
";

    #[test]
    fn a_trace_becomes_lanes_marks_and_spans() {
        let timeline = parse(TRACE);
        assert_eq!(timeline.nodes, ["node-1", "node-2", "node-3"]);
        assert_eq!(timeline.end, 600);
        let span = |node: &str, from, to, kind| Span {
            node: Some(node.into()),
            from,
            to,
            kind,
        };
        let mut spans = timeline.spans.clone();
        spans.sort_by(|a, b| (a.from, &a.node).cmp(&(b.from, &b.node)));
        assert_eq!(
            spans,
            [
                span("node-2", 100, 200, "cut"),
                span("node-3", 100, 200, "cut"),
                span("node-1", 250, 400, "off"),
                span("node-3", 300, 600, "paused"),
                span("node-2", 350, 500, "tcp"),
                span("node-2", 450, 600, "left"),
            ]
        );
        let kinds: Vec<_> = timeline.marks.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                "note", "member", "fault", "write", "refused", "conflict", "fault", "fault",
                "fault", "fault", "fault", "fault", "fault", "root"
            ]
        );
    }

    #[test]
    fn the_page_embeds_the_timeline_and_escapes_what_could_end_its_script() {
        let mut timeline = parse(TRACE);
        timeline.marks[0].text = "</script><b>".into();
        let html = page("a <title>", &timeline);
        assert!(html.contains("<title>a &lt;title&gt;</title>"));
        assert!(!html.contains("</script><b>"));
        let json = html
            .split("<script id=\"data\" type=\"application/json\">")
            .nth(1)
            .and_then(|rest| rest.split("</script>").next())
            .expect("the data element");
        let back: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
        assert_eq!(back["nodes"].as_array().map(Vec::len), Some(3));
        assert_eq!(back["marks"][0]["text"], "</script><b>");
    }
}
