//! Opening an installation, and creating the embedded default on first start.
//!
//! Order matters: the root of trust's place is checked before anything is created; the
//! database comes before any key (it says whether this is a first start); the identity is
//! compared with the fingerprints the database pinned; only then is the key hierarchy opened.
//! Everything a first start creates is created under the database's initialisation lock, so
//! instances starting together on an empty database make one identity check, one first key
//! epoch and one bootstrap token.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use blobstore::{BlobStore, FsBackend};
use certificate::RootPlacement;
use shred::{EpochLedger, KeyHierarchy, RootProvider};
use store::{NewToken, Store};
use types::{Role, UserName};

use crate::checkpointer::{Anchor, Checkpointer};
use crate::service_identity::{Missing, ServiceIdentity};

pub(crate) struct Prepared {
    pub store: Store,
    pub blobs: BlobStore,
    pub keys: KeyHierarchy,
    pub tls: Arc<rustls::ServerConfig>,
    pub fingerprint: String,
    /// The certificate in use; `Some` when it is the operator's and may be reloaded.
    pub reloadable_cert: Option<Arc<crate::cert_reload::ReloadableCert>>,
    pub host_ca: crate::service_identity::HostCa,
    pub service_key: crate::service_key::ServiceKey,
    pub policy: Arc<policy::PolicyEngine>,
    pub checkpointer: Checkpointer,
    pub cert_path: PathBuf,
    /// Where the bootstrap token was written, on the first start, and when it expires.
    pub bootstrap_token: Option<(PathBuf, i64)>,
    /// Where the root of trust is, for certificates.
    pub placement: RootPlacement,
    /// Lines for the operator, printed at start (where the root of trust is, warnings).
    pub notices: Vec<String>,
    /// Held for the life of the process: one server per SQLite database.
    pub instance_lock: Option<std::fs::File>,
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
    let mut notices = Vec::new();
    let url = config.database_url();
    let sqlite = sqlite_file(&url);
    if config.database_url.is_none() {
        create_private_dir(&config.data_dir.join("db"))?;
    }
    let root = open_root(config, sqlite.as_deref(), &mut notices).await?;

    let instance_lock = match &sqlite {
        Some(file) => Some(lock_single_instance(file)?),
        None => None,
    };
    let store = Store::connect(&url)
        .await
        .context("opening the metadata database")?;
    if instance_lock.is_some() {
        // The lock file says no other process uses this database: the leases an earlier
        // process held are free now, not in ten seconds.
        store.expire_all_leases().await?;
    }
    let initialising = store
        .initialisation_section()
        .await
        .context("waiting for other instances to finish starting")?;

    let in_use = store.is_in_use().await?;
    let missing = match (&config.identity_dir, in_use) {
        (Some(_), _) => Missing::Refuse(
            "An identity directory is never filled in by the server: make the service identity \
             once with `custody init --out DIR` and give every instance that DIR as identity_dir.",
        ),
        (None, true) => Missing::Refuse(
            "This database is already in use by an installation: refusing to make a new \
             identity for it. Restore the missing files, or give this instance the \
             installation's identity (identity_dir).",
        ),
        (None, false) => Missing::Create,
    };
    let paths = config.identity_paths();
    let identity = ServiceIdentity::open(
        &paths,
        config.tls_cert.is_none(),
        &config.hostnames,
        config.audit_origin.as_deref(),
        missing,
    )
    .context("opening the service identity")?;
    let mismatches = store.pin_identity(&identity.fingerprints()?).await?;
    if !mismatches.is_empty() {
        let lines: Vec<String> = mismatches
            .iter()
            .map(|m| format!("  - {}", m.describe()))
            .collect();
        bail!(
            "this instance's service identity differs from the one the database pinned at its \
             first start; refusing to start:\n{}\nEvery instance must use the same identity \
             (custody init --out DIR, then identity_dir = DIR on each).",
            lines.join("\n")
        );
    }

    let ServiceIdentity {
        tls,
        tls_fingerprint,
        tls_cert,
        tls_is_custodys,
        host_ca,
        log_key,
        service_key,
        ..
    } = identity;

