//! The service's small CA for exclusive servers (hosts).
//!
//! A host makes its own key pair and a certificate signing request ([`host_key_and_csr`]); the
//! private key never leaves the host. The operator's enrollment signs the request's public key
//! ([`sign_host_csr`]) into a client certificate whose content the CA decides alone: the
//! request's own subject, names and extensions are ignored, so a host cannot ask for more than
//! a client certificate for the name the operator typed. The server identifies a host by the
//! SHA-256 of its certificate ([`cert_sha256_hex`]) and checks enrollment and revocation per
//! request, so revoking a host takes effect on its next request, not at expiry.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use zeroize::Zeroizing;

use crate::CryptoError;

/// How long a host certificate is valid. Revocation is immediate regardless.
pub const HOST_CERT_DAYS: i64 = 365;
/// How long the host CA is valid.
pub const CA_YEARS: i32 = 10;

fn tls_err(e: rcgen::Error) -> CryptoError {
    CryptoError::Tls(e.to_string())
}

/// A new CA for host certificates: `(certificate PEM, PKCS#8 key PEM)`.
pub fn new_host_ca(common_name: &str) -> Result<(String, Zeroizing<String>), CryptoError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let year = crate::tls::current_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + CA_YEARS, 1, 1);
    let key = KeyPair::generate().map_err(tls_err)?;
    let cert = params.self_signed(&key).map_err(tls_err)?;
    Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
}

/// On the host: a new key pair and a signing request naming `host`.
/// Returns `(PKCS#8 key PEM, CSR PEM)`.
pub fn host_key_and_csr(host: &str) -> Result<(Zeroizing<String>, String), CryptoError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host);
    params.distinguished_name = dn;
    let key = KeyPair::generate().map_err(tls_err)?;
    let csr = params.serialize_request(&key).map_err(tls_err)?;
    let csr_pem = csr.pem().map_err(tls_err)?;
    Ok((Zeroizing::new(key.serialize_pem()), csr_pem))
}

/// The name a signing request gives its host (its subject's common name), when it names one
/// as text: the operator is warned when it differs from the name being enrolled.
pub fn csr_host_name(csr_pem: &str) -> Result<Option<String>, CryptoError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CryptoError::Tls(format!("not a valid certificate signing request: {e}")))?;
    Ok(
        match csr.params.distinguished_name.get(&DnType::CommonName) {
            Some(rcgen::DnValue::Utf8String(s)) => Some(s.clone()),
            Some(rcgen::DnValue::PrintableString(s)) => Some(s.as_str().to_owned()),
            Some(rcgen::DnValue::Ia5String(s)) => Some(s.as_str().to_owned()),
            _ => None,
        },
    )
}

/// The host a certificate names (its subject's common name), read from its PEM: `custody
/// host renew` asks for a certificate under the same name.
pub fn cert_host_name(cert_pem: &str) -> Result<Option<String>, CryptoError> {
    let der = first_cert_der(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CryptoError::Tls(format!("not a certificate: {e}")))?;
    Ok(cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned))
}

/// A certificate the CA issued.
pub struct IssuedHostCert {
    pub cert_pem: String,
    /// Lowercase hex SHA-256 of the DER certificate: how the server recognises the host.
    pub sha256: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// Signs the public key of `csr_pem` (whose self-signature must verify) into a client
/// certificate for `host`, valid from now for [`HOST_CERT_DAYS`].
pub fn sign_host_csr(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    csr_pem: &str,
    host: &str,
    now_unix: i64,
) -> Result<IssuedHostCert, CryptoError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CryptoError::Tls(format!("not a valid certificate signing request: {e}")))?;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(tls_err)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(tls_err)?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host);
    params.distinguished_name = dn;
    let uri = format!("spiffe://custody/host/{host}");
    params.subject_alt_names =
        vec![SanType::URI(uri.try_into().map_err(|_| {
            CryptoError::InvalidFormat("host name not usable in a URI")
        })?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let mut serial: [u8; 16] = crate::random_bytes()?;
    serial[0] &= 0x7f; // a positive INTEGER
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let not_before = now_unix - 3600; // tolerate a host clock running a little behind
    let not_after = now_unix + HOST_CERT_DAYS * 86_400;
    params.not_before = unix_to_offset(not_before)?;
    params.not_after = unix_to_offset(not_after)?;

    let signed = CertificateSigningRequestParams {
        params,
        public_key: csr.public_key,
    }
    .signed_by(&issuer)
    .map_err(tls_err)?;
    Ok(IssuedHostCert {
        sha256: cert_sha256_hex(signed.der()),
        cert_pem: signed.pem(),
        not_after,
    })
}

fn unix_to_offset(secs: i64) -> Result<time::OffsetDateTime, CryptoError> {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| CryptoError::InvalidFormat("time out of range"))
}

/// Lowercase hex SHA-256 of a DER certificate.
pub fn cert_sha256_hex(cert_der: &[u8]) -> String {
    hex::encode(crate::hash::sha256(cert_der))
}

/// The first certificate of a PEM file's text, as DER.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, CryptoError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or(CryptoError::InvalidFormat("no certificate in the PEM text"))?
        .map(|c| c.to_vec())
        .map_err(|_| CryptoError::InvalidFormat("unreadable certificate PEM"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_is_a_client_cert_for_the_enrolled_name_only() {
        let (ca_pem, ca_key) = new_host_ca("custody host CA").unwrap();
        // The host asks for a CA certificate under another name: the CA ignores all of it.
        let mut greedy = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        greedy.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let host_key = KeyPair::generate().unwrap();
        let csr = greedy.serialize_request(&host_key).unwrap().pem().unwrap();
        let issued = sign_host_csr(&ca_pem, &ca_key, &csr, "gpu-01", 1_800_000_000).unwrap();
        let der = first_cert_der(&issued.cert_pem).unwrap();
        assert_eq!(cert_sha256_hex(&der), issued.sha256);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca());
        let cn: Vec<_> = cert.subject().iter_common_name().collect();
        assert_eq!(cn[0].as_str().unwrap(), "gpu-01");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(
            cert.validity().not_after.timestamp(),
            1_800_000_000 + HOST_CERT_DAYS * 86_400
        );
        // The key in the certificate is the host's.
        assert_eq!(
            &*cert.public_key().subject_public_key.data,
            host_key.public_key_raw()
        );
    }

    #[test]
    fn garbage_and_tampered_requests_are_refused() {
        let (ca_pem, ca_key) = new_host_ca("ca").unwrap();
        assert!(sign_host_csr(&ca_pem, &ca_key, "not a csr", "h", 0).is_err());
        let (_, csr) = host_key_and_csr("h").unwrap();
        // Flip a byte inside the base64 body: the request's self-signature no longer holds.
        let mut lines: Vec<String> = csr.lines().map(str::to_owned).collect();
        let line = &mut lines[2];
        let c = if line.starts_with('A') { "B" } else { "A" };
        line.replace_range(0..1, c);
        let tampered = lines.join("\n");
        assert!(sign_host_csr(&ca_pem, &ca_key, &tampered, "h", 0).is_err());
        assert!(sign_host_csr(&ca_pem, &ca_key, &csr, "h", 1_800_000_000).is_ok());
    }
}
