//! The service identity: what makes N instances one service to their clients, hosts and
//! auditors. The TLS certificate (clients pin it), the host CA (exclusive servers' client
//! certificates chain to it), the audit log key (auditors verify checkpoints with it) and the
//! service key (deletion certificates are signed with it).
//!
//! It is made once: by the first start of the embedded default (in the data directory and the
//! key store), or by `custody init --out DIR` for several instances, which then mount DIR and
//! name it as `identity_dir`. Its public fingerprints are pinned in the database at first
//! start; an instance whose identity differs refuses to start, naming what differs, and no
//! instance ever makes a new identity for a database that is already in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::ServerConfig as TlsConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use store::PinnedIdentity;

use crate::cert_reload::ReloadableCert;
use crate::checkpointer::LogKey;
use crate::service_key::ServiceKey;

/// Where the identity's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPaths {
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub host_ca_cert: PathBuf,
    pub host_ca_key: PathBuf,
    pub log_key: PathBuf,
    pub service_key: PathBuf,
}

impl IdentityPaths {
    /// The layout `custody init --out DIR` makes, and the data directory's own:
    /// `tls/{cert,key,host-ca}.pem`, `tls/host-ca.key`, `keys/{audit-log,service-signing}.key`.
    pub fn in_dir(tls: &Path, keys: &Path) -> IdentityPaths {
        IdentityPaths {
            tls_cert: tls.join("cert.pem"),
            tls_key: tls.join("key.pem"),
            host_ca_cert: tls.join("host-ca.pem"),
            host_ca_key: tls.join("host-ca.key"),
            log_key: keys.join(crate::checkpointer::KEY_FILE),
            service_key: keys.join(crate::service_key::KEY_FILE),
        }
    }

    fn all(&self) -> [&Path; 6] {
        [
            &self.tls_cert,
            &self.tls_key,
            &self.host_ca_cert,
            &self.host_ca_key,
            &self.log_key,
            &self.service_key,
        ]
    }
}

/// The host CA, loaded once: enrollment signs with it. No `Debug`: it holds a private key.
pub(crate) struct HostCa {
    pub cert_pem: String,
    pub key_pem: zeroize::Zeroizing<String>,
}

/// The loaded identity. No `Debug`: it holds private keys.
pub(crate) struct ServiceIdentity {
    pub tls: Arc<TlsConfig>,
    pub tls_fingerprint: String,
    /// The certificate handshakes use, reloadable when it is the operator's.
    pub tls_cert: Arc<ReloadableCert>,
    pub host_ca: HostCa,
    pub log_key: LogKey,
    pub service_key: ServiceKey,
    /// Whether the TLS certificate is custody's own (self-signed): then it is pinned too. An
    /// operator's certificate from a CA may be renewed, so it is not.
    pub tls_is_custodys: bool,
}

/// What to do about identity files that do not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Make them (the first start of an installation).
    Create,
    /// Refuse, with this reason.
    Refuse(&'static str),
}

