//! Arbitrary bytes as the certificate signing request an enrolling host sends, signed by a
//! host CA made once per process. The first byte picks the form: PEM text as sent, or the
//! rest as the DER inside a PEM envelope (so the fuzzer reaches the ASN.1 parser). Must never
//! panic; a certificate issued is always a client certificate for the name the operator gave,
//! never whatever the request asked for.
#![no_main]

use std::sync::OnceLock;

use crypto::host_ca::{first_cert_der, new_host_ca, sign_host_csr};
use libfuzzer_sys::fuzz_target;

const HOST: &str = "gpu-01";

fn ca() -> &'static (String, String) {
    static CA: OnceLock<(String, String)> = OnceLock::new();
    CA.get_or_init(|| match new_host_ca("custody host CA (fuzz)") {
        Ok((cert, key)) => (cert, key.to_string()),
        Err(e) => panic!("making the fuzz CA: {e}"),
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap_or(""))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let csr = if form & 1 == 0 {
        match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        }
    } else {
        pem("CERTIFICATE REQUEST", rest)
    };
    let (ca_cert, ca_key) = ca();
    if let Ok(issued) = sign_host_csr(ca_cert, ca_key, &csr, HOST, 1_700_000_000) {
        let der = match first_cert_der(&issued.cert_pem) {
            Ok(der) => der,
            Err(e) => panic!("an issued certificate does not parse back: {e}"),
        };
        assert_eq!(issued.sha256, crypto::host_ca::cert_sha256_hex(&der));
        // The CA decides the content: the host name it was given, whatever the request said.
        let uri = format!("spiffe://custody/host/{HOST}");
        assert!(der.windows(uri.len()).any(|w| w == uri.as_bytes()));
    }
    let _ = first_cert_der(&csr);
});