    let ledger: Arc<dyn EpochLedger> = Arc::new(store.clone());
    if store.key_ledger_is_empty().await? {
        shred::import_key_store(&config.key_dir(), &ledger, &root.provider)
            .await
            .with_context(|| {
                format!(
                    "moving the key store {} into the database",
                    config.key_dir().display()
                )
            })?;
    }
    // A new hierarchy only where no model key exists that a lost one could have wrapped.
    let new_hierarchy = store.key_ledger_is_empty().await? && store.models_with_keys().await? == 0;
    let keys = KeyHierarchy::open(ledger, root.provider.clone(), new_hierarchy)
        .await
        .context("opening the key hierarchy")?;
    let bootstrap_token = bootstrap_operator(&store, config).await?;
    drop(initialising);

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
    let blobs = BlobStore::new(backend.clone());
    let anchor = match &root.dir {
        Some(dir) => Anchor::Dir(dir.clone()),
        None => Anchor::Blob(backend),
    };
    notices.push(format!(
        "copy of the last audit checkpoint: {}",
        anchor.describe()
    ));
    let checkpointer = Checkpointer::open(
        log_key,
        anchor,
        Some(&config.key_dir().join(crate::checkpointer::LAST_FILE)),
        std::time::Duration::from_secs(config.checkpoint_interval_secs.max(1)),
    )
    .await
    .context("opening the audit checkpointer")?;
    Ok(Prepared {
        store,
        blobs,
        keys,
        tls,
        fingerprint: tls_fingerprint,
        reloadable_cert: (!tls_is_custodys).then_some(tls_cert),
        host_ca,
        service_key,
        policy,
        checkpointer,
        cert_path: paths.tls_cert,
        bootstrap_token,
        placement: root.placement,
        notices,
        instance_lock,
    })
}

/// The root of trust and where it is.
struct Root {
    provider: Arc<dyn RootProvider>,
    /// The root key files' directory (file roots).
    dir: Option<PathBuf>,
    placement: RootPlacement,
}

/// `path` made absolute, through symbolic links where it exists.
fn resolved(path: &Path) -> anyhow::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(std::path::absolute(path)?),
        Err(e) => Err(e).with_context(|| format!("resolving {}", path.display())),
    }
}

/// Opens the root of trust, refusing root key files where a backup of the data would take
/// them along (unless the configuration accepts that, loudly).
async fn open_root(
    config: &crate::ServerConfig,
    sqlite: Option<&Path>,
    notices: &mut Vec<String>,
) -> anyhow::Result<Root> {
    let root_config = config.root_config();
    let dir = match &root_config {
        shred::RootConfig::Kms(_) | shred::RootConfig::Pkcs11(_) => {
            let provider = root_config
                .provider(&config.data_dir)
                .await
                .context("opening the root of trust ([root])")?;
            notices.push(format!("root of trust: {}", provider.describe()));
            let placement = match root_config {
                shred::RootConfig::Pkcs11(_) => RootPlacement::Pkcs11 {
                    token: provider.describe(),
                },
                _ => RootPlacement::Kms,
            };
            return Ok(Root {
                provider,
                dir: None,
                placement,
            });
        }
        shred::RootConfig::File { dir: Some(dir) } => dir.clone(),
        shred::RootConfig::File { dir: None } => {
            // Before this version the default was DATA/root: a backup of the data directory
            // took the roots along. Such an installation must move them first.
            let old = config.data_dir.join("root");
            if has_root_files(&old)? {
                bail!(
                    "the root key files are in {}, inside the data directory, where a backup of \
                     the data directory takes them along and a restored backup undoes every \
                     deletion since. Move them out, beside the data directory: `mv {} {}`, and \
                     keep that directory out of every backup (or set [root] dir)",
                    old.display(),
                    old.display(),
                    config.default_root_dir()?.display()
                );
            }
            config.default_root_dir()?
        }
    };
    create_private_dir(&dir)?;
    let root_dir = resolved(&dir)?;
    let data_dir = resolved(&config.data_dir)?;
    let mut guarded = vec![
        ("the data directory", data_dir.clone()),
        ("the key store", resolved(&config.key_dir())?),
    ];
    if let Some(identity) = &config.identity_dir {
        guarded.push(("the identity directory", resolved(identity)?));
    }
    if let Some(db) = sqlite.and_then(Path::parent) {
        guarded.push(("the database's directory", resolved(db)?));
    }
    let inside = guarded
        .into_iter()
        .find(|(_, guarded)| root_dir.starts_with(guarded));
    let placement = match inside {
        None => RootPlacement::FilesOutside {
            root_dir: root_dir.display().to_string(),
            data_dir: data_dir.display().to_string(),
        },
        Some((what, path)) => {
            if !config.allow_root_in_data_dir {
                bail!(
                    "the root of trust {} is inside {what} ({}): a backup of it would hold the \
                     root keys, and restoring one would undo every deletion made since. Keep \
                     the root directory elsewhere (the default is {}, beside the data \
                     directory), or set allow_root_in_data_dir = true to accept that risk",
                    root_dir.display(),
                    path.display(),
                    config.default_root_dir()?.display()
                );
            }
            let warning = format!(
                "WARNING: the root of trust {} is inside {what} ({}), allowed by \
                 allow_root_in_data_dir: a backup of it can undo deletions",
                root_dir.display(),
                path.display()
            );
            tracing::warn!("{warning}");
            notices.push(warning);
            RootPlacement::FilesInside {
                root_dir: root_dir.display().to_string(),
                inside: format!("{what} {}", path.display()),
            }
        }
    };
    let provider: Arc<dyn RootProvider> =
        Arc::new(shred::FileRoot::open(&root_dir).context("opening the root of trust ([root])")?);
    notices.push(format!(
        "root of trust: root key files in {} (keep this directory out of every backup)",
        root_dir.display()
    ));
    Ok(Root {
        provider,
        dir: Some(root_dir),
        placement,
    })
}

