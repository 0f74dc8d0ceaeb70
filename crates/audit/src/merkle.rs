//! The Merkle tree of RFC 9162 (section 2.1), incremental over a storage trait.
//!
//! Hashing: leaf hash = SHA-256(0x00 || leaf bytes), node hash = SHA-256(0x01 || left || right),
//! the empty tree's hash is SHA-256 of the empty string, and a tree of n > 1 leaves splits at
//! the largest power of two smaller than n.
//!
//! Storage: only *perfect* subtrees are stored, because they never change once complete. The
//! node at `(level L, index i)` is the hash of the perfect subtree over leaves
//! `[i * 2^L, (i + 1) * 2^L)`; level 0 holds the leaf hashes. Any subtree the RFC recursion
//! needs starts at a multiple of the largest power of two not smaller than its width, so it is a
//! short run of stored perfect subtrees (one per set bit of its width), folded right to left:
//! roots and proofs cost O(log n) (inclusion, consistency: O(log² n)) reads.
//!
//! The tree knows nothing about where nodes live: [`TreeStore`] is a synchronous trait,
//! implemented by [`MemoryTreeStore`]. A database (the store crate, async) does not implement
//! it: it asks which nodes an operation reads ([`edge_nodes`], [`root_nodes`],
//! [`inclusion_nodes`], [`consistency_nodes`]), fetches those in one query, and runs the same
//! code over them in memory; appends go through [`append_leaves`], which returns the nodes to
//! write. Proof *verification* needs no store at all.

use std::collections::HashMap;

use crypto::hash::Sha256;

/// A SHA-256 hash: a leaf hash, a node hash or a root.
pub type Hash = [u8; 32];

/// Largest tree size handled (so that `2^level` and index arithmetic never overflow).
pub const MAX_TREE_SIZE: u64 = 1 << 62;

/// Errors from building roots and proofs over a [`TreeStore`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// A node the tree needs is not in the store (the store does not hold this tree).
    #[error("tree node missing from the store: level {level}, index {index}")]
    MissingNode { level: u8, index: u64 },
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("old tree size {old} is larger than new tree size {new}")]
    OldLargerThanNew { old: u64, new: u64 },
    /// The tree would exceed [`MAX_TREE_SIZE`].
    #[error("tree size limit reached")]
    TooLarge,
}

/// Where the tree's completed (perfect) subtree hashes live.
pub trait TreeStore {
    /// The hash of the perfect subtree at `level` covering leaves `[index << level, (index + 1) << level)`.
    fn get(&self, level: u8, index: u64) -> Option<Hash>;
    /// Records that hash. Called once per node, when its subtree becomes complete.
    fn put(&mut self, level: u8, index: u64, hash: Hash);
}

/// A [`TreeStore`] in memory, for tests and offline verification.
#[derive(Debug, Clone, Default)]
pub struct MemoryTreeStore {
    nodes: HashMap<(u8, u64), Hash>,
}

impl MemoryTreeStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored nodes (about twice the number of leaves).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl TreeStore for MemoryTreeStore {
    fn get(&self, level: u8, index: u64) -> Option<Hash> {
        self.nodes.get(&(level, index)).copied()
    }

    fn put(&mut self, level: u8, index: u64, hash: Hash) {
        self.nodes.insert((level, index), hash);
    }
}

/// SHA-256(0x00 || leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(&[0x00]);
    h.update(leaf);
    h.finish()
}

/// SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    crypto::hash::sha256(&buf)
}

/// The hash of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    crypto::hash::sha256(&[])
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

fn get(store: &impl TreeStore, level: u8, index: u64) -> Result<Hash, TreeError> {
    store
        .get(level, index)
        .ok_or(TreeError::MissingNode { level, index })
}

/// Appends a leaf hash to the tree of `size` leaves held in `store`: stores the leaf and every
/// perfect subtree it completes. Returns the new size.
pub fn append(store: &mut impl TreeStore, size: u64, leaf_hash: Hash) -> Result<u64, TreeError> {
    if size >= MAX_TREE_SIZE {
        return Err(TreeError::TooLarge);
    }
    // Read every left sibling first, so a missing node leaves the store untouched.
    let mut pending = Vec::with_capacity(64);
    let mut hash = leaf_hash;
    let mut index = size;
    let mut level: u8 = 0;
    pending.push((level, index, hash));
    while index & 1 == 1 {
        let left = get(store, level, index - 1)?;
        hash = node_hash(&left, &hash);
        level += 1;
        index >>= 1;
        pending.push((level, index, hash));
    }
    for (level, index, hash) in pending {
        store.put(level, index, hash);
    }
    Ok(size + 1)
}

