//! Arbitrary bytes as a certificate file, verified with the test vectors' keys. Must never
//! panic, and a verdict must agree with its checks.
#![no_main]

use certificate::{Status, Verdict, parse_log_key, parse_service_key, verify};
use libfuzzer_sys::fuzz_target;

const SERVICE: &str = include_str!("../../tests/vectors/service.vkey");
const LOG: &str = include_str!("../../tests/vectors/log.vkey");

fuzz_target!(|data: &[u8]| {
    let (Ok(service), Ok(log)) = (parse_service_key(SERVICE), parse_log_key(LOG)) else {
        return;
    };
    for log in [None, Some(&log)] {
        let report = verify(data, &service, log);
        let failed = report.checks.iter().any(|c| c.status == Status::Failed);
        match report.verdict {
            Verdict::Valid => assert!(!failed && report.certificate.is_some()),
            Verdict::Invalid => assert!(failed && report.certificate.is_some()),
            Verdict::Unusable => assert!(failed && report.certificate.is_none()),
        }
        // The key parsers see the same bytes as text.
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = parse_service_key(text);
            let _ = parse_log_key(text);
        }
    }
});