fn has_root_files(dir: &Path) -> anyhow::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("root-") && name.ends_with(".key") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The file of a `sqlite:` URL (`None` for other databases and in-memory ones).
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

/// SQLite serves one instance: an exclusive lock on `FILE.lock`, held while the process runs
/// (the operating system releases it when the process dies, even by kill -9).
fn lock_single_instance(db: &Path) -> anyhow::Result<std::fs::File> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another custody server is already running on the SQLite database {} (locked: {}). \
             SQLite serves one instance only; run several instances on PostgreSQL",
            db.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

/// On an installation without any token, makes the operator bootstrap token and writes it to
/// its file (created anew, mode 0600; never printed or logged); returns the file's path and the
/// token's expiry. Only its hash is stored. It is single use: it may only create a named
/// operator token, which revokes it (see `auth`), and it expires after
/// `bootstrap_token_ttl_secs`. (Called under the initialisation lock: one bootstrap token,
/// whichever instance starts first.)
async fn bootstrap_operator(
    store: &Store,
    config: &crate::ServerConfig,
) -> anyhow::Result<Option<(PathBuf, i64)>> {
    if store.token_count().await? > 0 {
        return Ok(None);
    }
    anyhow::ensure!(
        config.bootstrap_token_ttl_secs > 0,
        "bootstrap_token_ttl_secs must be positive"
    );
    let path = config.bootstrap_token_file();
    let (_, expires_at) = issue_bootstrap_token(store, config, &path, |id, expires_at| {
        audit::Entry::new("system", "token.create", "service").with_detail(format!(
            "operator bootstrap token {id}, single use, expires at {expires_at}"
        ))
    })
    .await?;
    Ok(Some((path, expires_at)))
}

/// What `custody recover-operator` made: where the token is, its id, when it expires.
#[derive(Debug)]
pub struct Recovered {
    pub path: PathBuf,
    pub token_id: String,
    pub expires_at: i64,
}

