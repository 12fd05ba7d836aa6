//! The cluster secret: 256 bits shared by every node of a cluster, from which the keys that
//! authenticate gossip datagrams and sync frames are derived. A process without it can neither
//! join nor inject anything.
//!
//! Rotation without a cluster-wide restart: a node signs with its current secret and accepts
//! its current and previous ones (`cluster_secrets_previous`), so the new secret can be rolled
//! out node by node, then the old one dropped.

use std::fmt;

use rand_core::Rng;

/// Bytes in a secret (256 bits).
pub const SECRET_BYTES: usize = 32;

/// A cluster secret. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; SECRET_BYTES]);

/// Why a secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not 64 hexadecimal digits.
    #[error("must be 64 hexadecimal digits (256 bits), got {0} characters")]
    Length(usize),
    /// A character that is not a hexadecimal digit.
    #[error("must be hexadecimal digits only (found {0:?})")]
    Digit(char),
}

impl ClusterSecret {
    /// Parses 64 hexadecimal digits (either case; surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<ClusterSecret, SecretError> {
        let text = text.trim();
        if text.len() != SECRET_BYTES * 2 {
            return Err(SecretError::Length(text.chars().count()));
        }
        let mut bytes = [0u8; SECRET_BYTES];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let digit = |b: u8| {
                (b as char)
                    .to_digit(16)
                    .ok_or(SecretError::Digit(b as char))
            };
            bytes[i] = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
        }
        Ok(ClusterSecret(bytes))
    }

    /// A fresh random secret.
    pub fn generate(rng: &mut impl Rng) -> ClusterSecret {
        let mut bytes = [0u8; SECRET_BYTES];
        rng.fill_bytes(&mut bytes);
        ClusterSecret(bytes)
    }

    /// The secret as 64 lowercase hexadecimal digits, for the file a new cluster's first node
    /// writes. Deliberately not `Display`.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key for one purpose (`context` names it), so gossip and sync never share a key.
    pub fn derive(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.0)
    }
}

/// The keys of one purpose: the current secret's, which signs, and every accepted one's (current
/// first, then the previous secrets'), which verify.
#[derive(Clone)]
pub struct PurposeKeys {
    /// Signs.
    pub signing: [u8; 32],
    /// Verifies (the signing key included).
    pub accepted: Vec<[u8; 32]>,
}

impl PurposeKeys {
    /// The keys for `context` from `current` and `previous`.
    pub fn derive(context: &str, current: &ClusterSecret, previous: &[ClusterSecret]) -> Self {
        let signing = current.derive(context);
        let mut accepted = vec![signing];
        accepted.extend(previous.iter().map(|s| s.derive(context)));
        PurposeKeys { signing, accepted }
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha12Rng;
    use rand_core::SeedableRng;

    #[test]
    fn hex_round_trips_and_bad_text_is_refused() {
        let secret = ClusterSecret::generate(&mut ChaCha12Rng::seed_from_u64(1));
        let hex = secret.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(ClusterSecret::from_hex(&hex).unwrap(), secret);
        assert_eq!(
            ClusterSecret::from_hex(&format!(" {} \n", hex.to_uppercase())).unwrap(),
            secret
        );
        assert_eq!(ClusterSecret::from_hex("abc"), Err(SecretError::Length(3)));
        let bad = format!("{}g", &hex[1..]);
        assert_eq!(ClusterSecret::from_hex(&bad), Err(SecretError::Digit('g')));
        assert_eq!(format!("{secret:?}"), "ClusterSecret(..)");
    }

    #[test]
    fn purposes_get_different_keys() {
        let secret = ClusterSecret::from_hex(&"ab".repeat(32)).unwrap();
        assert_ne!(secret.derive("a"), secret.derive("b"));
        assert_eq!(secret.derive("a"), secret.derive("a"));
    }
}
