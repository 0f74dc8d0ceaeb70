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
    /// The key store: the audit log key and the service key (part of the service identity).
    /// Default: `DATA/keys`. Epoch keys live in the database, each wrapped under its root.
    #[serde(default)]
    pub key_dir: Option<PathBuf>,
    /// The service identity made by `custody init --out DIR`, shared by every instance:
    /// `DIR/tls/` (certificate, key, host CA) and `DIR/keys/` (audit log key, service key).
    /// Never created by the server. Default: none; the embedded default keeps its identity in
    /// `DATA/tls` and the key store, made on first start.
    #[serde(default)]
    pub identity_dir: Option<PathBuf>,
    /// The root of trust, one root per key epoch: `kind = "file"` (root key files in `dir`,
    /// default `DATA.root`, beside the data directory), `kind = "kms"` (AWS KMS) or
    /// `kind = "pkcs11"` (an HSM through its PKCS#11 module; the PIN from a file or an
    /// environment variable, never in this file). Keep root
    /// files out of every backup: shredding destroys the old epoch's root, which is what makes
    /// older backups unreadable.
    #[serde(default)]
    pub root: Option<shred::RootConfig>,
    /// Accept a root directory inside the data directory or the key store (a backup of that
    /// directory then holds the roots and can undo a shred). The server warns at every start
    /// and every certificate says so. Default: refuse to start.
    #[serde(default)]
    pub allow_root_in_data_dir: bool,
    /// PEM certificate chain and key. Default: a self-signed pair in `DATA/tls` (or the
    /// identity directory), created on first start.
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
    /// A directory of Cedar policies (`schema.cedarschema` and `*.cedar`) to use instead of
    /// the ones built in. Strictly validated at start; any error stops the server.
    #[serde(default)]
    pub policy_dir: Option<PathBuf>,
    /// The audit log's origin (the name in its signed checkpoints), fixed when the log key is
    /// created on first start. Default: `custody/audit/<random id>`.
    #[serde(default)]
    pub audit_origin: Option<String>,
    /// Sign a new audit checkpoint this often when the log has grown.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_secs: u64,
    /// A request waiting for a vendor's approval (two-person rule, re-issued credentials,
    /// further admins) expires unapproved after this many seconds.
    #[serde(default = "default_pending_ttl")]
    pub pending_ttl_secs: i64,
    /// Where the first start writes the operator bootstrap token (mode 0600, never printed).
    /// Default: `DATA/bootstrap-token`.
    #[serde(default)]
    pub bootstrap_token_file: Option<PathBuf>,
    /// The bootstrap token expires this long after the first start if it was not used.
    #[serde(default = "default_bootstrap_ttl")]
    pub bootstrap_token_ttl_secs: i64,
    /// Connection limits and timeouts (`[limits]`), against slow and abusive clients. Every
    /// field has a safe default; SECURITY.md says what each one defends.
    #[serde(default)]
    pub limits: Limits,
    /// Vendors' webhooks (`[webhooks]`).
    #[serde(default)]
    pub webhooks: WebhookConfig,
    /// Witnesses of the audit log (`[[witnesses]]`, C2SP tlog-witness): every new checkpoint
    /// is submitted to each; their cosignatures travel with exports and certificates.
    #[serde(default)]
    pub witnesses: Vec<WitnessConfig>,
    /// How many of them must cosign a deletion certificate's checkpoint before it is issued
    /// (0: none). The certificate step waits up to `witness_wait_secs` for them, then issues
    /// without, saying so in the log and the `deletion.certified` entry: an auditor who
    /// requires the quorum (`--min-witnesses`) then refuses it.
    #[serde(default)]
    pub witness_quorum: usize,
    #[serde(default = "default_witness_wait")]
    pub witness_wait_secs: u64,
    /// Log lines on stderr: `text` (for people) or `json` (one object a line, for log
    /// pipelines). Colour only when stderr is a terminal.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Prometheus metrics on a listener of their own (`[metrics]`).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Seconds between checks of `tls_cert` and `tls_key` for a renewed certificate (SIGHUP
    /// reloads at once). 0: only on SIGHUP.
    #[serde(default = "default_tls_reload_check")]
    pub tls_reload_check_secs: u64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: text or json")),
        }
    }
}

/// The metrics listener: plain HTTP serving `GET /metrics` in Prometheus's text format,
/// nothing else. On by default, on loopback only: the figures are counts and ages, never
/// names, but they say how busy the service is.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

fn default_tls_reload_check() -> u64 {
    10
}

/// Where vendors' webhooks may send. A webhook makes the server send requests out, so the
/// operator names the hosts (`host` or `host:port`); none by default, which refuses every
/// webhook. Receivers are HTTPS only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    pub allowed_hosts: Vec<String>,
}

