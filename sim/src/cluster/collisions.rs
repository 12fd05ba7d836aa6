//! Timestamp collisions: KVS's rules written again here, independently of
//! `kvs::sync::conflict`, and every node's decisions checked against them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::safety::Acked;
use crate::node::SimNode;
use crate::trace::Trace;

/// The decisions `node` lists on `/conflicts/`, with its name. (Its log is in memory: a crash
/// forgets it, so the run reads it before every power cut.)
pub(super) async fn listed_decisions(
    node: &SimNode,
    violations: &mut Vec<String>,
) -> Vec<(String, ListedDecision)> {
    let (_, body) = node
        .request(axum::http::Method::GET, "/conflicts/", "")
        .await;
    let listed: Vec<ListedDecision> = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{}: /conflicts/ is not a decision list: {e}", node.name()));
    if listed.len() >= kvs::sync::conflict::DECISIONS_KEPT {
        violations.push(format!(
            "{}: its decision log is full, so the check cannot see every decision (fewer rounds)",
            node.name()
        ));
    }
    listed
        .into_iter()
        .map(|d| (node.name().to_owned(), d))
        .collect()
}

/// One decision as `GET /conflicts/` lists it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ListedDecision {
    key: String,
    timestamp: u64,
    winner: String,
    reason: String,
    votes: u16,
    oldest_joined_timestamp: u64,
    ballots: Vec<ListedBallot>,
}

#[derive(Debug, Clone, Deserialize)]
struct ListedBallot {
    address: String,
    joined_timestamp: u64,
    uuid: String,
}

/// KVS's rules, written again here independently of `kvs::sync::conflict`: the uuid most ballots
/// hold; on a tie the one whose holders include the earliest join time; then the greater uuid.
/// Returns (winner, its votes, its oldest holder's join time, reason).
fn kvs_rules(ballots: &[ListedBallot]) -> Option<(String, u16, u64, &'static str)> {
    let mut tally: BTreeMap<&str, (u16, u64)> = BTreeMap::new();
    for b in ballots {
        let entry = tally.entry(b.uuid.as_str()).or_insert((0, u64::MAX));
        entry.0 += 1;
        entry.1 = entry.1.min(b.joined_timestamp);
    }
    let mut ranked: Vec<(&str, (u16, u64))> = tally.into_iter().collect();
    // Strongest first. (Lowercase hyphenated uuids order as their bytes do.)
    ranked.sort_by(|a, b| (b.1 .0, a.1 .1, b.0).cmp(&(a.1 .0, b.1 .1, a.0)));
    let (winner, (votes, oldest)) = *ranked.first()?;
    let reason = match ranked.get(1) {
        None => "majority",
        Some((_, (v, _))) if *v < votes => "majority",
        Some((_, (_, o))) if *o > oldest => "oldest_node",
        Some(_) => "uuid",
    };
    Some((winner.to_owned(), votes, oldest, reason))
}

/// Every decision made in the run: those `archived` before power cuts, and those `nodes` list now.
pub(super) async fn all_decisions(
    nodes: &[Arc<SimNode>],
    archived: &[(String, ListedDecision)],
    violations: &mut Vec<String>,
) -> Vec<(String, ListedDecision)> {
    let mut decisions: Vec<(String, ListedDecision)> = archived.to_vec();
    for node in nodes {
        decisions.extend(listed_decisions(node, violations).await);
    }
    decisions
}

/// The strongest decision any node made for the collision on `key` at `timestamp` (votes, then
/// the older holder, then uuid): the one every node must end on.
fn strongest<'a>(
    decisions: &'a [(String, ListedDecision)],
    key: &str,
    timestamp: u64,
) -> Option<&'a ListedDecision> {
    decisions
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d.key == key && d.timestamp == timestamp)
        .max_by(|a, b| {
            (a.votes, b.oldest_joined_timestamp, &a.winner).cmp(&(
                b.votes,
                a.oldest_joined_timestamp,
                &b.winner,
            ))
        })
}

/// The winning uuid of the collision on `key` at `timestamp`, if any node decided it.
pub(super) fn winner<'a>(
    decisions: &'a [(String, ListedDecision)],
    key: &str,
    timestamp: u64,
) -> Option<&'a str> {
    strongest(decisions, key, timestamp).map(|d| d.winner.as_str())
}

/// The collision invariants: every collision still standing at the end was decided by vote;
/// every decision any node made follows KVS's rules over its own ballots (each member once); and
/// every node ended on the strongest decision made for each collision.
pub(super) fn check_collisions(
    decisions: &[(String, ListedDecision)],
    finals: &[(String, kvs::storage::Record)],
    acked: &BTreeMap<String, Vec<Acked>>,
    trace: &Trace,
    violations: &mut Vec<String>,
) {
    for (node, d) in decisions {
        let voters: std::collections::BTreeSet<&str> =
            d.ballots.iter().map(|b| b.address.as_str()).collect();
        if voters.len() != d.ballots.len() {
            violations.push(format!(
                "conflict rule: {node} counted a member twice deciding {}@{}",
                d.key, d.timestamp
            ));
        }
        let expected = kvs_rules(&d.ballots);
        let got = (
            d.winner.clone(),
            d.votes,
            d.oldest_joined_timestamp,
            d.reason.as_str(),
        );
        if expected
            .as_ref()
            .map(|(w, v, o, r)| (w.clone(), *v, *o, *r))
            != Some(got.clone())
        {
            violations.push(format!(
                "conflict rule: {node} decided {}@{} as {got:?}, KVS's rules over its ballots give {expected:?}",
                d.key, d.timestamp
            ));
        }
    }
    let finals: BTreeMap<&str, &kvs::storage::Record> =
        finals.iter().map(|(k, r)| (k.as_str(), r)).collect();
    let (mut met, mut decided) = (0, 0);
    for (key, ops) in acked {
        let mut by_ts: BTreeMap<u64, std::collections::BTreeSet<[u8; 16]>> = BTreeMap::new();
        for op in ops.iter().filter(|o| !o.delete) {
            by_ts
                .entry(op.version.timestamp_ms)
                .or_default()
                .insert(op.version.uuid);
        }
        let Some(record) = finals.get(key.as_str()) else {
            continue;
        };
        for (ts, uuids) in by_ts.iter().filter(|(_, u)| u.len() > 1) {
            met += 1;
            if record.version.timestamp_ms != *ts {
                continue; // superseded by a newer write
            }
            let Some(resolution) = record.version.resolution else {
                violations.push(format!(
                    "collision on {key}@{ts} between {} writes left undecided",
                    uuids.len()
                ));
                continue;
            };
            decided += 1;
            let strongest = strongest(decisions, key, *ts);
            let ended = (
                record.version.uuid_string(),
                resolution.votes,
                resolution.oldest_joined_ms,
            );
            match strongest {
                None => violations.push(format!(
                    "collision on {key}@{ts} ended decided {ended:?}, but no node lists that decision"
                )),
                Some(d) if (d.winner.clone(), d.votes, d.oldest_joined_timestamp) != ended => {
                    violations.push(format!(
                        "collision on {key}@{ts}: every node ended on {ended:?}, not on the strongest decision {:?}",
                        (&d.winner, d.votes, d.oldest_joined_timestamp)
                    ))
                }
                Some(_) => {}
            }
        }
    }
    if met > 0 {
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, d) in decisions {
            *reasons.entry(d.reason.as_str()).or_default() += 1;
        }
        trace.record(format_args!(
            "collisions: {met} met, {decided} standing at the end and decided; decisions by reason {reasons:?}"
        ));
    }
}
