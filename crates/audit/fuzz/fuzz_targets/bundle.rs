//! Arbitrary bytes as an exported audit bundle, verified offline with the seed log key. The
//! input is a list of files, `path NUL bytes`, separated by the two bytes FF FE (bundle text
//! files are UTF-8, which never holds FF); a file named `previous` is the auditor's kept
//! checkpoint, one named `vendor-key` the vendor tag key the auditor kept (a vendor's export
//! has `vendor.json`). Must never panic, and a report is intact only without a problem.
#![no_main]

use audit::bundle::{BundleFiles, Expectations, verify_bundle_with};
use audit::checkpoint::VerifierKey;
use libfuzzer_sys::fuzz_target;

const LOG_VKEY: &str = include_str!("../seeds/log.vkey");
/// The origin the seed bundles' checkpoints name.
const ORIGIN: &str = "custody.example/audit";

fuzz_target!(|data: &[u8]| {
    let Ok(log) = VerifierKey::parse(LOG_VKEY.trim()) else {
        panic!("the committed log key does not parse");
    };
    let mut files = BundleFiles::new();
    let mut previous = None;
    let mut vendor_key = None;
    for chunk in split(data, b"\xff\xfe") {
        let Some(nul) = chunk.iter().position(|&b| b == 0) else {
            continue;
        };
        let Ok(path) = std::str::from_utf8(&chunk[..nul]) else {
            continue;
        };
        let bytes = chunk[nul + 1..].to_vec();
        if path == "previous" {
            previous = String::from_utf8(bytes).ok();
        } else if path == "vendor-key" {
            vendor_key = String::from_utf8(bytes).ok();
        } else {
            files.insert(path, bytes);
        }
    }
    let expect = Expectations {
        previous: previous.as_deref(),
        vendor_key: vendor_key.as_deref(),
    };
    let report = verify_bundle_with(&files, &log.key, &log.name, ORIGIN, &expect);
    assert_eq!(report.intact, report.first_problem.is_none());
    let _ = report.exit_code();
    if let Some(problem) = &report.first_problem {
        let _ = problem.to_string();
    }
});

fn split<'a>(data: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current
            .windows(separator.len())
            .position(|w| w == separator)
        {
            Some(at) => {
                rest = Some(&current[at + separator.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}