/// One witness: where to submit (`URL/add-checkpoint`) and its verifier key
/// (`name+keyid+base64(0x04 || key)`, as `custody witness` prints it).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// `http://host:port` (the submission prefix).
    pub url: String,
    pub key: String,
}

fn default_witness_wait() -> u64 {
    30
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

fn default_checkpoint_interval() -> u64 {
    60
}

fn default_bootstrap_ttl() -> i64 {
    24 * 3600
}

fn default_pending_ttl() -> i64 {
    7 * 24 * 3600
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
            identity_dir: None,
            root: None,
            allow_root_in_data_dir: false,
            tls_cert: None,
            tls_key: None,
            hostnames: default_hostnames(),
            upload_ttl_secs: default_upload_ttl(),
            policy_dir: None,
            audit_origin: None,
            checkpoint_interval_secs: default_checkpoint_interval(),
            pending_ttl_secs: default_pending_ttl(),
            bootstrap_token_file: None,
            bootstrap_token_ttl_secs: default_bootstrap_ttl(),
            limits: Limits::default(),
            webhooks: WebhookConfig::default(),
            witnesses: Vec::new(),
            witness_quorum: 0,
            witness_wait_secs: default_witness_wait(),
            log_format: LogFormat::default(),
            metrics: MetricsConfig::default(),
            tls_reload_check_secs: default_tls_reload_check(),
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

    pub fn bootstrap_token_file(&self) -> PathBuf {
        self.bootstrap_token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("bootstrap-token"))
    }

    pub fn key_dir(&self) -> PathBuf {
        self.key_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }

    /// The `[root]` table, or root key files in the default directory when there is none.
    pub fn root_config(&self) -> shred::RootConfig {
        self.root
            .clone()
            .unwrap_or(shred::RootConfig::File { dir: None })
    }

    /// Where a file root without `dir` keeps its root key files: `DATA.root`, a sibling of
    /// the data directory, so that a backup of the data directory does not take them along.
    pub fn default_root_dir(&self) -> anyhow::Result<PathBuf> {
        let data = std::path::absolute(&self.data_dir)?;
        let (Some(parent), Some(name)) = (data.parent(), data.file_name()) else {
            anyhow::bail!(
                "cannot place the root of trust beside the data directory {}: set [root] dir",
                data.display()
            );
        };
        let mut sibling = name.to_owned();
        sibling.push(".root");
        Ok(parent.join(sibling))
    }

    /// Where the service identity's files are (see [`ServerConfig::identity_dir`]).
    pub fn identity_paths(&self) -> crate::IdentityPaths {
        let mut paths = match &self.identity_dir {
            Some(dir) => crate::IdentityPaths::in_dir(&dir.join("tls"), &dir.join("keys")),
            None => crate::IdentityPaths::in_dir(&self.data_dir.join("tls"), &self.key_dir()),
        };
        if let Some(cert) = &self.tls_cert {
            paths.tls_cert = cert.clone();
        }
        if let Some(key) = &self.tls_key {
            paths.tls_key = key.clone();
        }
        paths
    }
}

