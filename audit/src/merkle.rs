//! RFC 6962 / RFC 9162 Merkle tree over SHA-256: hashing, the compact frontier, and proofs.
//!
//! Pure code: no IO. The tree shape is the one of RFC 9162 §2.1.1: a tree of `n > 1` leaves
//! splits at `k`, the largest power of two smaller than `n`, into a perfect left subtree of `k`
//! leaves and a right subtree of the remaining `n - k`.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A SHA-256 output: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`: the hash of one leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A malformed frontier or an invalid proof request or proof.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MerkleError {
    #[error("frontier is {len} bytes, expected {expected} for tree size {size}")]
    FrontierLength {
        len: usize,
        expected: usize,
        size: u64,
    },
    #[error("frontier is shorter than its 8-byte size field")]
    FrontierTooShort,
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old size {old} is larger than new size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("proof has {got} hashes, expected {expected}")]
    ProofLength { got: usize, expected: usize },
    #[error("proof does not lead to the expected root")]
    RootMismatch,
}

/// The compact range `[0, size)` of the tree: the roots of its perfect subtrees, largest (leftmost)
/// first, one per set bit of `size`. Appending and computing the root are O(log n), and the
/// whole state is at most 64 hashes, whatever the log size.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtree roots, largest first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends one leaf hash (see [`leaf_hash`]).
    pub fn append(&mut self, leaf: Hash) {
        // Each trailing one bit of the old size is a subtree of the same height as the carry:
        // merge them, like a binary counter.
        let mut carry = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            let left = self.nodes.pop().expect("one node per set bit of size");
            carry = node_hash(&left, &carry);
            s >>= 1;
        }
        self.nodes.push(carry);
        self.size += 1;
    }

    /// The tree root (RFC 9162 MTH) over every appended leaf.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// `size` as u64 little-endian, then the subtree roots, largest first (8 + 32·popcount bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.size.to_le_bytes());
        for n in &self.nodes {
            out.extend_from_slice(n);
        }
        out
    }

    /// The length of [`Frontier::to_bytes`].
    pub fn encoded_len(&self) -> usize {
        Self::encoded_len_for(self.size)
    }

    /// The length of the encoding of a frontier of `size` leaves.
    pub fn encoded_len_for(size: u64) -> usize {
        8 + 32 * size.count_ones() as usize
    }

    /// Parses [`Frontier::to_bytes`]; the length must match the size field exactly.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MerkleError> {
        let Some((size, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(MerkleError::FrontierTooShort);
        };
        let size = u64::from_le_bytes(*size);
        let expected = Self::encoded_len_for(size);
        if bytes.len() != expected {
            return Err(MerkleError::FrontierLength {
                len: bytes.len(),
                expected,
                size,
            });
        }
        let nodes = rest
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32-byte chunk"))
            .collect();
        Ok(Self { size, nodes })
    }
}

/// The largest power of two strictly smaller than `n` (n >= 2).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH over a list of leaf hashes (RFC 9162 §2.1.1), recursively; for proofs and tests.
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(
                &root_from_leaves(&leaves[..k]),
                &root_from_leaves(&leaves[k..]),
            )
        }
    }
}

/// The inclusion proof of leaf `index` in the tree over `leaves` (RFC 9162 §2.1.3.1, PATH).
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    let size = leaves.len() as u64;
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(index as usize, leaves, &mut proof);
    Ok(proof)
}

fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        path(m, &d[..k], out);
        out.push(root_from_leaves(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root_from_leaves(&d[..k]));
    }
}

