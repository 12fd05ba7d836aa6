//! A tictac tree: a Merkle-like summary of a keyspace that is updated in place, with no rescan.
//!
//! Each key falls into one of [`SEGMENTS`] segments (by a hash of the key alone). A segment's
//! hash is the XOR of `h(key, version)` over its keys; a branch's hash is the XOR of its
//! [`LEAVES_PER_BRANCH`] segments; the root is the XOR of the branches. XOR makes every level
//! incremental and order-free: replacing a key's version XORs out the old pair and XORs in the
//! new one at the segment, its branch and the root, in O(1), and two nodes holding the same set
//! of (key, version) pairs have the same tree however they got there.
//!
//! Hashes are BLAKE3, truncated to 64 bits: a stable function of the bytes (never a
//! process-seeded hasher), so every node and every build computes the same tree.

use crate::storage::Version;

/// Segments (leaves) of the tree.
pub const SEGMENTS: usize = BRANCHES * LEAVES_PER_BRANCH;
/// Branches under the root.
pub const BRANCHES: usize = 32;
/// Segments under each branch.
pub const LEAVES_PER_BRANCH: usize = 32;
const _: () = assert!(SEGMENTS.is_power_of_two() && SEGMENTS <= 1 << 16);

/// The summary of one node's keyspace.
#[derive(Clone, PartialEq, Eq)]
pub struct HashTree {
    leaves: Vec<u64>,
    branches: [u64; BRANCHES],
    root: u64,
    keys: u64,
}

impl Default for HashTree {
    fn default() -> Self {
        HashTree {
            leaves: vec![0; SEGMENTS],
            branches: [0; BRANCHES],
            root: 0,
            keys: 0,
        }
    }
}

impl std::fmt::Debug for HashTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HashTree {{ root: {:016x}, keys: {} }}",
            self.root, self.keys
        )
    }
}

impl HashTree {
    /// The segment `key` falls into.
    pub fn segment_of(key: &str) -> usize {
        let hash = blake3::hash(key.as_bytes());
        let bytes = hash.as_bytes();
        usize::from(u16::from_le_bytes([bytes[0], bytes[1]])) % SEGMENTS
    }

    /// Records that `key` moved from `old` (none: a new key) to `new`.
    pub fn replace(&mut self, key: &str, old: Option<&Version>, new: &Version) {
        let mut delta = pair_hash(key, new);
        match old {
            Some(old) => {
                debug_assert!(old != new, "replacing a version by itself");
                delta ^= pair_hash(key, old);
            }
            None => self.keys += 1,
        }
        let segment = Self::segment_of(key);
        self.leaves[segment] ^= delta;
        self.branches[segment / LEAVES_PER_BRANCH] ^= delta;
        self.root ^= delta;
    }

    /// Records that `key`, at `version`, left the keyspace (garbage collection).
    pub fn remove(&mut self, key: &str, version: &Version) {
        assert!(self.keys > 0, "removing a key from an empty tree");
        self.keys -= 1;
        let delta = pair_hash(key, version);
        let segment = Self::segment_of(key);
        self.leaves[segment] ^= delta;
        self.branches[segment / LEAVES_PER_BRANCH] ^= delta;
        self.root ^= delta;
    }

    /// The hash of the whole keyspace: equal on two nodes holding the same (key, version) pairs.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// How many keys the tree summarises (tombstones included).
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The branch hashes, in order.
    pub fn branches(&self) -> &[u64; BRANCHES] {
        &self.branches
    }

    /// The segment hashes under `branch`, in order.
    pub fn leaves(&self, branch: usize) -> &[u64] {
        let start = branch * LEAVES_PER_BRANCH;
        &self.leaves[start..start + LEAVES_PER_BRANCH]
    }

    /// The segments whose hashes differ from `other`'s, found top-down: only the branches that
    /// differ are opened.
    pub fn differing_segments(&self, other: &HashTree) -> Vec<usize> {
        if self.root == other.root {
            return Vec::new();
        }
        let mut out = Vec::new();
        for branch in differing(&self.branches, &other.branches) {
            for leaf in differing(self.leaves(branch), other.leaves(branch)) {
                out.push(branch * LEAVES_PER_BRANCH + leaf);
            }
        }
        out
    }
}

