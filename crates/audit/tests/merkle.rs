//! The tree against a naive recursive RFC 9162 implementation (hashing with the `sha2` crate),
//! the independent `ct-merkle` crate, and the RFC 6962 / transparency-dev known answers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use audit::merkle::{
    self, CompactRange, Hash, MemoryTreeStore, TreeError, TreeStore, consistency_proof, empty_root,
    inclusion_proof, leaf_hash, node_hash, root, root_from_leaves, verify_consistency,
    verify_inclusion,
};
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};

// ---- naive reference (RFC 9162 section 2.1, written from the text, own SHA-256) ----

fn sha(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn naive_leaf(d: &[u8]) -> Hash {
    sha(&[&[0x00], d])
}

fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn mth(d: &[Vec<u8>]) -> Hash {
    match d.len() {
        0 => sha(&[]),
        1 => naive_leaf(&d[0]),
        n => {
            let k = k_of(n);
            sha(&[&[0x01], &mth(&d[..k]), &mth(&d[k..])])
        }
    }
}

fn naive_path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return vec![];
    }
    let k = k_of(n);
    if m < k {
        let mut p = naive_path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = naive_path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

fn naive_subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k_of(n);
    if m <= k {
        let mut p = naive_subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = naive_subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn naive_proof(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    if m == 0 || m == d.len() {
        return vec![];
    }
    naive_subproof(m, d, true)
}

// ---- helpers ----

fn leaf_data(i: usize) -> Vec<u8> {
    format!("{{\"seq\":{i},\"x\":\"{}\"}}", "y".repeat(i % 7)).into_bytes()
}

fn flat(p: &[Hash]) -> Vec<u8> {
    p.concat()
}

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// Builds our store, the ct-merkle tree and the raw leaves up to `n`.
fn build(
    n: usize,
) -> (
    MemoryTreeStore,
    MemoryBackedTree<Sha256, Vec<u8>>,
    Vec<Vec<u8>>,
) {
    let mut store = MemoryTreeStore::new();
    let mut ct = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    let mut data = Vec::with_capacity(n);
    let mut size = 0;
    for i in 0..n {
        let d = leaf_data(i);
        size = merkle::append(&mut store, size, leaf_hash(&d)).unwrap();
        ct.push(d.clone());
        data.push(d);
    }
    (store, ct, data)
}

fn ct_root(ct: &MemoryBackedTree<Sha256, Vec<u8>>) -> Hash {
    ct.root().as_bytes().as_slice().try_into().unwrap()
}

// ---- known answers ----

const CT_LEAVES: &[&str] = &[
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Roots of the first 1..=8 CT test leaves (RFC 6962 reference tests, transparency-dev/merkle).
const CT_ROOTS: &[&str] = &[
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn ct_leaves() -> Vec<Vec<u8>> {
    CT_LEAVES.iter().map(|s| hex::decode(s).unwrap()).collect()
}

fn store_of(leaves: &[Vec<u8>]) -> MemoryTreeStore {
    let mut store = MemoryTreeStore::new();
    for (i, d) in leaves.iter().enumerate() {
        merkle::append(&mut store, i as u64, leaf_hash(d)).unwrap();
    }
    store
}

#[test]
fn empty_root_is_sha256_of_nothing() {
    assert_eq!(
        empty_root(),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(root(&MemoryTreeStore::new(), 0).unwrap(), empty_root());
    assert_eq!(root_from_leaves(&[]), empty_root());
    assert_eq!(CompactRange::new().root(), empty_root());
}

#[test]
fn hashes_match_the_definitions() {
    assert_eq!(leaf_hash(b"abc"), sha(&[&[0], b"abc"]));
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    assert_eq!(node_hash(&a, &b), sha(&[&[1], &a, &b]));
    assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
}

#[test]
fn ct_known_answer_roots() {
    let leaves = ct_leaves();
    let store = store_of(&leaves);
    for n in 1..=8 {
        let expected = h(CT_ROOTS[n - 1]);
        // The published value agrees with the naive implementation ...
        assert_eq!(mth(&leaves[..n]), expected, "naive root of {n}");
        // ... and with ours.
        assert_eq!(root(&store, n as u64).unwrap(), expected, "root of {n}");
        let lh: Vec<Hash> = leaves[..n].iter().map(|d| leaf_hash(d)).collect();
        assert_eq!(root_from_leaves(&lh), expected);
    }
}

#[test]
fn ct_known_answer_proofs() {
    // transparency-dev/merkle testonly/reference_test.go (as copied into ct-merkle 0.3).
    let store = store_of(&ct_leaves());
    let inclusion: &[(u64, u64, &[&str])] = &[
        (0, 1, &[]),
        (
            0,
            2,
            &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
        ),
        (
            1,
            2,
            &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
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
    ];
    let leaves = ct_leaves();
    for (index, size, expected) in inclusion {
        let expected: Vec<Hash> = expected.iter().map(|s| h(s)).collect();
        let proof = inclusion_proof(&store, *index, *size).unwrap();
        assert_eq!(proof, expected, "inclusion {index} in {size}");
        let r = root(&store, *size).unwrap();
        assert!(verify_inclusion(
            &leaf_hash(&leaves[*index as usize]),
            *index,
            *size,
            &proof,
            &r
        ));
    }
    let consistency: &[(u64, u64, &[&str])] = &[
        (1, 1, &[]),
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
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
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
    ];
    for (old, new, expected) in consistency {
        let expected: Vec<Hash> = expected.iter().map(|s| h(s)).collect();
        let proof = consistency_proof(&store, *old, *new).unwrap();
        assert_eq!(proof, expected, "consistency {old} -> {new}");
        let (ro, rn) = (root(&store, *old).unwrap(), root(&store, *new).unwrap());
        assert!(verify_consistency(*old, *new, &ro, &rn, &proof));
    }
}

// ---- exhaustive and sampled cross-checks ----

#[test]
fn roots_match_naive_and_ct_merkle_for_every_size_to_2000() {
    let n = 2000;
    let mut store = MemoryTreeStore::new();
    let mut ct = MemoryBackedTree::<Sha256, Vec<u8>>::new();
    let mut range = CompactRange::new();
    let mut data: Vec<Vec<u8>> = Vec::new();
    let mut hashes: Vec<Hash> = Vec::new();
    let mut size = 0u64;
    for i in 0..=n {
        // Size i.
        let ours = root(&store, size).unwrap();
        assert_eq!(ours, mth(&data), "naive root at size {i}");
        assert_eq!(ours, range.root(), "compact range at size {i}");
        assert_eq!(
            ours,
            root_from_leaves(&hashes),
            "root_from_leaves at size {i}"
        );
        if i > 0 {
            assert_eq!(ours, ct_root(&ct), "ct-merkle root at size {i}");
        }
        if i == n {
            break;
        }
        let d = leaf_data(i);
        let lh = leaf_hash(&d);
        assert_eq!(lh, naive_leaf(&d));
        size = merkle::append(&mut store, size, lh).unwrap();
        range.push(lh);
        ct.push(d.clone());
        data.push(d);
        hashes.push(lh);
    }
    // Only perfect subtrees are stored: 2n - popcount(n) nodes.
    assert_eq!(
        store.len() as u64,
        2 * n as u64 - u64::from((n as u64).count_ones())
    );
}

#[test]
fn every_inclusion_proof_to_300_matches_and_verifies() {
    for n in 1..=300usize {
        let (store, ct, data) = build(n);
        let r = root(&store, n as u64).unwrap();
        for i in 0..n {
            let proof = inclusion_proof(&store, i as u64, n as u64).unwrap();
            assert_eq!(
                flat(&proof),
                ct.prove_inclusion(i).as_bytes(),
                "ct: {i} in {n}"
            );
            if n <= 64 || i % 17 == 0 {
                assert_eq!(proof, naive_path(i, &data), "naive: {i} in {n}");
            }
            assert!(verify_inclusion(
                &leaf_hash(&data[i]),
                i as u64,
                n as u64,
                &proof,
                &r
            ));
        }
    }
}

#[test]
fn sampled_inclusion_proofs_to_2000_match_and_verify() {
    let (mut store, mut ct, mut data) = build(300);
    let mut rng = StdRng::seed_from_u64(7);
    for n in 301..=2000usize {
        let d = leaf_data(n - 1);
        merkle::append(&mut store, n as u64 - 1, leaf_hash(&d)).unwrap();
        ct.push(d.clone());
        data.push(d);
        let r = root(&store, n as u64).unwrap();
        for i in [0, n - 1, n / 2, rng.gen_range(0..n), rng.gen_range(0..n)] {
            let proof = inclusion_proof(&store, i as u64, n as u64).unwrap();
            assert_eq!(
                flat(&proof),
                ct.prove_inclusion(i).as_bytes(),
                "ct: {i} in {n}"
            );
            assert!(verify_inclusion(
                &leaf_hash(&data[i]),
                i as u64,
                n as u64,
                &proof,
                &r
            ));
        }
        if n % 97 == 0 {
            let i = rng.gen_range(0..n);
            let proof = inclusion_proof(&store, i as u64, n as u64).unwrap();
            assert_eq!(proof, naive_path(i, &data), "naive: {i} in {n}");
        }
    }
}

#[test]
fn every_consistency_proof_to_150_matches_and_verifies() {
    let n = 150usize;
    let (store, _, data) = build(n);
    let roots: Vec<Hash> = (0..=n).map(|s| root(&store, s as u64).unwrap()).collect();
    for new in 1..=n {
        // ct-merkle proves from prefixes of one tree, so build it at size `new`.
        let mut ct = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        for d in &data[..new] {
            ct.push(d.clone());
        }
        for old in 0..=new {
            let proof = consistency_proof(&store, old as u64, new as u64).unwrap();
            if old > 0 {
                assert_eq!(
                    flat(&proof),
                    ct.prove_consistency(new - old).as_bytes(),
                    "ct: {old}->{new}"
                );
            }
            if new <= 40 || (old * 7 + new) % 13 == 0 {
                assert_eq!(proof, naive_proof(old, &data[..new]), "naive: {old}->{new}");
            }
            assert!(
                verify_consistency(old as u64, new as u64, &roots[old], &roots[new], &proof),
                "verify {old}->{new}"
            );
        }
    }
}

#[test]
fn sampled_consistency_proofs_to_2000_match_and_verify() {
    let n = 2000usize;
    let (store, _, data) = build(n);
    let mut rng = StdRng::seed_from_u64(11);
    let mut sizes: Vec<usize> = (151..=n).step_by(37).collect();
    sizes.extend([256, 511, 512, 513, 1023, 1024, 1025, 2000]);
    for new in sizes {
        let mut ct = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        for d in &data[..new] {
            ct.push(d.clone());
        }
        let rn = root(&store, new as u64).unwrap();
        let mut olds = vec![1, new / 2, new - 1, new];
        olds.extend((0..6).map(|_| rng.gen_range(1..=new)));
        for old in olds {
            let proof = consistency_proof(&store, old as u64, new as u64).unwrap();
            assert_eq!(
                flat(&proof),
                ct.prove_consistency(new - old).as_bytes(),
                "ct: {old}->{new}"
            );
            let ro = root(&store, old as u64).unwrap();
            assert!(verify_consistency(old as u64, new as u64, &ro, &rn, &proof));
        }
        let old = rng.gen_range(1..=new);
        assert_eq!(
            consistency_proof(&store, old as u64, new as u64).unwrap(),
            naive_proof(old, &data[..new])
        );
    }
}

#[test]
fn random_larger_trees_agree_with_ct_merkle() {
    let mut rng = StdRng::seed_from_u64(2026);
    for n in [
        4096usize,
        4097,
        10_007,
        65_537,
        rng.gen_range(20_000..40_000),
    ] {
        let (store, ct, data) = build(n);
        let r = root(&store, n as u64).unwrap();
        assert_eq!(r, ct_root(&ct), "root of {n}");
        let lh: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        assert_eq!(root_from_leaves(&lh), r);
        for _ in 0..20 {
            let i = rng.gen_range(0..n);
            let proof = inclusion_proof(&store, i as u64, n as u64).unwrap();
            assert_eq!(flat(&proof), ct.prove_inclusion(i).as_bytes());
            assert!(verify_inclusion(&lh[i], i as u64, n as u64, &proof, &r));
            let old = rng.gen_range(1..=n);
            let proof = consistency_proof(&store, old as u64, n as u64).unwrap();
            assert_eq!(flat(&proof), ct.prove_consistency(n - old).as_bytes());
            let ro = root_from_leaves(&lh[..old]);
            assert!(verify_consistency(old as u64, n as u64, &ro, &r, &proof));
        }
    }
}

// ---- negative tests ----

/// Root of the test log (`leaf_data`) at size `s`.
fn root_of_size(s: u64) -> Hash {
    let lh: Vec<Hash> = (0..s as usize).map(|i| leaf_hash(&leaf_data(i))).collect();
    root_from_leaves(&lh)
}

#[test]
fn tampered_inclusion_proofs_fail() {
    for n in [1usize, 2, 3, 5, 8, 13, 64, 100] {
        let (store, _, data) = build(n);
        let r = root(&store, n as u64).unwrap();
        for i in 0..n {
            let (i64_, n64) = (i as u64, n as u64);
            let lh = leaf_hash(&data[i]);
            let proof = inclusion_proof(&store, i64_, n64).unwrap();
            assert!(verify_inclusion(&lh, i64_, n64, &proof, &r));
            // Flipped bit in each hash of the proof.
            for j in 0..proof.len() {
                let mut bad = proof.clone();
                bad[j][j % 32] ^= 0x01;
                assert!(
                    !verify_inclusion(&lh, i64_, n64, &bad, &r),
                    "flip {j}: {i} in {n}"
                );
            }
            // Wrong leaf, wrong root.
            assert!(!verify_inclusion(
                &leaf_hash(b"other"),
                i64_,
                n64,
                &proof,
                &r
            ));
            let mut bad_root = r;
            bad_root[0] ^= 0x80;
            assert!(!verify_inclusion(&lh, i64_, n64, &proof, &bad_root));
            // Wrong index (every other index of the tree, and out of range).
            for j in 0..n as u64 + 2 {
                if j != i64_ {
                    assert!(
                        !verify_inclusion(&lh, j, n64, &proof, &r),
                        "index {j} for {i} in {n}"
                    );
                }
            }
            // Wrong size, with the root a log of that size would have. (With the *same* root,
            // RFC 9162 verification binds the size only through the root: e.g. the proof of
            // leaf 0 in a tree of 3 also passes for size 4, as ct-merkle's docs note too.)
            for s in [n64.saturating_sub(1), n64 + 1, 2 * n64, 0] {
                if s != n64 {
                    let rs = if s <= n64 {
                        root(&store, s).unwrap_or(r)
                    } else {
                        root_of_size(s)
                    };
                    assert!(
                        !verify_inclusion(&lh, i64_, s, &proof, &rs),
                        "size {s} for {i} in {n}"
                    );
                }
            }
            // A size whose tree shape differs along the path fails even with the same root.
            assert!(!verify_inclusion(&lh, i64_, n64 + 1000, &proof, &r));
            // Truncated or extended proof.
            if !proof.is_empty() {
                assert!(!verify_inclusion(
                    &lh,
                    i64_,
                    n64,
                    &proof[..proof.len() - 1],
                    &r
                ));
            }
            let mut longer = proof.clone();
            longer.push(lh);
            assert!(!verify_inclusion(&lh, i64_, n64, &longer, &r));
        }
    }
}

#[test]
fn tampered_consistency_proofs_fail() {
    let n = 40usize;
    let (store, _, _) = build(n + 1);
    let roots: Vec<Hash> = (0..=n + 1)
        .map(|s| root(&store, s as u64).unwrap())
        .collect();
    for new in 1..=n {
        for old in 1..new {
            let (o, nw) = (old as u64, new as u64);
            let proof = consistency_proof(&store, o, nw).unwrap();
            assert!(verify_consistency(o, nw, &roots[old], &roots[new], &proof));
            for j in 0..proof.len() {
                let mut bad = proof.clone();
                bad[j][31] ^= 0x04;
                assert!(
                    !verify_consistency(o, nw, &roots[old], &roots[new], &bad),
                    "flip {j}: {old}->{new}"
                );
            }
            let mut bad_old = roots[old];
            bad_old[5] ^= 1;
            assert!(!verify_consistency(o, nw, &bad_old, &roots[new], &proof));
            let mut bad_new = roots[new];
            bad_new[5] ^= 1;
            assert!(!verify_consistency(o, nw, &roots[old], &bad_new, &proof));
            // Wrong sizes, each with the root a log of that size has.
            for (wo, wn) in [(o + 1, nw), (o - 1, nw), (o, nw + 1), (o, nw - 1), (nw, o)] {
                if (wo, wn) != (o, nw) && wo > 0 && wo != wn {
                    assert!(
                        !verify_consistency(
                            wo,
                            wn,
                            &roots[wo as usize],
                            &roots[wn as usize],
                            &proof
                        ),
                        "sizes {wo}->{wn} for {old}->{new}"
                    );
                }
            }
            assert!(!verify_consistency(
                o,
                nw,
                &roots[old],
                &roots[new],
                &proof[..proof.len() - 1]
            ));
            assert!(!verify_consistency(o, nw, &roots[old], &roots[new], &[]));
            // A root of a different log of the same size fails.
            assert!(!verify_consistency(
                o,
                nw,
                &leaf_hash(b"x"),
                &roots[new],
                &proof
            ));
        }
    }
    // Edge cases outside the RFC's 0 < old < new.
    assert!(verify_consistency(5, 5, &roots[5], &roots[5], &[]));
    assert!(!verify_consistency(5, 5, &roots[5], &roots[6], &[]));
    assert!(!verify_consistency(5, 5, &roots[5], &roots[5], &[roots[1]]));
    assert!(verify_consistency(0, 5, &empty_root(), &roots[5], &[]));
    assert!(!verify_consistency(0, 5, &roots[1], &roots[5], &[]));
    assert!(!verify_consistency(6, 5, &roots[6], &roots[5], &[]));
}

#[test]
fn store_errors_are_reported() {
    let (store, _, _) = build(10);
    assert_eq!(
        inclusion_proof(&store, 10, 10),
        Err(TreeError::IndexOutOfRange {
            index: 10,
            size: 10
        })
    );
    assert_eq!(
        consistency_proof(&store, 11, 10),
        Err(TreeError::OldLargerThanNew { old: 11, new: 10 })
    );
    // Asking for a tree larger than the store holds names the missing node.
    assert!(matches!(
        root(&store, 12),
        Err(TreeError::MissingNode { .. })
    ));
    // Appending at the wrong size (a gap) fails without writing anything.
    let mut empty = MemoryTreeStore::new();
    assert_eq!(
        merkle::append(&mut empty, 1, leaf_hash(b"a")),
        Err(TreeError::MissingNode { level: 0, index: 0 })
    );
    assert!(empty.is_empty());
    assert!(empty.get(0, 1).is_none());
}

// ---- the database's way in: edges, batched appends, node lists ----

/// A store holding only `keys`, copied from `full`.
fn only(full: &MemoryTreeStore, keys: &[(u8, u64)]) -> MemoryTreeStore {
    let mut part = MemoryTreeStore::new();
    for &(level, index) in keys {
        part.put(level, index, full.get(level, index).unwrap());
    }
    part
}

#[test]
fn batched_appends_write_what_single_appends_write() {
    let (full, _, data) = build(300);
    let leaves: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
    let mut rng = StdRng::seed_from_u64(9);
    // Start anywhere, append batches of any length, from the edge alone.
    for _ in 0..200 {
        let start = rng.gen_range(0..300u64);
        let len = rng.gen_range(0..=(300 - start)) as usize;
        let keys = merkle::edge_nodes(start);
        assert_eq!(keys.len() as u32, start.count_ones());
        let edge: Vec<Hash> = keys.iter().map(|&(l, i)| full.get(l, i).unwrap()).collect();
        let batch = &leaves[start as usize..start as usize + len];
        let nodes = merkle::append_leaves(start, &edge, batch).unwrap();
        // Exactly the nodes completed by leaves start..start+len, with the full tree's hashes.
        let mut expected = Vec::new();
        for n in start..start + len as u64 {
            let (mut level, mut index) = (0u8, n);
            loop {
                expected.push((level, index, full.get(level, index).unwrap()));
                if index & 1 == 0 {
                    break;
                }
                level += 1;
                index >>= 1;
            }
        }
        assert_eq!(nodes, expected, "start {start}, len {len}");
        // The edge plus the batch gives the same root as the whole tree.
        let mut range = CompactRange::from_edge(start, edge).unwrap();
        for leaf in batch {
            range.push(*leaf);
        }
        assert_eq!(range.root(), root(&full, start + len as u64).unwrap());
        assert_eq!(
            range.root(),
            root_from_leaves(&leaves[..start as usize + len])
        );
    }
    // A wrong edge is refused, not guessed.
    assert!(merkle::append_leaves(5, &[], &[leaves[0]]).is_err());
    assert!(CompactRange::from_edge(5, vec![leaves[0]]).is_err());
    assert!(CompactRange::from_edge(0, vec![]).is_ok());
}

#[test]
fn node_lists_are_enough_for_roots_and_proofs() {
    let (full, _, _) = build(200);
    for size in 0..=200u64 {
        let part = only(&full, &merkle::root_nodes(size));
        assert_eq!(root(&part, size).unwrap(), root(&full, size).unwrap());
        for index in (0..size).step_by(7) {
            let keys = merkle::inclusion_nodes(index, size).unwrap();
            let part = only(&full, &keys);
            assert_eq!(
                inclusion_proof(&part, index, size).unwrap(),
                inclusion_proof(&full, index, size).unwrap()
            );
            // O(log² n) at most, and never every node.
            assert!(keys.len() <= 64 * 64);
        }
        for old in (0..=size).step_by(5) {
            let part = only(&full, &merkle::consistency_nodes(old, size).unwrap());
            assert_eq!(
                consistency_proof(&part, old, size).unwrap(),
                consistency_proof(&full, old, size).unwrap()
            );
        }
    }
    assert!(merkle::inclusion_nodes(5, 5).is_err());
    assert!(merkle::consistency_nodes(6, 5).is_err());
    // At a million leaves an inclusion proof needs few nodes.
    let keys = merkle::inclusion_nodes(123_456, 1_000_000).unwrap();
    assert!(keys.len() < 100, "{}", keys.len());
}
