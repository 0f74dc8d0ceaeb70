//! The log's side of witnessing: submits signed checkpoints to the configured witnesses
//! (C2SP tlog-witness `add-checkpoint`) and keeps their cosignatures (`store::witnesses`).
//!
//! For each witness the database tracks the size it last cosigned; a submission carries that
//! as the old size, with the consistency proof from it. A 409 names the witness's own size:
//! when the log can prove consistency from there, it retries once from that size (the
//! witness cosigned a checkpoint the database forgot, e.g. after a crash); when that size is
//! beyond the log, or the retry is refused with 422, the log was rolled back or forked (a
//! database restored from an older copy) and the reason is logged at error level, kept as the
//! witness's last error and shown by `GET /v1/audit/checkpoint`. A witness that refuses or is
//! down never blocks signing: the next round tries again.

use std::time::Duration;

use anyhow::{Context, bail};
use audit::checkpoint::Checkpoint;
use audit::witness::{self, AddCheckpoint, CosignerKey, Quorum};
use reqwest::StatusCode;
use store::Store;

use crate::config::ServerConfig;

/// One request to one witness may take this long.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest witness answer read.
const MAX_ANSWER_BYTES: usize = 16 << 10;

struct Configured {
    /// The submission prefix, without a trailing `/`.
    url: String,
    key: CosignerKey,
    /// The verifier key's text: the witness's identity in the database.
    id: String,
}

/// The configured witnesses and the client that reaches them. No `Debug` needed.
pub(crate) struct Witnesses {
    list: Vec<Configured>,
    pub quorum: usize,
    pub wait: Duration,
    http: reqwest::Client,
    /// One round at a time in this process (the checkpointer's and a certificate's).
    round: tokio::sync::Mutex<()>,
}

/// A witness's state as `GET /v1/audit/checkpoint` shows it.
pub(crate) struct WitnessView {
    pub name: String,
    pub key: String,
    pub url: String,
    pub cosigned_size: u64,
    pub last_error: Option<String>,
}

