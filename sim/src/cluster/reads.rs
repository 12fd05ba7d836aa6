//! Reads, checked as they are answered: a node never answers a read with something no client
//! wrote, nor with less than it acknowledged itself before the read began (its acknowledgements
//! are durable on it: a read that goes back on one is a lost write on the read path). A read of
//! another write stamped in the same millisecond is a collision's outcome, not a stale read,
//! and nothing found is a delete's outcome only if some delete may be newer than that write.

use super::safety::{Acked, Asked};

/// What a `GET` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// 200, with this body.
    Found(String),
    /// 404: no live value.
    Absent,
}

/// Checks `answer`, read from `node` for `key`: `floor` is the newest operation `node`
/// acknowledged on the key before the read began, `asked` what clients asked of the key and
/// `acked` every acknowledged operation on it so far. The violation, if any.
pub(super) fn check(
    node: &str,
    key: &str,
    answer: &Answer,
    floor: Option<&Acked>,
    asked: &Asked,
    acked: &[Acked],
) -> Option<String> {
    match answer {
        Answer::Found(value) if !asked.values.contains(value) => Some(format!(
            "invented read: {node} answered {key} with {value:?}, a value no client sent for it"
        )),
        Answer::Found(value) => {
            let floor = floor?;
            // The read's version, if its write was acknowledged (else it is unknown, and newer
            // than anything acknowledged before it for all this check can tell).
            let read = acked
                .iter()
                .find(|o| o.value.as_deref() == Some(value.as_str()))?;
            // An older millisecond: stale. The same one with another uuid is a collision, which
            // the vote may have settled either way (`check_collisions` judges it at the end).
            (read.version.timestamp_ms < floor.version.timestamp_ms).then(|| {
                format!(
                    "stale read: {node} acknowledged {} of {key} at {:?}, then answered a read \
                     with the older {:?}",
                    if floor.delete {
                        "the delete"
                    } else {
                        "a write"
                    },
                    floor.version,
                    read.version
                )
            })
        }
        Answer::Absent => {
            let floor = floor?;
            // A delete explains nothing found if it may be newer than the floor: acknowledged
            // at or after the floor's millisecond (the same one is a collision), or of a version
            // nobody knows (on its way, or answered without one).
            let newer_delete = acked
                .iter()
                .any(|o| o.delete && o.version.timestamp_ms >= floor.version.timestamp_ms);
            (!floor.delete && !newer_delete && asked.deletes_unknown == 0).then(|| {
                format!(
                    "lost write on read: {node} acknowledged {key} at {:?}, no delete that may \
                     be newer was asked, and a read found nothing",
                    floor.version
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use kvs::storage::Version;

    use super::*;

    fn op(ts: u64, value: Option<&str>) -> Acked {
        Acked {
            version: Version::new(ts, [ts as u8; 16]),
            delete: value.is_none(),
            by: "node-1".into(),
            value: value.map(str::to_owned),
        }
    }

    /// What clients asked: `values`, and `unknown` deletes whose version nobody knows.
    fn asked(values: &[&str], unknown: u32) -> Asked {
        Asked {
            values: values
                .iter()
                .map(|v| v.to_string())
                .collect::<BTreeSet<_>>(),
            deleted: unknown > 0,
            deletes_unknown: unknown,
        }
    }

    #[test]
    fn a_read_is_neither_invented_nor_older_than_what_its_node_acknowledged() {
        let (old, new) = (op(5, Some("a")), op(7, Some("b")));
        let acked = [old.clone(), new.clone()];
        let writes = asked(&["a", "b", "c"], 0);
        let found = |v: &str| Answer::Found(v.into());
        let judge = |answer: &Answer, floor: Option<&Acked>, asked: &Asked| {
            check("node-1", "k", answer, floor, asked, &acked)
        };
        // Fine: the floor itself, a newer unacknowledged value, anything without a floor, the
        // other side of a collision (same millisecond).
        assert_eq!(judge(&found("b"), Some(&new), &writes), None);
        let rival = Acked {
            version: Version::new(7, [1; 16]),
            ..op(7, Some("c"))
        };
        let with_rival = [old.clone(), new.clone(), rival];
        assert_eq!(
            check("node-1", "k", &found("c"), Some(&new), &writes, &with_rival),
            None
        );
        assert_eq!(judge(&found("c"), Some(&new), &writes), None);
        assert_eq!(judge(&found("a"), None, &writes), None);
        assert_eq!(judge(&Answer::Absent, None, &writes), None);
        // A value no client sent; an older acknowledged value; nothing though nobody deleted.
        let invented = judge(&found("z"), None, &writes).unwrap();
        assert!(invented.starts_with("invented read"), "{invented}");
        let stale = judge(&found("a"), Some(&new), &writes).unwrap();
        assert!(stale.starts_with("stale read"), "{stale}");
        let lost = judge(&Answer::Absent, Some(&new), &writes).unwrap();
        assert!(lost.starts_with("lost write on read"), "{lost}");
        // Nothing is fine while a delete of unknown version was asked (it may be newer)...
        assert_eq!(
            judge(&Answer::Absent, Some(&new), &asked(&["a", "b"], 1)),
            None
        );
        // ...or once one was acknowledged at or after the floor's millisecond...
        let mut deleted_asked = asked(&["a", "b"], 0);
        deleted_asked.deleted = true;
        for (ts, excused) in [(7, true), (8, true), (6, false)] {
            let with_delete = [old.clone(), new.clone(), op(ts, None)];
            let verdict = check(
                "node-1",
                "k",
                &Answer::Absent,
                Some(&new),
                &deleted_asked,
                &with_delete,
            );
            assert_eq!(verdict.is_none(), excused, "a delete at {ts}: {verdict:?}");
        }
        // ...but not for an acknowledged delete older than the floor (the one at 6 above).
        // The node acknowledged a delete: an older value read back is stale.
        let deleted = op(9, None);
        let back = judge(&found("b"), Some(&deleted), &asked(&["a", "b"], 1)).unwrap();
        assert!(back.contains("the delete"), "{back}");
    }
}