/// How many connections the server holds, and how long it waits for each step of a request.
/// Durations are in seconds; every value must be at least 1.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// A connection that has not finished its TLS handshake this long after it was accepted is
    /// closed.
    pub tls_handshake_timeout_secs: u64,
    /// A request's headers must arrive within this long; an HTTP/1.1 connection waiting for
    /// its next request is closed after it too. A new connection must have sent one complete
    /// request head within the handshake timeout plus this, or it is closed (slowloris).
    pub header_read_timeout_secs: u64,
    /// A request body that sends nothing for this long fails (the handler sees an error).
    pub body_read_timeout_secs: u64,
    /// A connection with no request in flight for this long is closed; one whose client reads
    /// nothing of a response for this long is cut.
    pub idle_timeout_secs: u64,
    /// Open connections, all clients together. At the cap, a new connection displaces the
    /// oldest connection that has not yet sent a request; if there is none, it is closed.
    pub max_connections: usize,
    /// Open connections per source address (IPv6: per /64), displacing as above.
    pub max_connections_per_ip: usize,
    /// Requests in flight at once on one HTTP/2 connection; more are refused (REFUSED_STREAM).
    pub http2_max_concurrent_streams: u32,
    /// Largest request head: HTTP/1.1 request line and headers (at least 8192), HTTP/2 header
    /// list. Larger ones are refused with 431.
    pub max_header_bytes: u32,
    /// Largest JSON request body; larger ones are refused with 413. Upload file bytes are not
    /// JSON and are not bound by it.
    pub max_json_body_bytes: usize,
    /// Files one upload may list.
    pub max_upload_files: usize,
    /// Largest file an upload may declare. At most 78.125 GiB (83886080000 bytes), the
    /// largest file whose storage parts are all 8 MiB: the buffers an upload holds then do not
    /// grow with the size it declares.
    pub max_file_bytes: u64,
    /// Largest total of the sizes one upload declares.
    pub max_upload_bytes: u64,
    /// Upload sessions one user (in one role) may have open (begun, not committed, not
    /// expired); one more is refused with 409 `too_many_uploads`.
    pub max_open_uploads_per_user: u64,
    /// Memory for upload part buffers, all uploads together; a stream waits for room instead
    /// of allocating beyond it. One stream holds at most four 8 MiB parts. At least 16 MiB.
    pub max_upload_buffer_bytes: u64,
    /// Memory for download read-ahead, all downloads together; a download waits for room
    /// before it is opened instead of allocating beyond it. One stream holds at most 12 MiB
    /// (three reads of four 1 MiB segments). At least 16 MiB.
    pub max_download_buffer_bytes: u64,
    /// Refused authentications one source (IPv6: /64) is answered 401 in a minute; beyond,
    /// 429 with `Retry-After` until the minute ends. Authenticated requests are never counted
    /// nor slowed.
    pub refusals_per_minute_per_source: u32,
    /// Sources whose refused authentications are counted apart in a minute (each one's first
    /// refusal recorded in full, the rest in one aggregated audit entry). Refusals from further
    /// sources are counted together and answered 429. Bounds the audit entries refusals can
    /// cause: at most twice this, plus two, per minute and instance.
    pub refusal_sources_per_minute: usize,
    /// After SIGTERM or SIGINT the server accepts no new connection and lets transfers in flight
    /// finish for at most this long, then exits.
    pub shutdown_grace_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tls_handshake_timeout_secs: 10,
            header_read_timeout_secs: 15,
            body_read_timeout_secs: 60,
            idle_timeout_secs: 60,
            max_connections: 4096,
            max_connections_per_ip: 256,
            http2_max_concurrent_streams: 64,
            max_header_bytes: 64 * 1024,
            max_json_body_bytes: 4 << 20,
            shutdown_grace_secs: 60,
            max_upload_files: 10_000,
            max_file_bytes: blobstore::MAX_OBJECT_WITH_SMALLEST_PARTS,
            max_upload_bytes: 2 << 40,
            max_open_uploads_per_user: 16,
            max_upload_buffer_bytes: 512 << 20,
            max_download_buffer_bytes: 512 << 20,
            refusals_per_minute_per_source: 60,
            refusal_sources_per_minute: 256,
        }
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
    fn the_root_of_trust_defaults_to_files_beside_the_data_dir_and_parses_kms() {
        let config = ServerConfig::new(PathBuf::from("/srv/d"));
        assert!(matches!(
            config.root_config(),
            shred::RootConfig::File { dir: None }
        ));
        assert_eq!(
            config.default_root_dir().unwrap(),
            PathBuf::from("/srv/d.root")
        );
        assert!(
            ServerConfig::new(PathBuf::from("/"))
                .default_root_dir()
                .is_err()
        );
        let relative = ServerConfig::new(PathBuf::from("data"))
            .default_root_dir()
            .unwrap();
        assert!(
            relative.is_absolute() && relative.ends_with("data.root"),
            "{relative:?}"
        );
        let config: ServerConfig = toml::from_str(
            "data_dir = \"/d\"\n[root]\nkind = \"kms\"\nregion = \"eu-west-1\"\n\
             access_key_id = \"AKIAX\"\nsecret_access_key = \"kms-secret-value\"",
        )
        .unwrap();
        let root = config.root_config();
        assert!(matches!(&root, shred::RootConfig::Kms(k) if k.region == "eu-west-1"));
        assert!(!format!("{root:?}").contains("kms-secret-value"));
    }

    #[test]
    fn the_cluster_example_configuration_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/cluster/custody.toml");
        let config = ServerConfig::from_toml_file(&path).unwrap();
        assert_eq!(config.identity_dir, Some(PathBuf::from("/identity")));
        assert!(config.s3.is_some());
        assert!(matches!(
            config.root_config(),
            shred::RootConfig::File { dir: Some(d) } if d == Path::new("/var/lib/custody.root")
        ));
        let paths = config.identity_paths();
        assert_eq!(paths.log_key, PathBuf::from("/identity/keys/audit-log.key"));
        assert_eq!(paths.tls_cert, PathBuf::from("/identity/tls/cert.pem"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<ServerConfig>("data_dir = \"/x\"\nlisten_addr = \"1\"")
            .err()
            .unwrap();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }
}