/// Recovery when no operator can act (every operator token lost, expired or revoked): mints a
/// new single-use operator bootstrap token, exactly like a first start's (it only creates a
/// named operator token, and expires after `bootstrap_token_ttl_secs`), writes it to `out`
/// (default: the bootstrap token file) as a new file of mode 0600, and records who made it
/// (`local_user`) in the audit log, in the token's transaction. Run on the server machine:
/// whoever can write the database controls the service anyway; this is the audited way.
/// Refuses a database that holds no installation (a wrong path must not create one) and a
/// file that is already there.
pub async fn recover_operator(
    config: &crate::ServerConfig,
    out: Option<PathBuf>,
    local_user: &str,
) -> anyhow::Result<Recovered> {
    let url = config.database_url();
    if let Some(file) = sqlite_file(&url)
        && !file.exists()
    {
        bail!(
            "no database at {}: give the installation's --data-dir or --config",
            file.display()
        );
    }
    let store = Store::connect(&url)
        .await
        .context("opening the metadata database")?;
    if !store.is_in_use().await? {
        bail!(
            "this database holds no installation yet: start the server; its first start writes \
             the bootstrap token"
        );
    }
    anyhow::ensure!(
        config.bootstrap_token_ttl_secs > 0,
        "bootstrap_token_ttl_secs must be positive"
    );
    let path = out.unwrap_or_else(|| config.bootstrap_token_file());
    if std::fs::symlink_metadata(&path).is_ok() {
        bail!(
            "{} is already there: use the token in it, or remove it and run this again",
            path.display()
        );
    }
    let (id, expires_at) = issue_bootstrap_token(&store, config, &path, |id, expires_at| {
        audit::Entry::new(format!("local:{local_user}"), "operator.recover", "service").with_detail(
            format!(
                "operator bootstrap token {id} made on the server machine by local user \
                 {local_user} (custody recover-operator), single use, written to {}, \
                 expires at {}",
                path.display(),
                crate::approvals::rfc3339(expires_at)
            ),
        )
    })
    .await?;
    Ok(Recovered {
        path,
        token_id: id,
        expires_at,
    })
}

/// Writes a new single-use operator bootstrap token to `path` (0600) and stores its hash with
/// `entry(id, expires_at)`; returns its id and expiry. A token that was never stored is not
/// left where it looks usable.
async fn issue_bootstrap_token(
    store: &Store,
    config: &crate::ServerConfig,
    path: &Path,
    entry: impl FnOnce(&str, i64) -> audit::Entry,
) -> anyhow::Result<(String, i64)> {
    let id = crypto::token::random_id()?;
    let secret = crypto::token::TokenSecret::generate()?;
    write_secret_file(path, &format!("{id}.{}\n", secret.expose_secret()))?;
    let expires_at = store
        .clock()
        .now()
        .saturating_add(config.bootstrap_token_ttl_secs);
    let user = UserName::parse("bootstrap-operator")?;
    let issued = store
        .issue_token(
            &NewToken {
                id: &id,
                secret_hash: &secret.hash(),
                role: Role::Operator,
                vendor_id: None,
                user: &user,
                expires_at: Some(expires_at),
                created_by: "system",
                bootstrap: true,
                consumes: None,
            },
            &crypto::token::random_id()?,
            0,
            entry(&id, expires_at),
        )
        .await;
    if let Err(e) = issued {
        let _ = std::fs::remove_file(path);
        return Err(e.into());
    }
    Ok((id, expires_at))
}

/// Writes `text` to a new file at `path` that only its owner can read: created exclusively
/// (`O_EXCL`: never through a planted link, never over another file) with mode 0600, and
/// synced. A file already there is left over from a first start that did not finish (the
/// database holds no token): it is removed first (a link itself, not what it points to).
fn write_secret_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        tracing::warn!(path = %path.display(), "removing a bootstrap token file from an unfinished first start");
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite:///d/db/custody.sqlite?mode=rwc"),
            Some(PathBuf::from("/d/db/custody.sqlite"))
        );
        assert_eq!(sqlite_file("sqlite:x.db"), Some(PathBuf::from("x.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }

    #[test]
    fn a_second_lock_on_one_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("custody.sqlite");
        let first = lock_single_instance(&db).unwrap();
        let err = lock_single_instance(&db).err().unwrap();
        assert!(err.to_string().contains("already running"), "{err}");
        drop(first);
        lock_single_instance(&db).unwrap();
    }
}
