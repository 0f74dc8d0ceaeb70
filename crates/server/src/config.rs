//! Server configuration: a TOML file, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the server needs to start. Only `data_dir` is required; the rest defaults to
/// the embedded installation inside it.
///
/// No `Debug`: `database_url` may carry a password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…`; default: SQLite at `DATA/db/custody.sqlite`.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Default: `DATA/blobs`. Ignored when `[s3]` is set.
    #[serde(default)]
    pub blob_dir: Option<PathBuf>,
    /// Store ciphertext in an S3-compatible bucket instead of `blob_dir`.
    #[serde(default)]
    pub s3: Option<blobstore::S3Config>,
    /// The key store (root key, epoch keys). Default: `DATA/keys`. Keep it out of database
    /// backups: a backup of both defeats crypto-shredding.
    #[serde(default)]
    pub key_dir: Option<PathBuf>,
    /// PEM certificate chain and key. Default: a self-signed pair in `DATA/tls`, created on
    /// first start.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Names the self-signed certificate is valid for.
    #[serde(default = "default_hostnames")]
    pub hostnames: Vec<String>,
    /// An upload session not committed within this many seconds expires.
    #[serde(default = "default_upload_ttl")]
    pub upload_ttl_secs: i64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}

fn default_hostnames() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

fn default_upload_ttl() -> i64 {
    24 * 3600
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            data_dir,
            listen: default_listen(),
            database_url: None,
            blob_dir: None,
            s3: None,
            key_dir: None,
            tls_cert: None,
            tls_key: None,
            hostnames: default_hostnames(),
            upload_ttl_secs: default_upload_ttl(),
        }
    }

    pub fn from_toml_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("db").join("custody.sqlite").display()
            )
        })
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.blob_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("blobs"))
    }

    pub fn key_dir(&self) -> PathBuf {
        self.key_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }

    pub fn tls_paths(&self) -> (PathBuf, PathBuf) {
        let dir = self.data_dir.join("tls");
        (
            self.tls_cert
                .clone()
                .unwrap_or_else(|| dir.join("cert.pem")),
            self.tls_key.clone().unwrap_or_else(|| dir.join("key.pem")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configuration_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/custody.toml");
        let config = ServerConfig::from_toml_file(&path).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/custody"));
        assert!(config.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn the_example_s3_section_parses_when_uncommented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/custody.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text.find("# [s3]").unwrap();
        let uncommented: String = text[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let config: ServerConfig =
            toml::from_str(&format!("{}\n{uncommented}", &text[..start])).unwrap();
        let s3 = config.s3.unwrap();
        assert_eq!(s3.bucket, "custody-weights");
        assert!(s3.force_path_style);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<ServerConfig>("data_dir = \"/x\"\nlisten_addr = \"1\"")
            .err()
            .unwrap();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }
}
