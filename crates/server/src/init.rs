//! Opening an installation, and creating the embedded default on first start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use blobstore::{BlobStore, FsBackend};
use rustls::ServerConfig as TlsConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use shred::KeyHierarchy;
use store::{NewToken, Store};
use types::{Role, UserName};

pub(crate) struct Prepared {
    pub store: Store,
    pub blobs: BlobStore,
    pub keys: KeyHierarchy,
    pub tls: Arc<TlsConfig>,
    pub policy: Arc<policy::PolicyEngine>,
    pub host_ca: HostCa,
    pub cert_path: PathBuf,
    pub fingerprint: String,
    pub bootstrap_token: Option<String>,
    /// Signs the audit log's checkpoints; in the key store, never in the database.
    pub log_key: crate::checkpointer::LogKey,
}

/// The host CA, loaded once: enrollment signs with it. No `Debug`: it holds a private key.
pub(crate) struct HostCa {
    pub cert_pem: String,
    pub key_pem: zeroize::Zeroizing<String>,
}

/// The policy set the server decides with: the built-in one, or `policy_dir` when configured.
/// Either way strictly validated; an invalid set stops the start with the validator's words.
fn load_policy(config: &crate::ServerConfig) -> anyhow::Result<policy::PolicyEngine> {
    match &config.policy_dir {
        Some(dir) => policy::PolicyEngine::load(dir).with_context(|| {
            format!(
                "the policies in {} failed strict validation; refusing to start",
                dir.display()
            )
        }),
        None => {
            policy::PolicyEngine::from_files(policy::EMBEDDED_SCHEMA, policy::EMBEDDED_POLICIES)
                .context("the built-in policies failed strict validation; refusing to start")
        }
    }
}

pub(crate) async fn prepare(config: &crate::ServerConfig) -> anyhow::Result<Prepared> {
    // Policies first: a bad policy set must stop the start before anything is created.
    let policy = Arc::new(load_policy(config)?);
    create_private_dir(&config.data_dir)?;
    if config.database_url.is_none() {
        create_private_dir(&config.data_dir.join("db"))?;
    }
    let root = config
        .root_config()
        .provider(&config.default_root_dir())
        .await
        .context("opening the root of trust ([root])")?;
    let keys = KeyHierarchy::open_or_init(&config.key_dir(), root)
        .await
        .with_context(|| format!("opening key store {}", config.key_dir().display()))?;
    let log_key = crate::checkpointer::LogKey::open_or_create(
        &config.key_dir(),
        config.audit_origin.as_deref(),
    )
    .context("opening the audit log key")?;
    let store = Store::connect(&config.database_url())
        .await
        .context("opening the metadata database")?;
    let backend: Arc<dyn blobstore::Backend> = match &config.s3 {
        Some(s3) => Arc::new(
            blobstore::S3Backend::connect(s3)
                .await
                .context("connecting to the S3 bucket")?,
        ),
        None => {
            let blob_dir = config.blob_dir();
            create_private_dir(&blob_dir)?;
            Arc::new(FsBackend::open(&blob_dir)?)
        }
    };
    let blobs = BlobStore::new(backend);

    let (cert_path, key_path) = config.tls_paths();
    if !cert_path.exists() && !key_path.exists() {
        create_self_signed(&cert_path, &key_path, &config.hostnames)?;
    }
    let host_ca = open_host_ca(config)?;
    let (tls, fingerprint) = load_tls(&cert_path, &key_path, &host_ca)?;

    let bootstrap_token = bootstrap_operator(&store).await?;
    Ok(Prepared {
        store,
        blobs,
        keys,
        tls,
        policy,
        host_ca,
        cert_path,
        fingerprint,
        bootstrap_token,
        log_key,
    })
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

fn create_self_signed(cert_path: &Path, key_path: &Path, names: &[String]) -> anyhow::Result<()> {
    let (cert_pem, key_pem) = crypto::tls::self_signed_server_cert(names)?;
    if let Some(dir) = cert_path.parent() {
        create_private_dir(dir)?;
    }
    write_file(key_path, key_pem.as_bytes(), 0o600)?;
    write_file(cert_path, cert_pem.as_bytes(), 0o644)?;
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

fn open_host_ca(config: &crate::ServerConfig) -> anyhow::Result<HostCa> {
    let (cert_path, key_path) = config.host_ca_paths();
    if !cert_path.exists() && !key_path.exists() {
        let (cert_pem, key_pem) = crypto::host_ca::new_host_ca("custody host CA")?;
        if let Some(dir) = cert_path.parent() {
            create_private_dir(dir)?;
        }
        write_file(&key_path, key_pem.as_bytes(), 0o600)?;
        write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
    }
    let cert_pem = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("reading the host CA {}", cert_path.display()))?;
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading the host CA key {}", key_path.display()))?,
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
) -> anyhow::Result<(Arc<TlsConfig>, String)> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_path.display()))?;
    let first = certs
        .first()
        .with_context(|| format!("{} holds no certificate", cert_path.display()))?;
    let fingerprint = crypto::tls::fingerprint_sha256(first);
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("reading the private key {}", key_path.display()))?;
    let mut tls = TlsConfig::builder_with_provider(crypto::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_verifier(host_ca)?)
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(tls), fingerprint))
}

/// On an installation without any token, makes the first operator token. It is returned once,
/// to be printed once; only its hash is stored.
async fn bootstrap_operator(store: &Store) -> anyhow::Result<Option<String>> {
    if store.token_count().await? > 0 {
        return Ok(None);
    }
    let id = crypto::token::random_id()?;
    let secret = crypto::token::TokenSecret::generate()?;
    let user = UserName::parse("bootstrap-operator")?;
    store
        .issue_token(
            &NewToken {
                id: &id,
                secret_hash: &secret.hash(),
                role: Role::Operator,
                vendor_id: None,
                user: &user,
                expires_at: None,
                created_by: "system",
            },
            &crypto::token::random_id()?,
            0,
            audit::Entry::new("system", "token.create", "service")
                .with_detail(format!("operator bootstrap token {id}")),
        )
        .await?;
    Ok(Some(format!("{id}.{}", secret.expose_secret())))
}
