//! The stored form of a value: KVS's `{uuid, timestamp, data}` plus the origin node, or a tombstone.

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
    pub data: Option<Vec<u8>>,
}

impl Record {
    /// Whether this record is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.data.is_none()
    }

    /// Encodes for storage.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain owned data into a Vec cannot fail.
        postcard::to_allocvec(self).expect("record encodes")
    }

    /// Decodes a stored record.
    pub fn decode(bytes: &[u8]) -> Result<Record, postcard::Error> {
        postcard::from_bytes(bytes)
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
        assert_eq!(Record::decode(&live.encode()).unwrap(), live);
        assert_eq!(Record::decode(&dead.encode()).unwrap(), dead);
        assert!(!live.is_tombstone());
        assert!(dead.is_tombstone());
        assert!(Record::decode(&[0xff, 0xff, 0xff]).is_err());
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
