//! The service key's file: the Ed25519 key that signs deletion certificates, kept in the key
//! store beside the audit log key. The deletion service (`deletion` crate) signs with it; this
//! module only creates and loads the file.

use std::path::Path;

use anyhow::{Context, bail};
use crypto::sign::SigningKey;
use zeroize::Zeroizing;

pub(crate) const KEY_FILE: &str = "service-signing.key";
/// `service-signing.key`: this magic, a version byte, then the PKCS#8 v2 document.
const KEY_MAGIC: &[u8] = b"custody-service-key";
const KEY_VERSION: u8 = 1;

/// The service's certificate signing key (Ed25519), in the key store. No `Debug`.
pub(crate) struct ServiceKey {
    pub(crate) key: SigningKey,
}

impl ServiceKey {
    /// Makes a new service key at `path` (which must not exist).
    pub(crate) fn create(path: &Path) -> anyhow::Result<ServiceKey> {
        let (key, pkcs8) = SigningKey::generate()?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_MAGIC.len() + 1 + pkcs8.len()));
        bytes.extend_from_slice(KEY_MAGIC);
        bytes.push(KEY_VERSION);
        bytes.extend_from_slice(&pkcs8);
        crate::checkpointer::write_new_file(path, &bytes)?;
        tracing::info!("created the service's certificate signing key");
        Ok(ServiceKey { key })
    }

    /// Loads the service key at `path`.
    pub(crate) fn load(path: &Path) -> anyhow::Result<ServiceKey> {
        let bytes = Zeroizing::new(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let Some(rest) = bytes.strip_prefix(KEY_MAGIC) else {
            bail!("{} is not a custody service key", path.display());
        };
        match rest.split_first() {
            Some((&KEY_VERSION, pkcs8)) => Ok(ServiceKey {
                key: SigningKey::from_pkcs8(pkcs8)
                    .with_context(|| format!("{} holds no usable key", path.display()))?,
            }),
            Some((v, _)) => bail!("{}: unsupported key file version {v}", path.display()),
            None => bail!("{} is truncated", path.display()),
        }
    }

    /// The public key as `custody verify-certificate --service-key` reads it (hex).
    pub(crate) fn public_hex(&self) -> String {
        hex::encode(self.key.public_key().as_bytes())
    }
}
