//! Frames: the TCP side of the cluster: replication, anti-entropy, bootstrap and conflict votes.
//!
//! A connection opens with a hello, `MAGIC`, a version byte and a random nonce chosen by the
//! connecting side. Then each message is one frame, `[body length: u32 BE][body][tag: 32 B]`,
//! the tag being BLAKE3 keyed with the cluster's frame key over (nonce, direction, sequence
//! number, body): a frame cannot be forged without the secret, nor replayed into another
//! connection, nor reordered or replayed within one (each side counts its frames). The length
//! is checked against [`BODY_BYTES_MAX`] before anything is allocated. Bodies are postcard.
//!
//! A request and its response carry the same correlation id; a connection carries one request
//! at a time. Re-sending a whole old connection is possible for an eavesdropper but harmless:
//! replicated records only replace older versions (`storage::Applied`).

use serde::{Deserialize, Serialize};

use super::envelope::Rejected;
use super::secret::{ClusterSecret, PurposeKeys};
use crate::api::KEY_BYTES_MAX;
use crate::limits::VALUE_BYTES_MAX;
use crate::storage::{Horizon, Record, Version, RECORD_OVERHEAD_BYTES_MAX};

/// The first bytes of a frame connection: what tells it apart from HTTP on the shared port.
pub const MAGIC: [u8; 4] = *b"KVS\x01";
/// The frame format this build speaks (2: versions carry conflict decisions, votes; 3: segment
/// lists carry the purge watermark; 4: branches and segment lists carry the whole horizon; 5:
/// anti-entropy rounds end with a durability barrier; 6: branches and the barrier's answer say
/// which start of the node answered).
pub const VERSION: u8 = 6;
/// Bytes of the connection nonce.
pub const NONCE_BYTES: usize = 16;
/// Bytes of the hello: magic, version, nonce.
pub const HELLO_BYTES: usize = MAGIC.len() + 1 + NONCE_BYTES;
/// Bytes of a frame's tag.
pub const TAG_BYTES: usize = 32;
/// Largest frame body: one push of the largest record (plus its envelope), or several smaller.
pub const BODY_BYTES_MAX: usize = VALUE_BYTES_MAX + KEY_BYTES_MAX + RECORD_OVERHEAD_BYTES_MAX + 64;
/// Largest total size of the records one push carries (a push of a single larger record is
/// alone in its frame).
pub const PUSH_BYTES_MAX: usize = 1024 * 1024;
const _: () = assert!(PUSH_BYTES_MAX < BODY_BYTES_MAX);

const FRAME_CONTEXT: &str = "kvs 2026-11 sync frame v1";

/// A whole frame's bytes on the wire for a body of `body_len`: length, body, tag.
pub const fn wire_len(body_len: usize) -> usize {
    4 + body_len + TAG_BYTES
}

/// Which way a frame goes on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting side.
    Request,
    /// From the accepting side.
    Response,
}

/// A request from one node's sync actor to another's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Records just written on the sender (replication), or that anti-entropy found the
    /// receiver lacks.
    Push {
        /// (key path, record) pairs.
        records: Vec<(String, Record)>,
    },
    /// Anti-entropy, step 1: the receiver's hash-tree branch hashes.
    Branches,
    /// Step 2: the segment hashes under these branches.
    Leaves {
        /// Branch numbers (below `sync::BRANCHES`).
        branches: Vec<u16>,
    },
    /// Step 3: the keys and versions of these segments.
    Segments {
        /// Segment numbers (below `sync::SEGMENTS`).
        segments: Vec<u16>,
    },
    /// Step 4: the records of these keys.
    Fetch {
        /// Key paths.
        keys: Vec<String>,
    },
    /// A conflict vote: the version this node holds for each key (KVS's "query all healthy
    /// members for their version").
    Versions {
        /// Key paths (at most `sync::repair::FETCH_KEYS_MAX`).
        keys: Vec<String>,
    },
    /// Bootstrap: the records whose versions come after `(after_ms, after_path)` in time order.
    Since {
        /// Timestamp of the cursor.
        after_ms: u64,
        /// Key path of the cursor.
        after_path: String,
    },
    /// The end of a whole anti-entropy round: answered [`SyncResponse::Synced`] only once the
    /// receiver synced every record it took before this request, so that the asker may collect
    /// the deletes the receiver now holds.
    Barrier,
}

