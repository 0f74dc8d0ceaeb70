//! TLS material. The workspace compiles rustls without aws-lc, so every TLS user gets its
//! provider from here (ring-backed) instead of relying on a process-wide default.

use std::sync::Arc;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};
use zeroize::Zeroizing;

use crate::CryptoError;

/// rustls crypto provider backed by ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Self-signed server certificate (ECDSA P-256, SHA-256) for the given DNS names / IP literals,
/// suitable for pinning by fingerprint or as the client's only trust anchor. The first name is also
/// the subject CN. Returns `(certificate PEM, PKCS#8 private key PEM)`.
pub fn self_signed_server_cert(
    names: &[String],
) -> Result<(String, Zeroizing<String>), CryptoError> {
    let Some(first) = names.first() else {
        return Err(CryptoError::InvalidFormat(
            "a server certificate needs at least one name",
        ));
    };
    for name in names {
        // Same syntax check a rustls client applies, so we never issue an unusable certificate.
        rustls::pki_types::ServerName::try_from(name.as_str())
            .map_err(|_| CryptoError::Tls(format!("not a dns name or ip address: {name:?}")))?;
    }
    let tls_err = |e: rcgen::Error| CryptoError::Tls(e.to_string());
    let mut params = CertificateParams::new(names.to_vec()).map_err(tls_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, first.as_str());
    params.distinguished_name = dn;
    // rcgen's default validity runs to the year 4096; a certificate should expire. Starting a
    // year back keeps clocks that lag a little from rejecting it.
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + CERT_YEARS, 1, 1);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key_pair = KeyPair::generate().map_err(tls_err)?;
    let cert = params.self_signed(&key_pair).map_err(tls_err)?;
    Ok((cert.pem(), Zeroizing::new(key_pair.serialize_pem())))
}

/// Years a self-signed certificate stays valid; replace it (delete both files and restart, or
/// configure your own) before then.
pub const CERT_YEARS: i32 = 2;

pub(crate) fn current_year() -> i32 {
    year_of(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// The civil (UTC) year of a Unix time.
fn year_of(secs: u64) -> i32 {
    // Days to a civil year (Howard Hinnant's algorithm), enough for a validity window.
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2)) as i32
}

/// `"SHA256:"` followed by the colon-separated uppercase hex of the SHA-256 of the DER
/// certificate, e.g. `SHA256:AB:01:...` (95 hex-and-colon characters after the prefix).
pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    let digest = crate::hash::sha256(cert_der);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    format!("SHA256:{}", hex.join(":"))
}

/// A DER certificate's validity window, `(not_before, not_after)` in Unix seconds: a renewed
/// server certificate is checked with it before it replaces the one in use.
pub fn cert_validity(cert_der: &[u8]) -> Result<(i64, i64), CryptoError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| CryptoError::Tls(format!("not a certificate: {e}")))?;
    let validity = cert.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_map_to_their_years() {
        for (secs, year) in [
            (0, 1970),
            (951_782_400, 2000),   // 2000-02-29
            (1_735_689_599, 2024), // 2024-12-31T23:59:59
            (1_735_689_600, 2025), // 2025-01-01
            (4_102_444_800, 2100), // 2100-01-01
        ] {
            assert_eq!(year_of(secs), year, "{secs}");
        }
    }
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{ClientConnection, ServerConnection};
    use std::io::{Read, Write};

    #[test]
    fn fingerprint_format() {
        // sha256("abc") = ba7816bf...f20015ad
        let fp = fingerprint_sha256(b"abc");
        assert!(fp.starts_with("SHA256:BA:78:16:BF:8F:01:"));
        assert!(fp.ends_with(":F2:00:15:AD"));
        assert_eq!(fp.len(), 7 + 32 * 3 - 1);
    }

    #[test]
    fn bad_names_are_errors() {
        assert!(matches!(
            self_signed_server_cert(&[]),
            Err(CryptoError::InvalidFormat(_))
        ));
        assert!(matches!(
            self_signed_server_cert(&["not a dns name!".to_owned()]),
            Err(CryptoError::Tls(_))
        ));
        assert!(matches!(
            self_signed_server_cert(&["ok.test".to_owned(), "bücher.test".to_owned()]),
            Err(CryptoError::Tls(_))
        ));
        assert!(self_signed_server_cert(&["::1".to_owned(), "localhost".to_owned()]).is_ok());
    }

    /// Server with the generated cert, client trusting only that cert; runs the handshake in
    /// memory, with the client sending "ping" as soon as it can.
    fn handshake(
        names: &[String],
        server_name: &str,
    ) -> Result<(ServerConnection, ClientConnection), rustls::Error> {
        let (cert_pem, key_pem) = self_signed_server_cert(names).unwrap();
        assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client_cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut server = ServerConnection::new(Arc::new(server_cfg))?;
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        let mut client = ClientConnection::new(Arc::new(client_cfg), name)?;
        client.writer().write_all(b"ping").unwrap();
        for _ in 0..10 {
            let mut c2s = Vec::new();
            client.write_tls(&mut c2s).unwrap();
            server.read_tls(&mut c2s.as_slice()).unwrap();
            server.process_new_packets()?;
            let mut s2c = Vec::new();
            server.write_tls(&mut s2c).unwrap();
            client.read_tls(&mut s2c.as_slice()).unwrap();
            client.process_new_packets()?;
            if c2s.is_empty() && s2c.is_empty() {
                break;
            }
        }
        Ok((server, client))
    }

    #[test]
    fn handshake_with_self_signed_cert() {
        let names = vec!["custody.test".to_owned(), "127.0.0.1".to_owned()];
        for server_name in ["custody.test", "127.0.0.1"] {
            let (mut server, client) = handshake(&names, server_name).unwrap();
            assert!(!client.is_handshaking() && !server.is_handshaking());
            let mut got = [0u8; 4];
            server.reader().read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ping");
        }
    }

    #[test]
    fn wrong_name_is_rejected() {
        let err = handshake(&["a.test".to_owned()], "b.test").err();
        assert!(
            matches!(err, Some(rustls::Error::InvalidCertificate(_))),
            "{err:?}"
        );
    }
}