impl Witnesses {
    pub(crate) fn from_config(config: &ServerConfig) -> anyhow::Result<Witnesses> {
        let mut list: Vec<Configured> = Vec::new();
        for (i, w) in config.witnesses.iter().enumerate() {
            let key = CosignerKey::parse(w.key.trim())
                .with_context(|| format!("[[witnesses]] number {}: key", i + 1))?;
            let url = w.url.trim_end_matches('/').to_owned();
            if !url.starts_with("http://") {
                bail!(
                    "[[witnesses]] {}: url must be http://host:port (witnessing needs no TLS: \
                     requests and answers are signed; see docs/audit.md)",
                    key.name
                );
            }
            if list
                .iter()
                .any(|c| c.key.name == key.name || c.key.key == key.key)
            {
                bail!(
                    "[[witnesses]] {}: configured twice (same name or key)",
                    key.name
                );
            }
            list.push(Configured {
                url,
                id: key.to_string(),
                key,
            });
        }
        if config.witness_quorum > list.len() {
            bail!(
                "witness_quorum is {} but only {} witnesses are configured",
                config.witness_quorum,
                list.len()
            );
        }
        // Plain HTTP only: the TLS configuration is never used, but reqwest needs one.
        let tls = rustls::ClientConfig::builder_with_provider(crypto::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(SUBMIT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the witness client")?;
        Ok(Witnesses {
            list,
            quorum: config.witness_quorum,
            wait: Duration::from_secs(config.witness_wait_secs),
            http,
            round: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn keys(&self) -> Vec<CosignerKey> {
        self.list.iter().map(|w| w.key.clone()).collect()
    }

    /// The note with every cosignature kept for its size appended.
    pub(crate) async fn cosigned(store: &Store, size: u64, note: &str) -> anyhow::Result<String> {
        let lines = store.cosignatures(size).await?;
        Ok(witness::with_cosignatures(
            note,
            lines.iter().map(|(_, line)| line.as_str()),
        ))
    }

    /// Each witness as the database knows it.
    pub(crate) async fn view(&self, store: &Store) -> anyhow::Result<Vec<WitnessView>> {
        let mut out = Vec::with_capacity(self.list.len());
        for w in &self.list {
            let progress = store.witness_progress(&w.id).await?;
            out.push(WitnessView {
                name: w.key.name.clone(),
                key: w.id.clone(),
                url: w.url.clone(),
                cosigned_size: progress.as_ref().map_or(0, |p| p.cosigned_size),
                last_error: progress.and_then(|p| p.last_error),
            });
        }
        Ok(out)
    }

    /// Submits the log's checkpoint `checkpoint` (signed `note`) to every witness that has not
    /// cosigned it yet, keeps what they answer, and returns the note with every cosignature
    /// kept and the quorum it makes.
    pub(crate) async fn round(
        &self,
        store: &Store,
        checkpoint: &Checkpoint,
        note: &str,
    ) -> anyhow::Result<(String, Quorum)> {
        let _one = self.round.lock().await;
        let kept = store.cosignatures(checkpoint.size).await?;
        let pending: Vec<&Configured> = self
            .list
            .iter()
            .filter(|w| !kept.iter().any(|(id, _)| *id == w.id))
            .collect();
        let results = futures::future::join_all(
            pending
                .iter()
                .map(|w| self.submit(store, w, checkpoint, note)),
        )
        .await;
        for (w, result) in pending.iter().zip(results) {
            match result {
                Ok(line) => {
                    store
                        .save_cosignature(checkpoint.size, &w.id, &line)
                        .await?;
                    tracing::info!(witness = %w.key.name, size = checkpoint.size, "witness cosigned");
                }
                Err(why) => {
                    let why = format!("{why:#}");
                    tracing::error!(
                        witness = %w.key.name,
                        size = checkpoint.size,
                        reason = %why,
                        "WITNESS DID NOT COSIGN the audit checkpoint"
                    );
                    store.set_witness_error(&w.id, &why).await?;
                }
            }
        }
        let cosigned = Self::cosigned(store, checkpoint.size, note).await?;
        let quorum = witness::check_quorum(&cosigned, &self.keys(), self.quorum)?;
        Ok((cosigned, quorum))
    }

    /// One `add-checkpoint` to one witness: its cosignature line, verified, or why not.
    async fn submit(
        &self,
        store: &Store,
        w: &Configured,
        checkpoint: &Checkpoint,
        note: &str,
    ) -> anyhow::Result<String> {
        let size = checkpoint.size;
        let mut old = store
            .witness_progress(&w.id)
            .await?
            .map_or(0, |p| p.cosigned_size);
        let mut retried = false;
        loop {
            if old > size {
                bail!(
                    "the database says witness {} cosigned size {old}, but the log has only {size} \
                     entries: the log was rolled back (a database restored from an older copy?)",
                    w.key.name
                );
            }
            let proof = store.audit_consistency_proof(old, size).await?;
            let body = AddCheckpoint {
                old_size: old,
                proof,
                note: note.to_owned(),
            }
            .encode();
            let url = format!("{}/add-checkpoint", w.url);
            let response = self
                .http
                .post(&url)
                .body(body)
                .send()
                .await
                .with_context(|| format!("witness {} at {url} is unreachable", w.key.name))?;
            let status = response.status();
            let answer = read_limited(response).await?;
            match status {
                StatusCode::OK => return cosignature_from(w, note, &answer),
                StatusCode::CONFLICT => {
                    let theirs = answer
                        .strip_suffix('\n')
                        .and_then(audit::checkpoint::parse_canonical_decimal)
                        .with_context(|| {
                            format!("witness {} answered 409 without its size", w.key.name)
                        })?;
                    if theirs > size {
                        bail!(
                            "witness {} refused (409): it cosigned a checkpoint of size {theirs}, \
                             but the log has only {size} entries: the log was rolled back \
                             (a database restored from an older copy?)",
                            w.key.name
                        );
                    }
                    if retried || theirs == old {
                        bail!(
                            "witness {} refused (409): it last cosigned size {theirs}",
                            w.key.name
                        );
                    }
                    // The witness saw a size this database does not remember: prove from there.
                    tracing::warn!(
                        witness = %w.key.name,
                        ours = old,
                        theirs,
                        "the witness cosigned another size than the database remembers; retrying from its size"
                    );
                    old = theirs;
                    retried = true;
                }
                StatusCode::UNPROCESSABLE_ENTITY => bail!(
                    "witness {} refused (422): the log of {size} entries is not consistent with the \
                     checkpoint of size {old} it cosigned: the log's history was rewritten or forked \
                     (a database restored from an older copy?): {}",
                    w.key.name,
                    answer.trim()
                ),
                other => bail!(
                    "witness {} refused ({}): {}",
                    w.key.name,
                    other.as_u16(),
                    answer.trim()
                ),
            }
        }
    }
}

async fn read_limited(response: reqwest::Response) -> anyhow::Result<String> {
    use futures::StreamExt;
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("reading the witness's answer")?;
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            bail!("the witness's answer is too large");
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).context("the witness's answer is not text")
}

/// The answer's line that is `w`'s valid cosignature on `note`.
fn cosignature_from(w: &Configured, note: &str, answer: &str) -> anyhow::Result<String> {
    let lines = witness::parse_cosignature_lines(answer)
        .with_context(|| format!("witness {} answered no signature lines", w.key.name))?;
    for line in lines {
        let cosigned = witness::with_cosignatures(note, [line.as_str()]);
        if witness::check_quorum(&cosigned, std::slice::from_ref(&w.key), 1)?.met() {
            return Ok(line);
        }
    }
    bail!(
        "witness {} answered, but with no valid cosignature by its configured key",
        w.key.name
    )
}
