//! `custody witness`: a C2SP tlog-witness for one custody audit log, run by a vendor or a third
//! party. The checks and formats are pure (`audit::witness`); this module serves them over
//! HTTP (bounded: a connection cap, one request per connection, header and exchange
//! timeouts) and keeps the state on disk.
//!
//! Routes (the submission and monitoring prefixes are both the root):
//!
//! * `POST /add-checkpoint`: the body is `old N`, a consistency proof, a blank line and the
//!   log's signed checkpoint. 200 with this witness's cosignature line; 400 malformed or an
//!   old size beyond the checkpoint's; 404 another log; 403 not signed by the log's key; 409
//!   with this witness's size (`text/x.tlog.size`) when the old size is not it (a rolled-back
//!   log, or a log that lost track); 422 when the proof does not show the checkpoint extends
//!   the one cosigned last (a fork), or a size-0 checkpoint without the empty root.
//! * `GET /<hex SHA-256 of the origin>/checkpoint`: the last checkpoint cosigned, with the log's
//!   signature and this witness's cosignature; 404 before the first.
//!
//! State (`--state DIR`): `witness.key` (its Ed25519 key and name, made on the first start, 0600)
//! and `witness.state` (the last checkpoint cosigned and the cosignature). Checking the old
//! size, writing the new state and answering happen under one lock, and the state is written
//! whole (temporary file, fsync, rename, fsync of the directory) before the cosignature is sent:
//! a crash never loses a size this witness vouched for, and two requests cannot interleave so
//! that a smaller size overwrites a larger one (the race C2SP tlog-witness describes).
//!
//! Plain HTTP: the protocol does not rely on the transport. A request counts only if the log's
//! key signed its checkpoint and its proof verifies; an answer counts only if the witness's
//! key signed it. Someone on the path can withhold or delay answers (which TLS would not
//! prevent either) but cannot forge, replay into another state, or roll the witness back.
//! Checkpoints are public data. Put a TLS proxy in front when the network requires it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use audit::checkpoint::{self, VerifierKey};
use audit::witness::{
    self, CosignerKey, MAX_REQUEST_BYTES, Refusal, SIZE_CONTENT_TYPE, WitnessState,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use crypto::sign::SigningKey;
use zeroize::Zeroizing;

use crate::checkpointer::{replace_file, write_new_file};

const KEY_FILE: &str = "witness.key";
const STATE_FILE: &str = "witness.state";
/// `witness.key`: this magic, a version byte, the name's length (u16 BE) and bytes, and the
/// PKCS#8 v2 document.
const KEY_MAGIC: &[u8] = b"custody-witness-key";
const KEY_VERSION: u8 = 1;

/// What `custody witness` is started with.
pub struct WitnessOptions {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// The log's verifier key; its name is the log's origin.
    pub log_key: VerifierKey,
    /// This witness's name (used when its key is made; must match the key's afterwards).
    /// Default: `custody-witness/<random id>`.
    pub name: Option<String>,
}

/// What start-up reports, printed by the CLI.
pub struct WitnessStarted {
    pub listen: SocketAddr,
    /// The verifier key to configure at the log and give to auditors (type 0x04 vkey).
    pub verifier_key: String,
    /// The size cosigned last (0: none).
    pub cosigned_size: u64,
}

/// The witness's key. No `Debug`: it holds a private key.
struct WitnessKey {
    name: String,
    key: SigningKey,
}

impl WitnessKey {
    fn load_or_create(dir: &Path, name: Option<&str>) -> anyhow::Result<WitnessKey> {
        let path = dir.join(KEY_FILE);
        if !path.exists() {
            let name = match name {
                Some(n) => n.to_owned(),
                None => format!("custody-witness/{}", crypto::token::random_id()?),
            };
            if !checkpoint::valid_key_name(&name) {
                bail!("invalid witness name {name:?}: no spaces, '+' or control characters");
            }
            let (key, pkcs8) = SigningKey::generate()?;
            let name_len = u16::try_from(name.len()).context("witness name too long")?;
            let mut bytes = Zeroizing::new(Vec::with_capacity(64 + name.len() + pkcs8.len()));
            bytes.extend_from_slice(KEY_MAGIC);
            bytes.push(KEY_VERSION);
            bytes.extend_from_slice(&name_len.to_be_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&pkcs8);
            write_new_file(&path, &bytes)?;
            tracing::info!(name = %name, "created the witness key");
            return Ok(WitnessKey { name, key });
        }
        let bytes = Zeroizing::new(
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        );
        let bad = || format!("{} is not a witness key file (damaged?)", path.display());
        let (&version, rest) = bytes
            .strip_prefix(KEY_MAGIC)
            .and_then(|r| r.split_first())
            .with_context(bad)?;
        if version != KEY_VERSION {
            bail!(
                "{}: unsupported witness key version {version}",
                path.display()
            );
        }
        let (len, rest) = rest.split_at_checked(2).with_context(bad)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (stored, pkcs8) = rest.split_at_checked(len).with_context(bad)?;
        let stored = std::str::from_utf8(stored)
            .ok()
            .with_context(bad)?
            .to_owned();
        if !checkpoint::valid_key_name(&stored) {
            bail!(bad());
        }
        if let Some(name) = name
            && name != stored
        {
            bail!(
                "the witness key in {} is named {stored:?}, not {name:?}: a witness's name is fixed with its key",
                path.display()
            );
        }
        let key = SigningKey::from_pkcs8(pkcs8).with_context(bad)?;
        Ok(WitnessKey { name: stored, key })
    }

    fn verifier(&self) -> anyhow::Result<CosignerKey> {
        Ok(CosignerKey::new(&self.name, self.key.public_key())?)
    }
}

struct Witness {
    key: WitnessKey,
    log: VerifierKey,
    state_path: PathBuf,
    /// The last checkpoint cosigned. Held across check, persist and cosign.
    state: tokio::sync::Mutex<Option<WitnessState>>,
}

fn load_state(path: &Path, log: &VerifierKey) -> anyhow::Result<Option<WitnessState>> {
    match std::fs::read_to_string(path) {
        Ok(text) => WitnessState::decode(&text, log).map(Some).with_context(|| {
            format!(
                "{}: refusing to start: the state does not belong to log key {log}",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Runs the witness until SIGTERM or SIGINT. `on_started` is called once it listens.
pub async fn run_witness(
    options: WitnessOptions,
    on_started: impl FnOnce(&WitnessStarted),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.state_dir)
        .with_context(|| format!("creating {}", options.state_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&options.state_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("protecting {}", options.state_dir.display()))?;
    }
    let key = WitnessKey::load_or_create(&options.state_dir, options.name.as_deref())?;
    let state_path = options.state_dir.join(STATE_FILE);
    let state = load_state(&state_path, &options.log_key)?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let started = WitnessStarted {
        listen: listener.local_addr()?,
        verifier_key: key.verifier()?.to_string(),
        cosigned_size: state.as_ref().map_or(0, |s| s.checkpoint.size),
    };
    let witness = Arc::new(Witness {
        key,
        log: options.log_key,
        state_path,
        state: tokio::sync::Mutex::new(state),
    });
    let router = Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/{origin_hash}/checkpoint", get(latest))
        .with_state(witness);
    on_started(&started);
    serve_bounded(listener, router, crate::tls::termination_signal()).await;
    Ok(())
}

/// Connections the witness holds at once; more are closed as they arrive.
const MAX_CONNECTIONS: usize = 256;
/// A request head must arrive within this, and a whole exchange within [`EXCHANGE_TIMEOUT`].
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// At shutdown, exchanges in flight get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` over plain HTTP/1.1, one request per connection, with the bounds above: a
/// witness faces whoever reaches its port, and a client that opens connections and sends
/// nothing (or trickles a request) must not wear it out.
async fn serve_bounded(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "connection refused: at the connection cap");
                    continue;
                };
                let router = router.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let router = router.clone();
                        async move {
                            match tower::ServiceExt::oneshot(router, request.map(Body::new)).await {
                                Ok(response) => Ok::<_, std::convert::Infallible>(response),
                                Err(never) => match never {},
                            }
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .keep_alive(false)
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                    if tokio::time::timeout(EXCHANGE_TIMEOUT, conn).await.is_err() {
                        tracing::debug!(%peer, "exchange cut: it took too long");
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn refused(refusal: &Refusal) -> Response {
    let status = crate::error::witness_refusal_status(refusal);
    match refusal {
        Refusal::Conflict { size } => text(status, SIZE_CONTENT_TYPE, format!("{size}\n")),
        other => text(status, "text/plain; charset=utf-8", format!("{other}\n")),
    }
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: Body) -> Response {
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return refused(&Refusal::BadRequest(
                "the request body is too large or was cut".into(),
            ));
        }
    };
    let request = match witness::parse_add_checkpoint(&bytes) {
        Ok(r) => r,
        Err(refusal) => return refused(&refusal),
    };
    let mut state = witness.state.lock().await;
    let last = state.as_ref().map(|s| &s.checkpoint);
    let checkpoint = match witness::add_checkpoint(&witness.log, last, &request) {
        Ok(cp) => cp,
        Err(refusal) => {
            // A signed checkpoint that fails the checks may be evidence of a misbehaving log.
            match &refusal {
                Refusal::Conflict { .. } | Refusal::Inconsistent(_) => tracing::warn!(
                    old_size = request.old_size,
                    kept_size = last.map_or(0, |cp| cp.size),
                    reason = %refusal,
                    "refused a checkpoint of the log"
                ),
                _ => tracing::info!(reason = %refusal, "refused a request"),
            }
            return refused(&refusal);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let line = match witness::cosign(&checkpoint, &witness.key.name, &witness.key.key, now) {
        Ok(line) => line,
        Err(e) => {
            tracing::error!(error = %e, "cannot cosign");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "cannot cosign\n".into(),
            );
        }
    };
    // The log's note alone is kept (other signatures on it are not this witness's business).
    let note = match strip_to_log_signature(&request.note, &witness.log) {
        Some(note) => note,
        None => request.note.clone(),
    };
    let new_state = WitnessState {
        checkpoint: checkpoint.clone(),
        note,
        cosignature: line.clone(),
    };
    // Persisted before the cosignature leaves: a crash after answering never forgets it.
    if let Err(e) = replace_file(&witness.state_path, new_state.encode().as_bytes()) {
        tracing::error!(error = %format!("{e:#}"), "cannot persist the witness state; not cosigning");
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "cannot persist the witness state\n".into(),
        );
    }
    let grew = last.is_none_or(|cp| cp.size != checkpoint.size);
    *state = Some(new_state);
    drop(state);
    if grew {
        tracing::info!(size = checkpoint.size, "cosigned a checkpoint");
    }
    text(StatusCode::OK, "text/plain; charset=utf-8", line)
}

/// The note with only the log's signature line.
fn strip_to_log_signature(note: &str, log: &VerifierKey) -> Option<String> {
    let at = note.rfind("\n\n")?;
    let prefix = format!("\u{2014} {} ", log.name);
    let lines: Vec<&str> = note[at + 2..]
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    if lines.is_empty() {
        return None;
    }
    let mut out = note[..at + 2].to_owned();
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    // Only keep the stripped form if it still opens.
    checkpoint::open(&out, &log.name, &log.key).ok()?;
    Some(out)
}

/// `GET /<origin hash>/checkpoint`: the last checkpoint cosigned, with both signatures.
async fn latest(
    State(witness): State<Arc<Witness>>,
    UrlPath(origin_hash): UrlPath<String>,
) -> Response {
    let ours = hex::encode(crypto::hash::sha256(witness.log.name.as_bytes()));
    let state = witness.state.lock().await;
    match state.as_ref() {
        Some(s) if origin_hash == ours => text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            witness::with_cosignatures(&s.note, [s.cosignature.as_str()]),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "no checkpoint cosigned for that log\n".into(),
        ),
    }
}