/// Positions where two equally long lists of hashes differ.
pub fn differing(a: &[u64], b: &[u64]) -> Vec<usize> {
    assert_eq!(a.len(), b.len(), "comparing levels of different widths");
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

/// The 64-bit hash of one (key, version) pair: every field of the version, its conflict decision
/// included, so that a node holding a write undecided and one holding it decided differ, and
/// anti-entropy carries the decision over.
fn pair_hash(key: &str, version: &Version) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key.as_bytes());
    hasher.update(&version.timestamp_ms.to_le_bytes());
    hasher.update(&version.uuid);
    match version.resolution {
        None => hasher.update(&[0]),
        Some(r) => hasher
            .update(&[1])
            .update(&r.votes.to_le_bytes())
            .update(&r.oldest_joined_ms.to_le_bytes()),
    };
    let bytes = hasher.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand_chacha::ChaCha12Rng;
    use rand_core::{Rng, SeedableRng};

    use super::*;

    fn version(ts: u64, u: u8) -> Version {
        Version::new(ts, [u; 16])
    }

    /// A keyspace and its tree, updated together.
    #[derive(Default)]
    struct Space {
        map: BTreeMap<String, Version>,
        tree: HashTree,
    }

    impl Space {
        fn set(&mut self, key: &str, v: Version) {
            let old = self.map.insert(key.to_owned(), v);
            if old != Some(v) {
                self.tree.replace(key, old.as_ref(), &v);
            }
        }

        fn rebuilt(&self) -> HashTree {
            let mut tree = HashTree::default();
            for (k, v) in &self.map {
                tree.replace(k, None, v);
            }
            tree
        }
    }

    #[test]
    fn incremental_updates_equal_a_rebuild_whatever_the_order() {
        let mut rng = ChaCha12Rng::seed_from_u64(3);
        let mut a = Space::default();
        let mut ops = Vec::new();
        for i in 0..5_000u64 {
            let key = format!("k/{}", rng.next_u32() % 700);
            ops.push((key, version(i, (i % 251) as u8)));
        }
        for (k, v) in &ops {
            a.set(k, *v);
        }
        assert_eq!(a.tree, a.rebuilt());
        assert_eq!(a.tree.keys(), a.map.len() as u64);
        // Another node reaching the same final state in another order.
        let mut b = Space::default();
        let finals: Vec<(String, Version)> = a.map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (k, v) in finals.iter().rev() {
            b.set(k, *v);
        }
        assert_eq!(a.tree, b.tree);
        assert_ne!(a.tree.root(), 0);
    }

    #[test]
    fn differing_segments_are_exactly_those_of_the_keys_that_differ() {
        let mut a = Space::default();
        for i in 0..2_000 {
            a.set(&format!("users/{i}"), version(10, 1));
        }
        let mut b = Space::default();
        for (k, v) in &a.map {
            b.set(k, *v);
        }
        assert!(a.tree.differing_segments(&b.tree).is_empty());
        // b misses one write, holds an older version of another and an extra key.
        a.set("users/7", version(11, 2));
        a.set("users/1500", version(12, 3));
        b.set("extra", version(1, 1));
        let mut expected: Vec<usize> = ["users/7", "users/1500", "extra"]
            .iter()
            .map(|k| HashTree::segment_of(k))
            .collect();
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(a.tree.differing_segments(&b.tree), expected);
        assert_ne!(a.tree.root(), b.tree.root());
    }

    #[test]
    fn a_decision_on_a_version_changes_its_hash() {
        let undecided = version(5, 1);
        let decided = Version {
            resolution: Some(crate::storage::Resolution {
                votes: 2,
                oldest_joined_ms: 1,
            }),
            ..undecided
        };
        let stronger = Version {
            resolution: Some(crate::storage::Resolution {
                votes: 3,
                oldest_joined_ms: 1,
            }),
            ..undecided
        };
        let hashes = [undecided, decided, stronger].map(|v| pair_hash("k", &v));
        assert!(
            hashes[0] != hashes[1] && hashes[1] != hashes[2] && hashes[0] != hashes[2],
            "{hashes:?}"
        );
    }

    #[test]
    fn a_version_change_of_one_key_changes_its_segment_branch_and_root_only() {
        let mut s = Space::default();
        s.set("a", version(1, 1));
        let before = s.tree.clone();
        s.set("a", version(2, 1));
        let seg = HashTree::segment_of("a");
        assert_eq!(s.tree.differing_segments(&before), vec![seg]);
        assert_eq!(
            differing(s.tree.branches(), before.branches()),
            vec![seg / LEAVES_PER_BRANCH]
        );
        assert_eq!(s.tree.keys(), 1);
        // Back to the first version: back to the first tree.
        s.set("a", version(1, 1));
        assert_eq!(s.tree, before);
    }

    /// `segment_of` for three keys, computed once (BLAKE3 of "" starts af 13: 0x13af % 1024 =
    /// 943): a change here breaks mixed-version clusters.
    const PINNED_SEGMENTS: [usize; 3] = [10, 535, 943];

    #[test]
    fn segments_are_stable_across_builds() {
        // A fixed expectation: nodes running different builds must agree on the layout.
        let pinned: Vec<usize> = ["users/john/profile", "a", ""]
            .iter()
            .map(|k| HashTree::segment_of(k))
            .collect();
        assert_eq!(pinned, PINNED_SEGMENTS, "the segment layout changed");
        let spread: std::collections::BTreeSet<usize> = (0..5_000)
            .map(|i| HashTree::segment_of(&format!("k{i}")))
            .collect();
        assert!(
            spread.len() > SEGMENTS * 9 / 10,
            "keys spread over segments: {}",
            spread.len()
        );
    }
}