impl SyncRequest {
    /// The request's kind, as a metric label: anti-entropy's are `branches`, `leaves`,
    /// `segments` and `fetch`.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncRequest::Push { .. } => "push",
            SyncRequest::Branches => "branches",
            SyncRequest::Leaves { .. } => "leaves",
            SyncRequest::Segments { .. } => "segments",
            SyncRequest::Fetch { .. } => "fetch",
            SyncRequest::Versions { .. } => "versions",
            SyncRequest::Since { .. } => "since",
            SyncRequest::Barrier => "barrier",
        }
    }
}

/// The answer to a [`SyncRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// Taken: the records are queued for this node's storage.
    Accepted,
    /// This node's storage is behind, or the request was not valid: send again later.
    Busy,
    /// Every branch hash, in order, and what the answering node vouches for: an asker that
    /// finds the same hashes holds the same keys, and may vouch for the same.
    Branches {
        /// The branch hashes.
        hashes: Vec<u64>,
        /// The answering node's horizon, read before its hashes.
        horizon: Horizon,
        /// Which start of the answering node answered (`sync::boot_id`: its generation and join
        /// time): a barrier answered by a later start proves nothing about what this one took.
        boot: u64,
    },
    /// For each branch asked, its segment hashes in order.
    Leaves(Vec<(u16, Vec<u64>)>),
    /// Keys and versions of the segments asked.
    Segments(SegmentLists),
    /// The records of the keys asked that this node holds (as many as fit).
    Records(Vec<(String, Record)>),
    /// The next records in time order after the cursor asked (empty: none left).
    Page(Vec<(String, Record)>),
    /// For each key asked, in order, the version this node holds (`None`: none).
    Versions(Vec<Option<Version>>),
    /// Every record this node took before the [`SyncRequest::Barrier`] is synced to its disk,
    /// since its start `boot` (as in [`SyncResponse::Branches`]): records an earlier start took
    /// and lost in a power cut are not among them.
    Synced {
        /// Which start of the answering node synced them.
        boot: u64,
    },
}

/// The answer to [`SyncRequest::Segments`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentLists {
    /// For each segment answered (whole segments, as many as fit), its keys and versions.
    pub lists: Vec<(u16, Vec<(String, Version)>)>,
    /// Whether the last segment listed is cut short (too large to list whole): its list is a
    /// prefix in key order, and a key after its last may still be held.
    pub truncated: bool,
    /// What the answering node vouches for, read before its lists: a key it lacks that the
    /// asker holds at a version the horizon says was deleted is forgotten
    /// (`sync::repair::compare_segments`).
    pub horizon: Horizon,
}

/// A request with its correlation id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRequest {
    /// Chosen by the requester, echoed in the response.
    pub id: u64,
    /// What is asked.
    pub request: SyncRequest,
}

/// A response with its correlation id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireResponse {
    /// The request's id.
    pub id: u64,
    /// The answer.
    pub response: SyncResponse,
}

/// Signs and checks frames: signs with the current secret, accepts current and previous ones.
#[derive(Clone)]
pub struct FrameKeys {
    keys: PurposeKeys,
}

impl FrameKeys {
    /// Keys from `current` (signs and verifies) and `previous` (verify only).
    pub fn new(current: &ClusterSecret, previous: &[ClusterSecret]) -> FrameKeys {
        FrameKeys {
            keys: PurposeKeys::derive(FRAME_CONTEXT, current, previous),
        }
    }

    /// The whole frame for `body`: length, body, tag.
    pub fn seal(
        &self,
        nonce: &[u8; NONCE_BYTES],
        dir: Direction,
        seq: u64,
        body: &[u8],
    ) -> Vec<u8> {
        assert!(
            body.len() <= BODY_BYTES_MAX,
            "a {}-byte frame body",
            body.len()
        );
        let len = u32::try_from(body.len()).expect("BODY_BYTES_MAX fits a u32");
        let mut frame = Vec::with_capacity(wire_len(body.len()));
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(body);
        frame.extend_from_slice(tag(&self.keys.signing, nonce, dir, seq, body).as_bytes());
        frame
    }

    /// Whether `tag` authenticates `body` as frame `seq` going `dir` on the connection `nonce`.
    pub fn check(
        &self,
        nonce: &[u8; NONCE_BYTES],
        dir: Direction,
        seq: u64,
        body: &[u8],
        tag_bytes: &[u8; TAG_BYTES],
    ) -> Result<(), Rejected> {
        let received = blake3::Hash::from_bytes(*tag_bytes);
        // `Hash` equality is constant-time.
        if self
            .keys
            .accepted
            .iter()
            .any(|key| tag(key, nonce, dir, seq, body) == received)
        {
            Ok(())
        } else {
            Err(Rejected::Mac)
        }
    }
}