impl ServiceIdentity {
    /// Loads the identity at `paths`, making the missing parts when `missing` says so.
    /// `custodys_tls`: the TLS certificate is custody's self-signed one (made here if missing).
    pub(crate) fn open(
        paths: &IdentityPaths,
        custodys_tls: bool,
        hostnames: &[String],
        audit_origin: Option<&str>,
        missing: Missing,
    ) -> anyhow::Result<ServiceIdentity> {
        let absent: Vec<&Path> = paths.all().into_iter().filter(|p| !p.exists()).collect();
        if !absent.is_empty() {
            match missing {
                Missing::Refuse(why) => bail!(
                    "the service identity is incomplete: {} missing. {why}",
                    absent
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Missing::Create => create_missing(paths, custodys_tls, hostnames, audit_origin)?,
            }
        }
        let host_ca = load_host_ca(paths)?;
        let (tls, tls_cert) = load_tls(&paths.tls_cert, &paths.tls_key, &host_ca)?;
        Ok(ServiceIdentity {
            tls,
            tls_fingerprint: tls_cert.fingerprint(),
            tls_cert,
            host_ca,
            log_key: LogKey::load(&paths.log_key, audit_origin)?,
            service_key: ServiceKey::load(&paths.service_key)?,
            tls_is_custodys: custodys_tls,
        })
    }

    /// The public fingerprints pinned in the database.
    pub(crate) fn fingerprints(&self) -> anyhow::Result<Vec<PinnedIdentity>> {
        let host_ca = crypto::host_ca::first_cert_der(&self.host_ca.cert_pem)
            .context("reading the host CA certificate")?;
        let mut pins = vec![
            PinnedIdentity {
                kind: "host-ca".into(),
                fingerprint: format!("sha256:{}", crypto::host_ca::cert_sha256_hex(&host_ca)),
            },
            PinnedIdentity {
                kind: "audit-log-key".into(),
                fingerprint: self.log_key.verifier()?.to_string(),
            },
            PinnedIdentity {
                kind: "service-signing-key".into(),
                fingerprint: format!("ed25519:{}", self.service_key.public_hex()),
            },
        ];
        if self.tls_is_custodys {
            pins.push(PinnedIdentity {
                kind: "tls-certificate".into(),
                fingerprint: self.tls_fingerprint.clone(),
            });
        }
        Ok(pins)
    }
}

/// `custody init --out DIR`: makes a complete identity in `dir` (layout of
/// [`IdentityPaths::in_dir`]) for instances that will name it as `identity_dir`. Refuses to
/// touch a directory that already holds any part of one.
pub fn init_identity(
    dir: &Path,
    hostnames: &[String],
    audit_origin: Option<&str>,
) -> anyhow::Result<IdentityPaths> {
    let paths = IdentityPaths::in_dir(&dir.join("tls"), &dir.join("keys"));
    if let Some(existing) = paths.all().into_iter().find(|p| p.exists()) {
        bail!(
            "{} already exists: refusing to make a second identity over it",
            existing.display()
        );
    }
    crate::init::create_private_dir(dir)?;
    create_missing(&paths, true, hostnames, audit_origin)?;
    Ok(paths)
}

fn create_missing(
    paths: &IdentityPaths,
    custodys_tls: bool,
    hostnames: &[String],
    audit_origin: Option<&str>,
) -> anyhow::Result<()> {
    for dir in paths.all().iter().filter_map(|p| p.parent()) {
        crate::init::create_private_dir(dir)?;
    }
    match (paths.tls_cert.exists(), paths.tls_key.exists()) {
        (false, false) if custodys_tls => {
            let (cert_pem, key_pem) = crypto::tls::self_signed_server_cert(hostnames)?;
            write_file(&paths.tls_key, key_pem.as_bytes(), 0o600)?;
            write_file(&paths.tls_cert, cert_pem.as_bytes(), 0o644)?;
        }
        (true, true) => {}
        _ => bail!(
            "the TLS certificate {} and key {} must both exist (or, for custody's own \
             self-signed certificate, neither)",
            paths.tls_cert.display(),
            paths.tls_key.display()
        ),
    }
    match (paths.host_ca_cert.exists(), paths.host_ca_key.exists()) {
        (false, false) => {
            let (cert_pem, key_pem) = crypto::host_ca::new_host_ca("custody host CA")?;
            write_file(&paths.host_ca_key, key_pem.as_bytes(), 0o600)?;
            write_file(&paths.host_ca_cert, cert_pem.as_bytes(), 0o644)?;
        }
        (true, true) => {}
        _ => bail!(
            "the host CA certificate {} and key {} must both exist, or neither",
            paths.host_ca_cert.display(),
            paths.host_ca_key.display()
        ),
    }
    if !paths.log_key.exists() {
        LogKey::create(&paths.log_key, audit_origin)?;
    }
    if !paths.service_key.exists() {
        ServiceKey::create(&paths.service_key)?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

fn load_host_ca(paths: &IdentityPaths) -> anyhow::Result<HostCa> {
    let cert_pem = std::fs::read_to_string(&paths.host_ca_cert)
        .with_context(|| format!("reading the host CA {}", paths.host_ca_cert.display()))?;
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(&paths.host_ca_key)
            .with_context(|| format!("reading the host CA key {}", paths.host_ca_key.display()))?,
    );
    Ok(HostCa { cert_pem, key_pem })
}

/// Client certificates are optional at the TLS layer (people use tokens from anywhere), but
/// one that is presented must chain to the host CA, or the handshake fails. Whether a host
/// is needed is the policy's decision, per request.
fn client_verifier(
    host_ca: &HostCa,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(host_ca.cert_pem.as_bytes()) {
        roots.add(cert.context("parsing the host CA certificate")?)?;
    }
    Ok(rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        crypto::tls::provider(),
    )
    .allow_unauthenticated()
    .build()?)
}

fn load_tls(
    cert_path: &Path,
    key_path: &Path,
    host_ca: &HostCa,
) -> anyhow::Result<(Arc<TlsConfig>, Arc<ReloadableCert>)> {
    let cert = ReloadableCert::open(cert_path, key_path)?;
    let mut tls = TlsConfig::builder_with_provider(crypto::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_verifier(host_ca)?)
        .with_cert_resolver(cert.clone());
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(tls), cert))
}
