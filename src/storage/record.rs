//! The stored form of a value: KVS's `{uuid, timestamp, data}` plus the origin node, or a tombstone.
//! A typed redb value (postcard inside), so tables hold records rather than bytes to decode.

use redb::{TypeName, Value};
use serde::{Deserialize, Serialize};

/// Identifies one write of one key, and orders a key's versions: the newer timestamp wins; on
/// equal timestamps (a collision: two nodes wrote the key in the same millisecond) a version that
/// carries a cluster decision ([`Resolution`]) beats one that does not, a stronger decision beats a
/// weaker one, and the uuid breaks what is left. The order is total and depends on the versions
/// alone, so every node that has seen the same versions keeps the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Milliseconds since the Unix epoch on the writing node's (hybrid) clock.
    pub timestamp_ms: u64,
    /// Random v4 uuid drawn by the writing node.
    pub uuid: [u8; 16],
    /// The vote that made this write the winner of a collision, if one did (`sync::conflict`).
    pub resolution: Option<Resolution>,
}

/// The outcome of KVS's conflict vote, carried by the winning version so that two nodes that
/// decided the same collision from different votes still end on one winner: the stronger
/// decision wins everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resolution {
    /// How many members held the winning version when asked.
    pub votes: u16,
    /// The earliest `joined_timestamp` among them (ms): an older holder makes a stronger decision.
    pub oldest_joined_ms: u64,
}

impl Resolution {
    /// Orders decisions: more votes, then the older holder.
    fn strength(&self) -> (u16, std::cmp::Reverse<u64>) {
        (self.votes, std::cmp::Reverse(self.oldest_joined_ms))
    }
}

impl Ord for Resolution {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.strength().cmp(&other.strength())
    }
}

impl PartialOrd for Resolution {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.timestamp_ms, self.resolution, self.uuid).cmp(&(
            other.timestamp_ms,
            other.resolution,
            other.uuid,
        ))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Version {
    /// A fresh write's version: no decision yet.
    pub fn new(timestamp_ms: u64, uuid: [u8; 16]) -> Self {
        Version {
            timestamp_ms,
            uuid,
            resolution: None,
        }
    }

    /// The uuid in its canonical hyphenated text form, as the API shows it.
    pub fn uuid_string(&self) -> String {
        uuid::Uuid::from_bytes(self.uuid).hyphenated().to_string()
    }

    /// Whether `self` and `other` are the same write (a decision may have been added since).
    pub fn same_write(&self, other: &Version) -> bool {
        (self.timestamp_ms, self.uuid) == (other.timestamp_ms, other.uuid)
    }
}

/// One key's current state on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Which write this is.
    pub version: Version,
    /// The node that accepted the write from a client.
    pub origin: String,
    /// The JSON document exactly as the client sent it; `None` for a delete (tombstone).
    /// (`serde_bytes`: postcard then copies the bytes in one go instead of one `u8` at a time,
    /// with the same encoding.)
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
}

impl Record {
    /// Whether this record is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.data.is_none()
    }
}

impl Value for Record {
    type SelfType<'a> = Record;
    type AsBytes<'a> = Vec<u8>;

    fn fixed_width() -> Option<usize> {
        None
    }

    /// redb hands back only bytes it checksummed and that `as_bytes` wrote, so bytes that do not
    /// decode mean a database written by an incompatible build: a bug, not an input to handle.
    fn from_bytes<'a>(data: &'a [u8]) -> Record
    where
        Self: 'a,
    {
        postcard::from_bytes(data)
            .expect("a stored record decodes (database written by this format)")
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a Record) -> Vec<u8>
    where
        Self: 'b,
    {
        // Serializing plain owned data into a Vec cannot fail.
        postcard::to_allocvec(value).expect("record encodes")
    }

    fn type_name() -> TypeName {
        TypeName::new("kvs::Record/2")
    }
}

/// What a writer needs of a key's current record to decide a write: its version and whether it
/// is a tombstone. Reading it copies no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    /// The record's version.
    pub version: Version,
    /// Whether the record is a delete marker.
    pub tombstone: bool,
}

impl Record {
    /// This record's head.
    pub fn head(&self) -> RecordHead {
        RecordHead {
            version: self.version,
            tombstone: self.is_tombstone(),
        }
    }
}

