//! The server's TLS certificate, replaceable while the server runs.
//!
//! Certificates from a CA are renewed every 60 to 90 days. The server reads `tls_cert` and
//! `tls_key` again on SIGHUP and when either file changes (checked every
//! `tls_reload_check_secs`). A new pair replaces the one in use only if it parses, the key
//! matches the certificate, and the certificate is valid now; otherwise the server logs why
//! and keeps the one it has. New handshakes get the new certificate; connections already open
//! keep theirs.
//!
//! custody's own self-signed certificate is pinned in the database (`service_identity`), so it
//! is never reloaded: replacing it needs a restart, where the pin is checked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate handshakes are answered with.
pub(crate) struct ReloadableCert {
    current: RwLock<Loaded>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    fingerprint: String,
    /// The files as they were when read (to notice a change).
    stamp: Option<Stamp>,
}

/// What says a file changed: its modification time, length and inode, through symbolic links
/// (Kubernetes swaps a link to a new directory).
#[derive(Clone, PartialEq, Eq)]
struct Stamp(Vec<(Option<SystemTime>, u64, u64)>);

fn stamp(paths: &[&Path]) -> Option<Stamp> {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let inode = 0;
            Some((m.modified().ok(), m.len(), inode))
        })
        .collect::<Option<Vec<_>>>()
        .map(Stamp)
}

impl std::fmt::Debug for ReloadableCert {
    // The key never; the certificate's fingerprint is public.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("cert_path", &self.cert_path)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().key.clone())
    }
}

/// Reads and checks a certificate chain and its key: `(certified key, fingerprint)`.
fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<(Arc<CertifiedKey>, String)> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_path.display()))?;
    let first = certs
        .first()
        .with_context(|| format!("{} holds no certificate", cert_path.display()))?;
    let fingerprint = crypto::tls::fingerprint_sha256(first);
    let (not_before, not_after) = crypto::tls::cert_validity(first)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    // TLS clients check the certificate against their system clocks: so does this.
    let now = store::Clock::system_now();
    anyhow::ensure!(
        not_before <= now && now < not_after,
        "{} is not valid now (valid from {} to {})",
        cert_path.display(),
        crate::approvals::rfc3339(not_before),
        crate::approvals::rfc3339(not_after)
    );
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("reading the private key {}", key_path.display()))?;
    let certified =
        CertifiedKey::from_der(certs, key, &crypto::tls::provider()).with_context(|| {
            format!(
                "the key {} does not go with the certificate {}",
                key_path.display(),
                cert_path.display()
            )
        })?;
    Ok((Arc::new(certified), fingerprint))
}

impl ReloadableCert {
    /// Loads the pair for the first time (an error stops the start).
    pub(crate) fn open(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<ReloadableCert>> {
        let before = stamp(&[cert_path, key_path]);
        let (key, fingerprint) = load(cert_path, key_path)?;
        Ok(Arc::new(ReloadableCert {
            current: RwLock::new(Loaded {
                key,
                fingerprint,
                stamp: before,
            }),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        // Replaced whole under the lock: a poisoned lock still holds a complete pair.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn fingerprint(&self) -> String {
        self.read().fingerprint.clone()
    }

    /// Reads the files again (`why`: for the log). A pair that fails its checks is refused
    /// and logged; the current one stays.
    pub(crate) fn reload(&self, why: &str) {
        let before = stamp(&[&self.cert_path, &self.key_path]);
        match load(&self.cert_path, &self.key_path) {
            Ok((key, fingerprint)) => {
                let mut current = self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let changed = current.fingerprint != fingerprint;
                *current = Loaded {
                    key,
                    fingerprint: fingerprint.clone(),
                    stamp: before,
                };
                drop(current);
                crate::metrics::tls_reload(true);
                if changed {
                    tracing::info!(%fingerprint, why, "TLS certificate reloaded: new handshakes use it");
                } else {
                    tracing::info!(%fingerprint, why, "TLS certificate read again: unchanged");
                }
            }
            Err(e) => {
                // Remember these files as seen, so a bad pair is reported once, not at every
                // check; a further change is read again.
                self.current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .stamp = before;
                crate::metrics::tls_reload(false);
                tracing::error!(
                    error = format!("{e:#}"),
                    why,
                    kept = %self.fingerprint(),
                    "new TLS certificate refused; still serving the previous one"
                );
            }
        }
    }

    /// Whether the files differ from when they were last read.
    fn changed(&self) -> bool {
        let now = stamp(&[&self.cert_path, &self.key_path]);
        now.is_some() && now != self.read().stamp
    }

    /// Reloads on SIGHUP and when the files change (every `check` seconds; 0: SIGHUP only),
    /// until the process ends.
    pub(crate) async fn watch(self: Arc<Self>, check: u64) {
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: certificates reload only when their files change");
                None
            }
        };
        let period = Duration::from_secs(check.max(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = hup => self.reload("SIGHUP"),
                _ = tick.tick(), if check > 0 => {
                    if self.changed() {
                        self.reload("the certificate files changed");
                    }
                }
            }
        }
    }
}

/// SIGHUP when nothing can be reloaded (custody's own certificate): noted, never fatal.
pub(crate) async fn ignore_hangups() {
    #[cfg(unix)]
    if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        while hangup.recv().await.is_some() {
            tracing::info!(
                "SIGHUP: custody's own TLS certificate is pinned and is not reloaded; configure \
                 tls_cert and tls_key to renew certificates without a restart"
            );
        }
    }
    std::future::pending::<()>().await;
}