/// The body length a frame header announces, refused above [`BODY_BYTES_MAX`].
pub fn body_len(header: [u8; 4]) -> Result<usize, Rejected> {
    let len = u32::from_be_bytes(header) as usize;
    if len > BODY_BYTES_MAX {
        return Err(Rejected::Oversized);
    }
    Ok(len)
}

/// The hello a connecting side sends.
pub fn hello(nonce: &[u8; NONCE_BYTES]) -> [u8; HELLO_BYTES] {
    let mut out = [0u8; HELLO_BYTES];
    out[..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    out[5..].copy_from_slice(nonce);
    out
}

/// The nonce of a hello, if it is one of ours.
pub fn parse_hello(bytes: &[u8; HELLO_BYTES]) -> Result<[u8; NONCE_BYTES], Rejected> {
    if bytes[..4] != MAGIC {
        return Err(Rejected::Malformed);
    }
    if bytes[4] != VERSION {
        return Err(Rejected::Version);
    }
    Ok(bytes[5..].try_into().expect("NONCE_BYTES"))
}

fn tag(
    key: &[u8; 32],
    nonce: &[u8; NONCE_BYTES],
    dir: Direction,
    seq: u64,
    body: &[u8],
) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(nonce);
    hasher.update(&[match dir {
        Direction::Request => 0,
        Direction::Response => 1,
    }]);
    hasher.update(&seq.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(byte: u8) -> FrameKeys {
        FrameKeys::new(
            &ClusterSecret::from_hex(&format!("{byte:02x}").repeat(32)).unwrap(),
            &[],
        )
    }

    fn split(frame: &[u8]) -> (usize, &[u8], [u8; TAG_BYTES]) {
        let len = body_len(frame[..4].try_into().unwrap()).unwrap();
        let body = &frame[4..4 + len];
        (len, body, frame[4 + len..].try_into().unwrap())
    }

    #[test]
    fn a_frame_checks_only_on_its_connection_direction_and_position() {
        let k = keys(1);
        let nonce = [7u8; NONCE_BYTES];
        let frame = k.seal(&nonce, Direction::Request, 3, b"body");
        let (len, body, tag) = split(&frame);
        assert_eq!((len, body), (4, &b"body"[..]));
        assert_eq!(k.check(&nonce, Direction::Request, 3, body, &tag), Ok(()));
        let refused = Err(Rejected::Mac);
        assert_eq!(
            k.check(&[8; NONCE_BYTES], Direction::Request, 3, body, &tag),
            refused
        );
        assert_eq!(k.check(&nonce, Direction::Response, 3, body, &tag), refused);
        assert_eq!(k.check(&nonce, Direction::Request, 4, body, &tag), refused);
        assert_eq!(
            k.check(&nonce, Direction::Request, 3, b"bodz", &tag),
            refused
        );
        assert_eq!(
            keys(2).check(&nonce, Direction::Request, 3, body, &tag),
            refused
        );
    }

    #[test]
    fn oversized_lengths_are_refused_before_reading_and_hellos_are_checked() {
        assert_eq!(
            body_len((BODY_BYTES_MAX as u32).to_be_bytes()),
            Ok(BODY_BYTES_MAX)
        );
        assert_eq!(
            body_len((BODY_BYTES_MAX as u32 + 1).to_be_bytes()),
            Err(Rejected::Oversized)
        );
        let nonce = [3u8; NONCE_BYTES];
        assert_eq!(parse_hello(&hello(&nonce)), Ok(nonce));
        let mut http = [0u8; HELLO_BYTES];
        http[..4].copy_from_slice(b"GET ");
        assert_eq!(parse_hello(&http), Err(Rejected::Malformed));
        let mut future = hello(&nonce);
        future[4] = VERSION + 1;
        assert_eq!(parse_hello(&future), Err(Rejected::Version));
    }

    #[test]
    fn the_largest_record_fits_one_frame() {
        let request = WireRequest {
            id: u64::MAX,
            request: SyncRequest::Push {
                records: vec![crate::storage::testing::largest_record()],
            },
        };
        let body = postcard::to_allocvec(&request).unwrap();
        assert!(
            body.len() <= BODY_BYTES_MAX,
            "{} > {BODY_BYTES_MAX}",
            body.len()
        );
    }
}