/// The head alone of a stored [`Record`]: the same stored bytes, decoded only as far as the
/// version (its first field) and whether a value follows the origin, so that a writer's lookups
/// and the listing of a segment's (key, version) pairs for anti-entropy copy no value (one may
/// be 64 MiB). Read-only: nothing is ever stored through it.
#[derive(Debug)]
pub struct StoredHead;

impl Value for StoredHead {
    type SelfType<'a> = RecordHead;
    type AsBytes<'a> = Vec<u8>;

    fn fixed_width() -> Option<usize> {
        Record::fixed_width()
    }

    fn from_bytes<'a>(data: &'a [u8]) -> RecordHead
    where
        Self: 'a,
    {
        const STORED: &str = "a stored record decodes (database written by this format)";
        let (version, rest) = postcard::take_from_bytes::<Version>(data).expect(STORED);
        // The origin: a length-prefixed string, skipped as bytes (same encoding).
        let (_, rest) = postcard::take_from_bytes::<&[u8]>(rest).expect(STORED);
        // The value: an option, tagged 0 (none: a tombstone) or 1 (some, the bytes follow).
        let tombstone = match rest.first() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!("{STORED}"),
        };
        RecordHead { version, tombstone }
    }

    fn as_bytes<'a, 'b: 'a>(_: &'a RecordHead) -> Vec<u8>
    where
        Self: 'b,
    {
        unreachable!("records are stored as whole records, never through their head")
    }

    /// The record's own: the same table, read through another type.
    fn type_name() -> TypeName {
        Record::type_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_records_head_reads_alone() {
        for data in [None, Some(vec![b'7'; 100_000]), Some(Vec::new())] {
            let record = Record {
                version: Version {
                    timestamp_ms: 1_700_000_000_123,
                    uuid: [9; 16],
                    resolution: Some(Resolution {
                        votes: 3,
                        oldest_joined_ms: 5,
                    }),
                },
                origin: "node-a".into(),
                data,
            };
            let bytes = Record::as_bytes(&record);
            assert_eq!(StoredHead::from_bytes(&bytes), record.head());
        }
    }

    #[test]
    fn record_round_trips_and_tombstones_are_marked() {
        let live = Record {
            version: Version {
                timestamp_ms: 1_672_531_200_000,
                uuid: [7; 16],
                resolution: Some(Resolution {
                    votes: 3,
                    oldest_joined_ms: 12,
                }),
            },
            origin: "node-a".into(),
            data: Some(br#"{"a": 1}"#.to_vec()),
        };
        let dead = Record {
            data: None,
            ..live.clone()
        };
        for record in [&live, &dead] {
            assert_eq!(&Record::from_bytes(&Record::as_bytes(record)), record);
        }
        assert!(!live.is_tombstone());
        assert!(dead.is_tombstone());
    }

    #[test]
    fn versions_order_by_timestamp_then_decision_then_uuid() {
        let decided = |ts, uuid, votes, oldest_joined_ms| Version {
            timestamp_ms: ts,
            uuid: [uuid; 16],
            resolution: Some(Resolution {
                votes,
                oldest_joined_ms,
            }),
        };
        let ascending = [
            Version::new(5, [9; 16]),
            // A newer timestamp beats everything older, decided or not.
            Version::new(6, [0; 16]),
            Version::new(6, [1; 16]),
            // Any decision beats every undecided version at its timestamp...
            decided(6, 0, 1, 100),
            // ...an older holder beats a younger one at equal votes...
            decided(6, 0, 1, 50),
            // ...more votes beat an older holder...
            decided(6, 0, 2, 100),
            // ...and the uuid breaks what is left.
            decided(6, 1, 2, 100),
            Version::new(7, [0; 16]),
        ];
        for pair in ascending.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
        }
        assert!(decided(6, 1, 2, 100).same_write(&Version::new(6, [1; 16])));
        assert!(!decided(6, 1, 2, 100).same_write(&Version::new(6, [0; 16])));
        assert_eq!(
            Version::new(1, [0xab; 16]).uuid_string(),
            "abababab-abab-abab-abab-abababababab"
        );
    }
}