/// The consistency proof from the tree of the first `old_size` leaves to the tree over all of
/// `leaves` (RFC 9162 §2.1.4.1, PROOF). Empty when `old_size` is 0 or equals the new size.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, MerkleError> {
    let new = leaves.len() as u64;
    if old_size > new {
        return Err(MerkleError::SizesOutOfOrder { old: old_size, new });
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < new {
        subproof(old_size as usize, leaves, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: usize, d: &[Hash], b: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !b {
            out.push(root_from_leaves(d));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, &d[..k], b, out);
        out.push(root_from_leaves(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root_from_leaves(&d[..k]));
    }
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves whose root is `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(MerkleError::ProofLength {
            got: proof.len(),
            expected,
        });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(MerkleError::RootMismatch);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s == 0 && r == *root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

/// The number of hashes in an inclusion proof: the levels below the root on the leaf's path.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    // Levels where the leaf has a sibling: the bits of (index ^ (size-1)) below its top bit give
    // a full level each, and every level of the right edge where `index` is not last adds one.
    let (mut f, mut s, mut len) = (index, size - 1, 0);
    while s != 0 {
        if f & 1 == 1 || f < s {
            len += 1;
        }
        f >>= 1;
        s >>= 1;
    }
    len
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of
/// `old_size` leaves with root `old_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::SizesOutOfOrder {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == 0 || old_size == new_size {
        // Nothing to prove beyond equality; a non-empty proof is malformed.
        if !proof.is_empty() {
            return Err(MerkleError::ProofLength {
                got: proof.len(),
                expected: 0,
            });
        }
        if old_size == new_size && old_root != new_root {
            return Err(MerkleError::RootMismatch);
        }
        if old_size == 0 && *old_root != empty_root() {
            return Err(MerkleError::RootMismatch);
        }
        return Ok(());
    }
    if proof.is_empty() {
        return Err(MerkleError::ProofLength {
            got: 0,
            expected: 1,
        });
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return Err(MerkleError::RootMismatch);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s == 0 && fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The eight leaves of the Certificate Transparency reference test suite, and the roots of
    /// their prefixes. The roots were computed independently (Python's hashlib, RFC 6962 rules)
    /// and match the values published with the public CT implementations.
    const CT_LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn ct_leaves() -> Vec<Hash> {
        CT_LEAVES.iter().map(|l| leaf_hash(&unhex(l))).collect()
    }

    #[test]
    fn empty_tree_root_is_sha256_of_nothing() {
        assert_eq!(
            hex(&Frontier::new().root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(root_from_leaves(&[]), empty_root());
    }

    #[test]
    fn ct_reference_roots() {
        let leaves = ct_leaves();
        let mut f = Frontier::new();
        for (i, leaf) in leaves.iter().enumerate() {
            f.append(*leaf);
            assert_eq!(
                hex(&f.root()),
                CT_ROOTS[i],
                "frontier root at size {}",
                i + 1
            );
            assert_eq!(
                hex(&root_from_leaves(&leaves[..=i])),
                CT_ROOTS[i],
                "MTH at size {}",
                i + 1
            );
        }
    }

    /// Inclusion and consistency proofs of the CT suite, as published with it.
    #[test]
    fn ct_reference_proofs() {
        let leaves = ct_leaves();
        let cases: [(u64, u64, &[&str]); 3] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
        ];
        for (index, size, want) in cases {
            let proof = inclusion_proof(&leaves[..size as usize], index).unwrap();
            let got: Vec<String> = proof.iter().map(hex).collect();
            assert_eq!(got, want, "inclusion proof of {index} in {size}");
            let root = root_from_leaves(&leaves[..size as usize]);
            verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
        }
        let cons: [(u64, u64, &[&str]); 3] = [
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, want) in cons {
            let proof = consistency_proof(&leaves[..new as usize], old).unwrap();
            let got: Vec<String> = proof.iter().map(hex).collect();
            assert_eq!(got, want, "consistency proof {old} -> {new}");
            let (r1, r2) = (
                root_from_leaves(&leaves[..old as usize]),
                root_from_leaves(&leaves[..new as usize]),
            );
            verify_consistency(old, new, &r1, &r2, &proof).unwrap();
        }
    }

    #[test]
    fn frontier_bytes_round_trip_and_reject_bad_lengths() {
        let mut f = Frontier::new();
        for i in 0..13u8 {
            f.append(leaf_hash(&[i]));
        }
        let b = f.to_bytes();
        assert_eq!(b.len(), 8 + 3 * 32);
        assert_eq!(Frontier::from_bytes(&b).unwrap(), f);
        assert_eq!(
            Frontier::from_bytes(&b[..b.len() - 1]),
            Err(MerkleError::FrontierLength {
                len: 103,
                expected: 104,
                size: 13
            })
        );
        assert_eq!(
            Frontier::from_bytes(&b[..7]),
            Err(MerkleError::FrontierTooShort)
        );
        let mut longer = b.clone();
        longer.push(0);
        assert!(Frontier::from_bytes(&longer).is_err());
    }

    #[test]
    fn bad_proof_requests_are_errors() {
        let leaves = ct_leaves();
        assert!(inclusion_proof(&leaves[..3], 3).is_err());
        assert!(consistency_proof(&leaves[..3], 4).is_err());
        let r = root_from_leaves(&leaves);
        assert!(verify_inclusion(&leaves[0], 8, 8, &[], &r).is_err());
        assert!(verify_consistency(5, 4, &r, &r, &[]).is_err());
        // Equal sizes need equal roots and an empty proof.
        verify_consistency(8, 8, &r, &r, &[]).unwrap();
        assert!(verify_consistency(8, 8, &r, &leaves[0], &[]).is_err());
        assert!(verify_consistency(8, 8, &r, &r, &[r]).is_err());
        // Size 0 is consistent with anything, but its root is the empty root.
        verify_consistency(0, 8, &empty_root(), &r, &[]).unwrap();
        assert!(verify_consistency(0, 8, &r, &r, &[]).is_err());
    }

    fn leaves_strategy() -> impl Strategy<Value = Vec<Hash>> {
        (1usize..70).prop_map(|n| {
            (0..n)
                .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn frontier_matches_recursive_root(leaves in leaves_strategy()) {
            let mut f = Frontier::new();
            for (i, l) in leaves.iter().enumerate() {
                f.append(*l);
                prop_assert_eq!(f.root(), root_from_leaves(&leaves[..=i]));
                prop_assert_eq!(Frontier::from_bytes(&f.to_bytes()).unwrap(), f.clone());
            }
        }

        #[test]
        fn inclusion_proofs_verify_and_tampering_fails(
            leaves in leaves_strategy(), pick in any::<u64>(), flip in any::<(usize, u8)>()
        ) {
            let size = leaves.len() as u64;
            let index = pick % size;
            let root = root_from_leaves(&leaves);
            let proof = inclusion_proof(&leaves, index).unwrap();
            let leaf = leaves[index as usize];
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_ok());
            // Wrong leaf, wrong index, flipped proof byte, shortened or padded proof. (A wrong
            // size can share the proof shape; the signed checkpoint binds size and root.)
            prop_assert!(verify_inclusion(&leaf_hash(b"x"), index, size, &proof, &root).is_err());
            if size > 1 {
                let other = (index + 1) % size;
                prop_assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
            }
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let i = flip.0 % bad.len();
                bad[i][(flip.1 % 32) as usize] ^= 1;
                prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
                prop_assert!(verify_inclusion(&leaf, index, size, &proof[1..], &root).is_err());
            }
            let mut longer = proof.clone();
            longer.push(root);
            prop_assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
        }

        #[test]
        fn consistency_proofs_verify_and_tampering_fails(
            leaves in leaves_strategy(), pick in any::<u64>(), flip in any::<(usize, u8)>()
        ) {
            let new = leaves.len() as u64;
            let old = 1 + pick % new;
            let (r1, r2) = (root_from_leaves(&leaves[..old as usize]), root_from_leaves(&leaves));
            let proof = consistency_proof(&leaves, old).unwrap();
            prop_assert!(verify_consistency(old, new, &r1, &r2, &proof).is_ok());
            if old < new {
                let mut bad = proof.clone();
                let i = flip.0 % bad.len();
                bad[i][(flip.1 % 32) as usize] ^= 1;
                prop_assert!(verify_consistency(old, new, &r1, &r2, &bad).is_err());
                let mut r1b = r1;
                r1b[0] ^= 1;
                prop_assert!(verify_consistency(old, new, &r1b, &r2, &proof).is_err());
                let mut r2b = r2;
                r2b[31] ^= 0x80;
                prop_assert!(verify_consistency(old, new, &r1, &r2b, &proof).is_err());
                prop_assert!(verify_consistency(old, new, &r1, &r2, &proof[..proof.len() - 1]).is_err());
                let mut longer = proof.clone();
                longer.push(r1);
                prop_assert!(verify_consistency(old, new, &r1, &r2, &longer).is_err());
                if old + 1 < new {
                    prop_assert!(verify_consistency(old + 1, new, &r1, &r2, &proof).is_err());
                }
            }
        }
    }
}