/// MTH of the leaves `[start, start + width)`, a subtree of the RFC recursion (so `start` is a
/// multiple of the largest power of two not below `width`), from stored perfect subtrees.
fn range_hash(store: &impl TreeStore, start: u64, width: u64) -> Result<Hash, TreeError> {
    if width == 0 {
        return Ok(empty_root());
    }
    // Perfect pieces from the left, one per set bit of `width`, largest first.
    let mut pieces: Vec<Hash> = Vec::with_capacity(64);
    let mut offset = start;
    let mut rest = width;
    while rest > 0 {
        let level = 63 - rest.leading_zeros();
        let level_u8 = u8::try_from(level).map_err(|_| TreeError::TooLarge)?;
        pieces.push(get(store, level_u8, offset >> level)?);
        offset += 1 << level;
        rest &= !(1 << level);
    }
    let mut acc = pieces.pop().unwrap_or_else(empty_root);
    while let Some(left) = pieces.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// The root hash of the tree of `size` leaves in `store`.
pub fn root(store: &impl TreeStore, size: u64) -> Result<Hash, TreeError> {
    range_hash(store, 0, size)
}

/// The inclusion proof (RFC 9162 section 2.1.3.1, PATH) for leaf `index` in the tree of `size`
/// leaves, ordered from the leaf's sibling up to the root's child.
pub fn inclusion_proof(
    store: &impl TreeStore,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, TreeError> {
    if index >= size {
        return Err(TreeError::IndexOutOfRange { index, size });
    }
    // Walk down from the root, collecting siblings top-down, then reverse.
    let mut path = Vec::with_capacity(64);
    let (mut start, mut width, mut m) = (0u64, size, index);
    while width > 1 {
        let k = split_point(width);
        if m < k {
            path.push(range_hash(store, start + k, width - k)?);
            width = k;
        } else {
            path.push(range_hash(store, start, k)?);
            start += k;
            width -= k;
            m -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof (RFC 9162 section 2.1.4.1, PROOF) that the tree of `old` leaves is a
/// prefix of the tree of `new` leaves. Empty when `old` is 0 or equals `new`.
pub fn consistency_proof(
    store: &impl TreeStore,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, TreeError> {
    if old > new {
        return Err(TreeError::OldLargerThanNew { old, new });
    }
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[start:start+width], b), unrolled; hashes collected top-down, then reversed.
    let mut proof = Vec::with_capacity(64);
    let (mut start, mut width, mut m, mut whole) = (0u64, new, old, true);
    loop {
        if m == width {
            if !whole {
                proof.push(range_hash(store, start, width)?);
            }
            break;
        }
        let k = split_point(width);
        if m <= k {
            proof.push(range_hash(store, start + k, width - k)?);
            width = k;
        } else {
            proof.push(range_hash(store, start, k)?);
            start += k;
            width -= k;
            m -= k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Verifies an inclusion proof exactly as RFC 9162 section 2.1.3.2 describes.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// Verifies a consistency proof exactly as RFC 9162 section 2.1.4.2 describes, for
/// `0 < old_size < new_size`. Outside that range (which the RFC does not cover): equal sizes
/// need an empty proof and equal roots; an old size of 0 needs an empty proof and the empty
/// root; a smaller new size always fails.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == empty_root();
    }
    // 1. An empty path fails.
    if proof.is_empty() {
        return false;
    }
    // 2. If first is an exact power of 2, prepend first_hash to the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    // 3. fn = first - 1, sn = second - 1.
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    // 4. If LSB(fn) is set, shift both right until it is not.
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5. fr = sr = first value of the path.
    let (mut fr, mut sr) = (path[0], path[0]);
    // 6. For each subsequent value c.
    for c in &path[1..] {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7. fr == first_hash, sr == second_hash, sn == 0.
    fr == *old_root && sr == *new_root && sn == 0
}

/// A stored node: `(level, index, hash)`.
pub type Node = (u8, u64, Hash);

/// The right edge of the tree of `size` leaves: the perfect subtrees given by the set bits of
/// `size`, as `(level, index)`, largest (leftmost) first. Appending to a tree needs exactly these
/// nodes (and the ones the appends themselves create).
pub fn edge_nodes(size: u64) -> Vec<(u8, u64)> {
    (0..64u8)
        .rev()
        .filter(|level| size >> level & 1 == 1)
        .map(|level| (level, (size >> level) - 1))
        .collect()
}

/// Appends `leaves` (leaf hashes) to the tree of `size` leaves whose right edge is `edge`
/// (the hashes of [`edge_nodes`]`(size)`, in that order). Returns every node the appends
/// complete, in creation order: what a store writes to hold the longer tree.
pub fn append_leaves(size: u64, edge: &[Hash], leaves: &[Hash]) -> Result<Vec<Node>, TreeError> {
    let keys = edge_nodes(size);
    if keys.len() != edge.len() {
        let (level, index) = keys.get(edge.len()).copied().unwrap_or((0, size));
        return Err(TreeError::MissingNode { level, index });
    }
    let mut store = RecordingStore {
        inner: MemoryTreeStore::new(),
        created: Vec::with_capacity(leaves.len() * 2 + 1),
    };
    for (&(level, index), hash) in keys.iter().zip(edge) {
        store.inner.put(level, index, *hash);
    }
    let mut size = size;
    for leaf in leaves {
        size = append(&mut store, size, *leaf)?;
    }
    Ok(store.created)
}

/// A memory store that remembers what was put into it.
struct RecordingStore {
    inner: MemoryTreeStore,
    created: Vec<Node>,
}

impl TreeStore for RecordingStore {
    fn get(&self, level: u8, index: u64) -> Option<Hash> {
        self.inner.get(level, index)
    }

    fn put(&mut self, level: u8, index: u64, hash: Hash) {
        self.inner.put(level, index, hash);
        self.created.push((level, index, hash));
    }
}

/// A store that holds every node and records which ones were read. The tree's algorithms
/// never branch on hash values, only on sizes and indices, so running one against this store
/// lists exactly the nodes it needs: a database fetches those in one query, then runs the
/// algorithm again over them in memory.
#[derive(Default)]
struct NodeRecorder {
    read: std::cell::RefCell<Vec<(u8, u64)>>,
}

impl TreeStore for NodeRecorder {
    fn get(&self, level: u8, index: u64) -> Option<Hash> {
        self.read.borrow_mut().push((level, index));
        Some([0; 32])
    }

    fn put(&mut self, _level: u8, _index: u64, _hash: Hash) {}
}

fn recorded<T>(
    run: impl FnOnce(&NodeRecorder) -> Result<T, TreeError>,
) -> Result<Vec<(u8, u64)>, TreeError> {
    let recorder = NodeRecorder::default();
    run(&recorder)?;
    let mut nodes = recorder.read.into_inner();
    nodes.sort_unstable();
    nodes.dedup();
    Ok(nodes)
}

/// The stored nodes [`root`] reads for a tree of `size` leaves.
pub fn root_nodes(size: u64) -> Vec<(u8, u64)> {
    recorded(|s| root(s, size)).unwrap_or_default()
}

/// The stored nodes [`inclusion_proof`] reads.
pub fn inclusion_nodes(index: u64, size: u64) -> Result<Vec<(u8, u64)>, TreeError> {
    recorded(|s| inclusion_proof(s, index, size))
}

/// The stored nodes [`consistency_proof`] reads.
pub fn consistency_nodes(old: u64, new: u64) -> Result<Vec<(u8, u64)>, TreeError> {
    recorded(|s| consistency_proof(s, old, new))
}

/// The right edge of a tree being built leaf by leaf: one perfect-subtree hash per set bit of
/// the size, O(log n) memory. Gives the root at any size; used to rebuild a log offline.
#[derive(Debug, Clone, Default)]
pub struct CompactRange {
    size: u64,
    /// Perfect subtree hashes, largest (leftmost) first.
    peaks: Vec<Hash>,
}

impl CompactRange {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The range of a tree of `size` leaves from its right edge (the hashes of
    /// [`edge_nodes`]`(size)`, largest first), to go on appending where a log left off.
    pub fn from_edge(size: u64, edge: Vec<Hash>) -> Result<CompactRange, TreeError> {
        if size >= MAX_TREE_SIZE {
            return Err(TreeError::TooLarge);
        }
        let keys = edge_nodes(size);
        if keys.len() != edge.len() {
            let (level, index) = keys.get(edge.len()).copied().unwrap_or((0, size));
            return Err(TreeError::MissingNode { level, index });
        }
        Ok(CompactRange { size, peaks: edge })
    }

    /// The right edge: one perfect-subtree hash per set bit of the size, largest first.
    pub fn edge(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf_hash: Hash) {
        let mut hash = leaf_hash;
        let mut index = self.size;
        while index & 1 == 1 {
            match self.peaks.pop() {
                Some(left) => hash = node_hash(&left, &hash),
                None => break,
            }
            index >>= 1;
        }
        self.peaks.push(hash);
        self.size += 1;
    }

    /// The root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// The root of a tree over `leaves` (leaf hashes), in one pass without a store.
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    let mut range = CompactRange::new();
    for leaf in leaves {
        range.push(*leaf);
    }
    range.root()
}
