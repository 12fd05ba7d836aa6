//! The stored form of a value: KVS's `{uuid, timestamp, data}` plus the origin node, or a tombstone.
//! A typed redb value (postcard inside), so tables hold records rather than bytes to decode.

use redb::{TypeName, Value};
use serde::{Deserialize, Serialize};

/// Identifies one write of one key. Newer `timestamp_ms` wins; equal timestamps with different
/// uuids are conflicts, resolved by the cluster (majority, then oldest node, then uuid order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Milliseconds since the Unix epoch on the writing node's (hybrid) clock.
    pub timestamp_ms: u64,
    /// Random v4 uuid drawn by the writing node.
    pub uuid: [u8; 16],
}

impl Version {
    /// The uuid in its canonical hyphenated text form, as the API shows it.
    pub fn uuid_string(&self) -> String {
        uuid::Uuid::from_bytes(self.uuid).hyphenated().to_string()
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
        TypeName::new("kvs::Record")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_tombstones_are_marked() {
        let live = Record {
            version: Version {
                timestamp_ms: 1_672_531_200_000,
                uuid: [7; 16],
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
    fn versions_order_by_timestamp_then_uuid() {
        let a = Version {
            timestamp_ms: 5,
            uuid: [9; 16],
        };
        let b = Version {
            timestamp_ms: 6,
            uuid: [0; 16],
        };
        let c = Version {
            timestamp_ms: 6,
            uuid: [1; 16],
        };
        assert!(a < b && b < c);
        assert_eq!(
            Version {
                timestamp_ms: 1,
                uuid: [0xab; 16]
            }
            .uuid_string(),
            "abababab-abab-abab-abab-abababababab"
        );
    }
}
