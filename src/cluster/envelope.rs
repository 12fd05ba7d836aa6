//! The authenticated, versioned envelope around every gossip datagram:
//! `[version: u8][payload][tag: 32 bytes]`, where the tag is BLAKE3 keyed with the gossip key over
//! the version and the payload.
//!
//! Opening checks the size before anything else and the tag before the payload is parsed, so a
//! datagram from a process without the secret never reaches the protocol code, and a malformed
//! or oversized one costs a bounded amount of work. A replayed datagram is authentic but old:
//! SWIM ignores it (probe numbers and incarnations only move forward), which is why the envelope
//! carries no sequence number.

use super::secret::{ClusterSecret, PurposeKeys};

/// The envelope format this build writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of the authentication tag.
pub const TAG_BYTES: usize = 32;
/// Bytes the envelope adds to a payload.
pub const OVERHEAD: usize = 1 + TAG_BYTES;
/// Largest datagram kvs sends or accepts. Our own bound: it keeps a datagram in one Ethernet
/// frame, and madsim's UDP has no MTU to enforce one.
pub const DATAGRAM_BYTES_MAX: usize = 1400;
/// Largest payload of one datagram: what the membership protocol may put in a packet.
pub const PAYLOAD_BYTES_MAX: usize = DATAGRAM_BYTES_MAX - OVERHEAD;

const GOSSIP_CONTEXT: &str = "kvs 2026-11 gossip datagram v1";

/// Why a datagram was dropped (each reason is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum Rejected {
    /// Shorter than the envelope itself.
    #[error("truncated")]
    Truncated,
    /// Longer than [`DATAGRAM_BYTES_MAX`].
    #[error("oversized")]
    Oversized,
    /// A version this build does not speak.
    #[error("unknown version")]
    Version,
    /// The tag does not match any accepted secret: not from our cluster, or altered.
    #[error("bad MAC")]
    Mac,
    /// Authentic, but the protocol could not parse it.
    #[error("malformed")]
    Malformed,
}

impl Rejected {
    /// Every reason, for counters.
    pub const ALL: [Rejected; 5] = [
        Rejected::Truncated,
        Rejected::Oversized,
        Rejected::Version,
        Rejected::Mac,
        Rejected::Malformed,
    ];

    /// The reason as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejected::Truncated => "truncated",
            Rejected::Oversized => "oversized",
            Rejected::Version => "version",
            Rejected::Mac => "bad_mac",
            Rejected::Malformed => "malformed",
        }
    }
}

/// Seals and opens datagrams: signs with the current secret, accepts the current and previous
/// ones.
#[derive(Clone)]
pub struct Sealer {
    keys: PurposeKeys,
}

impl Sealer {
    /// Keys from `current` (signs and verifies) and `previous` (verify only, during a rotation).
    pub fn new(current: &ClusterSecret, previous: &[ClusterSecret]) -> Sealer {
        Sealer {
            keys: PurposeKeys::derive(GOSSIP_CONTEXT, current, previous),
        }
    }

    /// The datagram carrying `payload`. Panics if the payload exceeds [`PAYLOAD_BYTES_MAX`]: the
    /// protocol is configured never to produce one.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        assert!(
            payload.len() <= PAYLOAD_BYTES_MAX,
            "a {}-byte gossip payload exceeds {PAYLOAD_BYTES_MAX}",
            payload.len()
        );
        let mut datagram = Vec::with_capacity(payload.len() + OVERHEAD);
        datagram.push(VERSION);
        datagram.extend_from_slice(payload);
        let tag = tag(&self.keys.signing, &datagram);
        datagram.extend_from_slice(tag.as_bytes());
        datagram
    }

    /// The payload of an authentic datagram of our version.
    pub fn open<'a>(&self, datagram: &'a [u8]) -> Result<&'a [u8], Rejected> {
        if datagram.len() > DATAGRAM_BYTES_MAX {
            return Err(Rejected::Oversized);
        }
        if datagram.len() < OVERHEAD {
            return Err(Rejected::Truncated);
        }
        if datagram[0] != VERSION {
            return Err(Rejected::Version);
        }
        let (signed, received) = datagram.split_at(datagram.len() - TAG_BYTES);
        let received: [u8; TAG_BYTES] = received.try_into().expect("split at TAG_BYTES");
        let received = blake3::Hash::from_bytes(received);
        // `Hash` equality is constant-time.
        if !self
            .keys
            .accepted
            .iter()
            .any(|key| tag(key, signed) == received)
        {
            return Err(Rejected::Mac);
        }
        Ok(&signed[1..])
    }
}

fn tag(key: &[u8; 32], signed: &[u8]) -> blake3::Hash {
    blake3::keyed_hash(key, signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> ClusterSecret {
        ClusterSecret::from_hex(&format!("{byte:02x}").repeat(32)).unwrap()
    }

    #[test]
    fn a_sealed_datagram_opens_and_any_change_is_refused() {
        let sealer = Sealer::new(&secret(1), &[]);
        let datagram = sealer.seal(b"hello");
        assert_eq!(datagram.len(), 5 + OVERHEAD);
        assert_eq!(sealer.open(&datagram), Ok(&b"hello"[..]));
        for i in 0..datagram.len() {
            let mut altered = datagram.clone();
            altered[i] ^= 0x01;
            let expected = if i == 0 {
                Rejected::Version
            } else {
                Rejected::Mac
            };
            assert_eq!(sealer.open(&altered), Err(expected), "byte {i}");
        }
        assert_eq!(
            sealer.open(&datagram[..OVERHEAD - 1]),
            Err(Rejected::Truncated)
        );
        assert_eq!(
            sealer.open(&vec![VERSION; DATAGRAM_BYTES_MAX + 1]),
            Err(Rejected::Oversized)
        );
        // The empty payload is a valid envelope (the protocol decides what it means).
        assert_eq!(sealer.open(&sealer.seal(b"")), Ok(&b""[..]));
    }

    #[test]
    fn another_cluster_is_refused_and_a_rotation_accepts_the_previous_secret() {
        let old = Sealer::new(&secret(1), &[]);
        let other = Sealer::new(&secret(2), &[]);
        assert_eq!(other.open(&old.seal(b"x")), Err(Rejected::Mac));
        let rotated = Sealer::new(&secret(2), &[secret(1)]);
        assert_eq!(rotated.open(&old.seal(b"x")), Ok(&b"x"[..]));
        // It signs with the new one, which a node still on the old secret alone refuses.
        assert_eq!(old.open(&rotated.seal(b"y")), Err(Rejected::Mac));
        assert_eq!(other.open(&rotated.seal(b"y")), Ok(&b"y"[..]));
    }

    #[test]
    fn the_largest_payload_fits_the_largest_datagram() {
        let sealer = Sealer::new(&secret(1), &[]);
        let datagram = sealer.seal(&vec![7; PAYLOAD_BYTES_MAX]);
        assert_eq!(datagram.len(), DATAGRAM_BYTES_MAX);
        assert!(sealer.open(&datagram).is_ok());
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn sealing_an_oversized_payload_is_a_bug() {
        Sealer::new(&secret(1), &[]).seal(&vec![0; PAYLOAD_BYTES_MAX + 1]);
    }
}
