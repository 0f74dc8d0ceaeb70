//! The Hub API's request parameters, as the router hands them over (percent-decoded): lines
//! `namespace`, `name`, `revision`, `path`. They are parsed as the Hub routes do (the names,
//! `main`/`latest` or a commit id, the file path), and what parses must be safe to use: a
//! path never leaves the folder it is joined under, a name or id never holds a character that
//! could change a URL, a log line or a file name. Must never panic.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use types::{CommitId, ModelName, RepoPath, RepoRef, VendorName};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut fields = text.splitn(4, '\n');
    let ns = fields.next().unwrap_or("");
    let name = fields.next().unwrap_or("");
    let rev = fields.next().unwrap_or("");
    let path = fields.next().unwrap_or("");

    let vendor = VendorName::parse(ns);
    let model = ModelName::parse(name);
    for parsed in [
        vendor.as_ref().map(|v| v.as_str()),
        model.as_ref().map(|m| m.as_str()),
    ]
    .into_iter()
    .flatten()
    {
        assert!(!parsed.is_empty() && parsed.len() <= 96);
        assert!(
            parsed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
        assert!(!parsed.contains("..") && !parsed.starts_with('.'));
    }
    // `VENDOR/MODEL` parses exactly when both halves do.
    if !ns.contains('/') && !name.contains('/') {
        let repo = RepoRef::parse(&format!("{ns}/{name}"));
        assert_eq!(repo.is_ok(), vendor.is_ok() && model.is_ok());
        if let Ok(repo) = repo {
            assert_eq!(repo.to_string(), format!("{ns}/{name}"));
        }
    }

    // A revision is `main`, `latest` or a 40-hex commit id.
    if rev != "main"
        && rev != "latest"
        && let Ok(commit) = CommitId::parse(rev)
    {
        assert_eq!(commit.as_str().len(), 40);
        assert!(
            commit
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    if let Ok(parsed) = RepoPath::parse(path) {
        assert_eq!(parsed.as_str(), path);
        assert!(!path.chars().any(char::is_control));
        assert!(!path.contains('\\'));
        // Joined under a folder, it stays inside: only plain components.
        let joined = Path::new("/out").join(parsed.as_str());
        assert!(joined.starts_with("/out"));
        assert!(
            Path::new(parsed.as_str())
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
            "{path:?} has a component that is not a plain name"
        );
        assert_eq!(
            parsed.segments().count(),
            Path::new(path).components().count()
        );
    }
});
