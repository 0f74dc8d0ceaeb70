//! Arbitrary bytes as an upload manifest's JSON (`{"message", "files": [{"path", "size",
//! "sha256"}]}`), decoded into the types the server decodes it into. Must never panic; what
//! decodes must be exactly what was sent (a path or digest is never altered to make it fit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use types::{CommitId, RepoPath, Sha256Hex};

#[derive(Deserialize)]
#[allow(dead_code, reason = "decoded to be checked, not used")]
struct Manifest {
    #[serde(default)]
    message: String,
    files: Vec<Entry>,
    #[serde(default)]
    derived_from: Option<CommitId>,
}

#[derive(Deserialize)]
struct Entry {
    path: RepoPath,
    size: u64,
    sha256: Sha256Hex,
}

/// The same shapes with plain strings, field for field (serde also accepts a struct as a
/// JSON array in field order, so the order must match too).
#[derive(Deserialize)]
#[allow(dead_code, reason = "decoded to be compared")]
struct RawEntry {
    path: String,
    size: u64,
    sha256: String,
}

#[derive(Deserialize)]
#[allow(dead_code, reason = "decoded to be compared")]
struct RawManifest {
    #[serde(default)]
    message: String,
    files: Vec<RawEntry>,
    #[serde(default)]
    derived_from: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    let Ok(raw) = serde_json::from_slice::<RawManifest>(data) else {
        panic!("a manifest decoded as types but not as plain strings");
    };
    assert_eq!(manifest.files.len(), raw.files.len());
    for (typed, raw) in manifest.files.iter().zip(&raw.files) {
        assert_eq!(typed.path.as_str(), raw.path);
        assert_eq!(typed.sha256.as_str(), raw.sha256);
        assert_eq!(typed.sha256.as_str().len(), 64);
        assert!(RepoPath::parse(&raw.path).is_ok());
        let _ = typed.size;
    }
});
