//! `custody audit …`: the audit log for auditors.
//!
//! `key`, `checkpoint`, `inclusion`, `consistency` and `entries` ask the server. `export`
//! writes a bundle directory (`audit::bundle` specifies it): the entries since the start (or
//! since the auditor's checkpoint), their vendor tags, the signed checkpoints in that range,
//! the tree edge to continue from, the stored leaf hashes, and a manifest; with `--recipient`
//! every file is age-encrypted (`<path>.age`). `export --vendor V` (a vendor's admins and
//! auditors) writes that vendor's export: its entries in full, every other one by hash, and
//! `vendor.json` with the vendor's tag key, so `verify` also proves none of its entries was
//! left out. `verify` works offline, with no server and no token: it
//! rebuilds every leaf from the raw bytes and checks every signature, and exits 0 when the
//! bundle is intact, 1 when it was tampered with (naming the first bad entry or checkpoint),
//! 2 when the input cannot be verified.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use audit::bundle::{self, BundleFiles, Parts, Problem, Report};
use audit::checkpoint::{Checkpoint, VerifierKey};
use audit::merkle::Hash;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Serialize;
use wire::audit::{
    AuditKey, CheckpointList, ConsistencyProof, ConsistencyQuery, EdgeQuery, InclusionProof,
    InclusionQuery, LatestCheckpoint, RangeQuery, SignedCheckpoint, TreeEdge, VendorAuditKey,
    VendorScopeQuery,
};

use crate::Global;
use crate::args::key_text;
use crate::client::Client;
use crate::output::{Output, lines};

#[derive(Subcommand)]
pub enum AuditCommand {
    #[command(flatten)]
    Online(OnlineCommand),
    /// Verify an exported bundle offline (exit 0 intact, 1 tampered, 2 unusable input)
    Verify(VerifyArgs),
}

/// The commands that ask the server.
#[derive(Subcommand)]
pub enum OnlineCommand {
    /// Print the log's public key, as a signed-note verifier key (give it to auditors)
    Key,
    /// Print the latest signed checkpoint (a signed note; save it to check later exports)
    Checkpoint {
        /// Ask the server to sign one of the log as it is now first
        #[arg(long)]
        sign: bool,
    },
    /// Print the inclusion proof of one entry
    Inclusion {
        /// The entry's sequence number
        index: u64,
        /// Tree size (default: the latest checkpoint's)
        #[arg(long)]
        size: Option<u64>,
    },
    /// Print the consistency proof between two tree sizes
    Consistency {
        /// The earlier tree size
        old: u64,
        /// Default: the latest checkpoint's size
        new: Option<u64>,
    },
    /// Print entries FROM..TO as JSON lines, exactly as stored
    Entries {
        /// First sequence number
        from: u64,
        /// Last sequence number
        to: u64,
    },
    /// Export the log as a bundle directory for offline verification
    Export(ExportArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    /// Directory to write (created; must be empty if it exists)
    #[arg(long)]
    out: PathBuf,
    /// Export only what follows this signed checkpoint (one you kept from an earlier export)
    #[arg(long)]
    since: Option<PathBuf>,
    /// Encrypt every file of the bundle to this age recipient (age1…)
    #[arg(long)]
    recipient: Option<String>,
    /// Export one vendor's view (its admins and auditors): its entries in full, every other
    /// entry by hash, with the proof that none of the vendor's entries was left out
    #[arg(long)]
    vendor: Option<String>,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The bundle directory
    dir: PathBuf,
    /// The log's verifier key (name+keyid+base64, from `custody audit key`), or a file holding it
    #[arg(long)]
    log_key: String,
    /// A signed checkpoint you kept from before: the log must still contain it
    #[arg(long)]
    previous: Option<PathBuf>,
    /// The age identity file for an encrypted bundle
    #[arg(long)]
    identity: Option<PathBuf>,
    /// For a vendor's export: the vendor's tag key you kept from your first verified export
    /// (hex, or a file holding it, or that export's vendor.json); needed to check an export
    /// `--since` a checkpoint
    #[arg(long)]
    vendor_key: Option<String>,
    /// Witnesses that must have cosigned the bundle's newest checkpoint
    #[command(flatten)]
    witnesses: crate::witness::Requirement,
}

/// Entries, leaf hashes and checkpoints per request (the server's limits).
const ENTRIES_PAGE: u64 = 50_000;
const LEAVES_PAGE: u64 = 1_000_000;

pub async fn run(command: OnlineCommand, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = &Client::from_settings(global)?;
    match command {
        OnlineCommand::Key => {
            let key: AuditKey = client.get("/v1/audit/key").await?;
            out.result(&key, || key.key.clone())
        }
        OnlineCommand::Checkpoint { sign } => checkpoint(client, sign, out).await,
        OnlineCommand::Inclusion { index, size } => {
            let query = InclusionQuery { index, size };
            let proof: InclusionProof = client
                .call(
                    client
                        .request(Method::GET, "/v1/audit/proof/inclusion")
                        .query(&query),
                )
                .await?;
            out.result(&proof, || {
                format!(
                    "entry {} in tree of size {}\nleaf hash {}\n{}",
                    proof.index,
                    proof.size,
                    proof.leaf_hash,
                    lines(&proof.proof, String::clone)
                )
            })
        }
        OnlineCommand::Consistency { old, new } => {
            let query = ConsistencyQuery { old, new };
            let proof: ConsistencyProof = client
                .call(
                    client
                        .request(Method::GET, "/v1/audit/proof/consistency")
                        .query(&query),
                )
                .await?;
            out.result(&proof, || lines(&proof.proof, String::clone))
        }
        OnlineCommand::Entries { from, to } => {
            let entries = fetch_entries(client, &VendorScopeQuery::default(), from, to).await?;
            let mut text = Vec::new();
            for line in entries {
                text.extend_from_slice(&line);
                text.push(b'\n');
            }
            use std::io::Write;
            std::io::stdout().write_all(&text)?;
            Ok(())
        }
        OnlineCommand::Export(args) => export(client, &args, out).await,
    }
}

/// `custody audit checkpoint [--sign]`: the latest signed checkpoint's note alone, byte for
/// byte, so `> file` keeps a verifiable checkpoint.
async fn checkpoint(client: &Client, sign: bool, out: &Output) -> anyhow::Result<()> {
    if sign {
        let signed: SignedCheckpoint = client.post("/v1/audit/checkpoint", &wire::Empty {}).await?;
        print_note(&signed, &signed.note, out);
    } else {
        let latest: LatestCheckpoint = client.get("/v1/audit/checkpoint").await?;
        if let Some(why) = &latest.refusal {
            eprintln!("custody: warning: the server refuses to sign new checkpoints: {why}");
        }
        for w in &latest.witnesses {
            if let Some(why) = &w.last_error {
                eprintln!("custody: warning: witness {} did not cosign: {why}", w.name);
            }
        }
        print_note(&latest, &latest.note, out);
    }
    Ok(())
}

fn print_note<T: Serialize>(body: &T, note: &str, out: &Output) {
    if out.is_json() {
        out.json_line(body);
    } else {
        print!("{note}");
    }
}

/// Entries `from..to`, page by page; each line exactly as stored (in a vendor's view, other
/// entries' lines stand for them by hash).
async fn fetch_entries(
    client: &Client,
    scope: &VendorScopeQuery,
    from: u64,
    to: u64,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut lines = Vec::with_capacity(to.saturating_sub(from).min(1 << 24) as usize);
    let mut at = from;
    while at < to {
        let end = to.min(at + ENTRIES_PAGE);
        let asked = end - at;
        let body = client
            .send(
                client
                    .request(Method::GET, "/v1/audit/entries")
                    .query(&range(at, end))
                    .query(scope),
            )
            .await?
            .bytes()
            .await?;
        let Some(body) = body.strip_suffix(b"\n") else {
            bail!("the server sent no entries for {at}..{end}");
        };
        let before = lines.len();
        lines.extend(body.split(|&b| b == b'\n').map(<[u8]>::to_vec));
        let got = (lines.len() - before) as u64;
        if got == 0 || got > end - at {
            bail!("the server sent {got} entries for {at}..{end}");
        }
        at += got;
        if got < asked {
            // A short page: the log ends here. (Reading the log appends entries of its own,
            // so a `to` beyond the end would otherwise keep moving away.)
            break;
        }
    }
    Ok(lines)
}

/// 32-byte values `from..to` from `route` (leaf hashes, leaf tags), `page` per request.
async fn fetch_hashes(
    client: &Client,
    scope: &VendorScopeQuery,
    route: &str,
    page: u64,
    from: u64,
    to: u64,
) -> anyhow::Result<Vec<Hash>> {
    let mut leaves = Vec::with_capacity(to.saturating_sub(from).min(1 << 24) as usize);
    let mut at = from;
    while at < to {
        let end = to.min(at + page);
        let body = client
            .send(
                client
                    .request(Method::GET, route)
                    .query(&range(at, end))
                    .query(scope),
            )
            .await?
            .bytes()
            .await?;
        if body.is_empty() || body.len() % 32 != 0 || (body.len() / 32) as u64 > end - at {
            bail!("the server sent a malformed list of hashes ({route}) for {at}..{end}");
        }
        for chunk in body.chunks_exact(32) {
            let mut h = [0u8; 32];
            h.copy_from_slice(chunk);
            leaves.push(h);
        }
        at += (body.len() / 32) as u64;
    }
    Ok(leaves)
}

fn range(from: u64, to: u64) -> RangeQuery {
    RangeQuery {
        from: Some(from),
        to: Some(to),
    }
}

fn decode_hashes(hashes: &[String]) -> anyhow::Result<Vec<Hash>> {
    hashes
        .iter()
        .map(|h| {
            let raw = B64.decode(h)?;
            Hash::try_from(raw.as_slice()).map_err(|_| anyhow::anyhow!("a hash is not 32 bytes"))
        })
        .collect()
}

/// The size a signed note claims (its second line); the signature is checked by `verify`.
fn note_size(note: &str) -> anyhow::Result<u64> {
    let body_end = note.find("\n\n").context("not a signed note")?;
    Ok(Checkpoint::parse_body(&note[..=body_end])?.size)
}

async fn export(client: &Client, args: &ExportArgs, out: &Output) -> anyhow::Result<()> {
    if let Some(r) = &args.recipient {
        // Refuse a bad recipient before fetching anything.
        crypto::age_file::encrypt(r, b"").context("--recipient")?;
    }
    let scope = VendorScopeQuery {
        vendor: args.vendor.clone(),
    };
    let vendor_key: Option<VendorAuditKey> = match &args.vendor {
        Some(_) => Some(
            client
                .call(
                    client
                        .request(Method::GET, "/v1/audit/vendor-key")
                        .query(&scope),
                )
                .await?,
        ),
        None => None,
    };
    let since = match &args.since {
        Some(path) => {
            let note = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some((
                note_size(&note).with_context(|| format!("{}", path.display()))?,
                note,
            ))
        }
        None => None,
    };
    // A fresh checkpoint covers as much of the log as possible; if the server refuses to sign
    // (it says why), the latest one it signed before still makes a verifiable bundle.
    let signed: anyhow::Result<SignedCheckpoint> = client
        .call(
            client
                .request(Method::POST, "/v1/audit/checkpoint")
                .query(&scope)
                .json(&wire::Empty {}),
        )
        .await;
    let end = match signed {
        Ok(checkpoint) => checkpoint.size,
        Err(e) => {
            eprintln!("custody: warning: no new checkpoint: {e:#}");
            client
                .call::<LatestCheckpoint>(
                    client
                        .request(Method::GET, "/v1/audit/checkpoint")
                        .query(&scope),
                )
                .await?
                .size
        }
    };
    let first = since.as_ref().map_or(0, |(size, _)| *size);
    if first > end {
        bail!(
            "your checkpoint covers {first} entries, but the log's latest signed checkpoint only \
             {end}: the log was truncated or the database restored from an older copy"
        );
    }

    let entries = fetch_entries(client, &scope, first, end).await?;
    if entries.len() as u64 != end - first {
        bail!(
            "the server sent {} entries for {first}..{end}, which its checkpoint covers",
            entries.len()
        );
    }
    let leaves = fetch_hashes(client, &scope, "/v1/audit/leaves", LEAVES_PAGE, first, end).await?;
    let tags = fetch_hashes(client, &scope, "/v1/audit/tags", ENTRIES_PAGE, first, end).await?;
    let mut notes: Vec<String> = Vec::new();
    let mut from = first;
    loop {
        let page: CheckpointList = client
            .call(
                client
                    .request(Method::GET, "/v1/audit/checkpoints")
                    .query(&range(from, end))
                    .query(&scope),
            )
            .await?;
        let Some(last) = page.checkpoints.last().map(|c| c.size) else {
            break;
        };
        notes.extend(page.checkpoints.into_iter().map(|c| c.note));
        if last >= end {
            break;
        }
        from = last + 1;
    }
    let edge = if first > 0 {
        let edge: TreeEdge = client
            .call(
                client
                    .request(Method::GET, "/v1/audit/edge")
                    .query(&EdgeQuery { size: first })
                    .query(&scope),
            )
            .await?;
        decode_hashes(&edge.edge)?
    } else {
        Vec::new()
    };
    if let Some((size, note)) = &since
        && !notes.iter().any(|n| note_size(n).ok() == Some(*size))
    {
        // The server no longer has it (its database was restored?): the auditor's copy.
        notes.push(note.clone());
    }
    let vendor = vendor_key.map(|k| bundle::VendorScope {
        format: bundle::VENDOR_FORMAT.into(),
        vendor: k.vendor,
        tag_key: k.tag_key,
        key_entry: k.published_at,
    });
    let files = bundle::assemble(&Parts {
        first,
        edge: &edge,
        entries: &entries,
        checkpoints: &notes,
        leaves: Some(&leaves),
        tags: Some(&tags),
        vendor: vendor.as_ref(),
    });
    write_bundle(&args.out, &files, args.recipient.as_deref())?;
    let summary = Exported {
        out: args.out.clone(),
        first,
        end,
        entries: entries.len(),
        checkpoints: notes.len(),
        encrypted: args.recipient.is_some(),
    };
    out.result(&summary, || {
        format!(
            "exported {}entries {first}..{end} and {} signed checkpoints to {}{}",
            args.vendor
                .as_ref()
                .map_or_else(String::new, |v| format!("{v}'s view of ")),
            notes.len(),
            args.out.display(),
            if args.recipient.is_some() {
                " (age-encrypted)"
            } else {
                ""
            }
        )
    })
}

/// What `custody audit export --json` prints.
#[derive(Serialize)]
struct Exported {
    out: PathBuf,
    first: u64,
    end: u64,
    entries: usize,
    checkpoints: usize,
    encrypted: bool,
}

fn write_bundle(dir: &Path, files: &BundleFiles, recipient: Option<&str>) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (path, bytes) in files.iter() {
        let (path, bytes) = match recipient {
            Some(r) => (format!("{path}.age"), crypto::age_file::encrypt(r, bytes)?),
            None => (path.to_owned(), bytes.to_vec()),
        };
        let target = dir.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, bytes).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

const UNUSABLE: u8 = 2;

fn unusable(out: &Output, message: String) -> ExitCode {
    if out.is_json() {
        out.json_line(&Verified {
            intact: false,
            exit_code: UNUSABLE,
            problem: Some(format!("cannot verify: {message}")),
            ..Verified::default()
        });
    } else {
        eprintln!("custody: cannot verify: {message}");
    }
    ExitCode::from(UNUSABLE)
}

/// Reads every file under `dir` (relative `/` paths), decrypting `.age` files.
fn read_bundle(dir: &Path, identity: Option<&Path>) -> Result<BundleFiles, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let identities = match identity {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            Some(
                crypto::age_file::Identities::parse(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let mut files = BundleFiles::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(dir)
            .map_err(|e| e.to_string())?
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let bytes = std::fs::read(entry.path())
            .map_err(|e| format!("reading {}: {e}", entry.path().display()))?;
        match rel.strip_suffix(".age") {
            Some(plain) => {
                let ids = identities.as_ref().ok_or_else(|| {
                    format!("{rel} is encrypted: give the age identity with --identity")
                })?;
                let clear = ids.decrypt(&bytes).map_err(|e| format!("{rel}: {e}"))?;
                files.insert(plain, clear.to_vec());
            }
            None => files.insert(rel, bytes),
        }
    }
    Ok(files)
}

/// `custody audit verify`: offline, synchronous, with its own exit codes.
pub fn verify(args: &VerifyArgs, out: &Output) -> ExitCode {
    let key = match key_text(&args.log_key)
        .and_then(|t| VerifierKey::parse(t.trim()).map_err(|e| format!("--log-key: {e}")))
    {
        Ok(k) => k,
        Err(e) => return unusable(out, e),
    };
    let previous = match &args.previous {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(note) => Some(note),
            Err(e) => return unusable(out, format!("reading {}: {e}", path.display())),
        },
        None => None,
    };
    let files = match read_bundle(&args.dir, args.identity.as_deref()) {
        Ok(f) => f,
        Err(e) => return unusable(out, e),
    };
    let vendor_key = match args.vendor_key.as_deref().map(pinned_vendor_key) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => return unusable(out, format!("--vendor-key: {e}")),
    };
    let expect = bundle::Expectations {
        previous: previous.as_deref(),
        vendor_key: vendor_key.as_deref(),
    };
    // The key name is the log's origin.
    let report = bundle::verify_bundle_with(&files, &key.key, &key.name, &key.name, &expect);
    // Witnesses: the newest checkpoint that verified must carry the quorum.
    let newest = files.get(&format!(
        "{}{}.txt",
        bundle::CHECKPOINTS_DIR,
        report.signed_size
    ));
    let witnessed = match report.intact {
        true => match args.witnesses.check(newest) {
            Ok(quorum) => quorum,
            Err(e) => return unusable(out, e),
        },
        false => None,
    };
    let unwitnessed = witnessed.as_ref().filter(|q| !q.met());
    if out.is_json() {
        let mut v = verified(&report);
        if let Some(q) = &witnessed {
            v.witnesses = Some(q.to_string());
        }
        if let Some(q) = unwitnessed {
            v.exit_code = 1;
            v.problem = Some(format!("not witnessed: {q}"));
        }
        out.json_line(&v);
    } else {
        match &report.first_problem {
            None => println!(
                "intact: entries {}..{} ({} entries), {} signed checkpoints verified, signed up to {}{}",
                report.first,
                report.first + report.entries,
                report.entries,
                report.checkpoints_checked,
                report.signed_size,
                if previous.is_some() {
                    "; contains your previous checkpoint"
                } else {
                    ""
                }
            ),
            Some(Problem::Unusable(why)) => eprintln!("custody: cannot verify: {why}"),
            Some(problem) => println!("TAMPERED: {problem}"),
        }
        if let (None, Some(v)) = (&report.first_problem, &report.vendor) {
            println!(
                "complete for {}: its {} entries are all here in full, and every other entry \
                 is provably someone else's{}",
                v.vendor,
                v.entries_in_full,
                if v.before_key > 0 {
                    format!(
                        " ({} entries from before {}'s tag key cannot be attributed)",
                        v.before_key, v.vendor
                    )
                } else {
                    String::new()
                }
            );
            if vendor_key.is_none() {
                println!(
                    "keep {}'s tag key (or this export's vendor.json) to check later exports: \
                     --vendor-key {}",
                    v.vendor, v.tag_key
                );
            }
        }
        match (&witnessed, unwitnessed) {
            (_, Some(q)) => println!("NOT WITNESSED: {q}"),
            (Some(q), None) => println!("witnessed: {q}"),
            (None, None) => {}
        }
    }
    if unwitnessed.is_some() {
        return ExitCode::from(1);
    }
    ExitCode::from(report.exit_code())
}

/// The vendor tag key an auditor kept: hex, a file holding it, or an export's vendor.json.
fn pinned_vendor_key(arg: &str) -> Result<String, String> {
    let text = key_text(arg)?;
    let text = text.trim();
    if text.starts_with('{') {
        let scope: bundle::VendorScope =
            serde_json::from_str(text).map_err(|e| format!("not a vendor.json: {e}"))?;
        return Ok(scope.tag_key);
    }
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("not 64 hex digits, nor a file holding them, nor a vendor.json".into());
    }
    Ok(text.to_ascii_lowercase())
}

/// What `custody audit verify --json` prints. An unusable input has only `intact`,
/// `exit_code` and `problem`; the first problem's place is named by `entry`, `checkpoint` or
/// `file`.
#[derive(Serialize, Default)]
struct Verified {
    intact: bool,
    exit_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    first: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signed_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoints_checked: Option<usize>,
    /// For a vendor's export: the vendor, its entries in full, and its tag key.
    #[serde(skip_serializing_if = "Option::is_none")]
    vendor: Option<VerifiedVendor>,
    problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entry: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    /// The witness quorum on the newest checkpoint, when `--witness-key` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    witnesses: Option<String>,
}

#[derive(Serialize)]
struct VerifiedVendor {
    vendor: String,
    entries_in_full: u64,
    before_key: u64,
    tag_key: String,
}

fn verified(report: &Report) -> Verified {
    let mut v = Verified {
        intact: report.intact,
        exit_code: report.exit_code(),
        first: Some(report.first),
        entries: Some(report.entries),
        signed_size: Some(report.signed_size),
        checkpoints_checked: Some(report.checkpoints_checked),
        vendor: report.vendor.as_ref().map(|v| VerifiedVendor {
            vendor: v.vendor.clone(),
            entries_in_full: v.entries_in_full,
            before_key: v.before_key,
            tag_key: v.tag_key.clone(),
        }),
        problem: report.first_problem.as_ref().map(ToString::to_string),
        ..Verified::default()
    };
    match &report.first_problem {
        Some(Problem::Entry { index, .. }) => v.entry = Some(*index),
        Some(Problem::Checkpoint { file, .. }) => v.checkpoint = Some(file.clone()),
        Some(Problem::Proof { file, .. }) => v.file = Some(file.clone()),
        Some(Problem::Manifest { path, .. }) => v.file = Some(path.clone()),
        _ => {}
    }
    v
}

/// `custody activity VENDOR[/MODEL]`.
#[derive(Args)]
pub struct ActivityArgs {
    /// `VENDOR` or `VENDOR/MODEL`
    target: String,
    /// Only events at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z)
    #[arg(long)]
    since: Option<String>,
}

/// What happened to a vendor's models, from the audit log, page by page; each event with its
/// log index, to check it against the vendor's export.
pub async fn activity(args: &ActivityArgs, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = &Client::from_settings(global)?;
    let (vendor, model) = vendor_and_model(&args.target)?;
    let mut query = wire::audit::ActivityQuery {
        model: model.map(|m| m.to_string()),
        since: args.since.clone(),
        from: None,
        limit: None,
        wait: None,
    };
    let mut events = Vec::new();
    loop {
        let page: wire::audit::Activity = client
            .call(
                client
                    .request(Method::GET, &format!("/v1/vendors/{vendor}/activity"))
                    .query(&query),
            )
            .await?;
        events.extend(page.events);
        match page.next {
            Some(next) if query.from != Some(next) => query.from = Some(next),
            _ => break,
        }
    }
    let activity = wire::audit::Activity {
        vendor: vendor.to_string(),
        events,
        next: None,
        resume_from: query.from.unwrap_or(0),
    };
    out.result(&activity, || {
        if activity.events.is_empty() {
            return format!("no activity on {} in the audit log", args.target);
        }
        lines(&activity.events, event_line)
    })
}

/// `VENDOR` or `VENDOR/MODEL`.
fn vendor_and_model(target: &str) -> anyhow::Result<(types::VendorName, Option<types::ModelName>)> {
    Ok(match target.split_once('/') {
        Some((v, m)) => (
            types::VendorName::parse(v)?,
            Some(types::ModelName::parse(m)?),
        ),
        None => (types::VendorName::parse(target)?, None),
    })
}

fn event_line(e: &wire::audit::ActivityEvent) -> String {
    let mut line = format!(
        "{:>6}  {}  {:<8} {:<22} {}  by {}",
        e.index, e.time, e.outcome, e.action, e.resource, e.actor
    );
    if let Some(host) = &e.host {
        line.push_str(&format!(" on {host}"));
    }
    if e.files > 0 {
        line.push_str(&format!(", {} file(s), {} bytes", e.files, e.bytes));
    }
    if let Some(detail) = &e.detail {
        line.push_str(&format!(": {detail}"));
    }
    line
}

/// `custody watch VENDOR[/MODEL]`.
#[derive(Args)]
pub struct WatchArgs {
    /// `VENDOR` or `VENDOR/MODEL`
    target: String,
    /// Start at this log index (what a previous watch printed last, plus one); default: the
    /// start of the log
    #[arg(long)]
    from: Option<u64>,
}

/// Follows a vendor's events as they are committed (long polling), one line each (with
/// `--json`, one JSON event per line), until interrupted.
pub async fn watch(args: &WatchArgs, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = &Client::from_settings(global)?;
    let (vendor, model) = vendor_and_model(&args.target)?;
    let mut query = wire::audit::ActivityQuery {
        model: model.map(|m| m.to_string()),
        since: None,
        from: args.from,
        limit: None,
        wait: Some(25),
    };
    eprintln!(
        "custody: watching {} from log index {} (interrupt to stop)",
        args.target,
        args.from.unwrap_or(0)
    );
    loop {
        let page: wire::audit::Activity = client
            .call(
                client
                    .request(Method::GET, &format!("/v1/vendors/{vendor}/activity"))
                    .query(&query),
            )
            .await?;
        for e in &page.events {
            if out.is_json() {
                out.json_line(e);
            } else {
                println!("{}", event_line(e));
            }
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        query.from = Some(page.next.unwrap_or(page.resume_from));
    }
}

/// `custody webhook …` (a vendor's admins).
#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Send the vendor's fetches, refusals, grants and deletions to an HTTPS receiver (on a
    /// host the operator allows); prints the signing secret, once
    Set {
        /// The vendor whose events are sent
        vendor: String,
        /// `https://…`
        url: String,
        /// The receiver's CA certificate (PEM), when it is not a public one (`--ca` is the
        /// custody server's)
        #[arg(long)]
        receiver_ca: Option<PathBuf>,
    },
    /// Where the events go, how far delivery got, the last error
    Show {
        /// The vendor
        vendor: String,
    },
    /// Stop sending
    Remove {
        /// The vendor
        vendor: String,
    },
}

pub async fn webhook(command: WebhookCommand, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = &Client::from_settings(global)?;
    let path = |vendor: &str| -> anyhow::Result<String> {
        Ok(format!(
            "/v1/vendors/{}/webhook",
            types::VendorName::parse(vendor)?
        ))
    };
    let show = |hook: &wire::audit::WebhookInfo| {
        let mut text = format!(
            "{}'s events go to {}; delivered up to log index {}",
            hook.vendor, hook.url, hook.delivered_through
        );
        if let Some(secret) = &hook.secret {
            text.push_str(&format!(
                "\nsigning secret (shown once; each delivery carries X-Custody-Signature: \
                 v1=HMAC-SHA256(secret, timestamp \".\" body)): {secret}"
            ));
        }
        if hook.failures > 0 {
            text.push_str(&format!(
                "\n{} failed attempt(s); last: {}",
                hook.failures,
                hook.last_error.as_deref().unwrap_or("?")
            ));
        }
        text
    };
    match command {
        WebhookCommand::Set {
            vendor,
            url,
            receiver_ca,
        } => {
            let ca_pem = match &receiver_ca {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            };
            let hook: wire::audit::WebhookInfo = client
                .call(
                    client
                        .request(Method::PUT, &path(&vendor)?)
                        .json(&wire::audit::SetWebhook { url, ca_pem }),
                )
                .await?;
            out.result(&hook, || show(&hook))
        }
        WebhookCommand::Show { vendor } => {
            let hook: wire::audit::WebhookInfo = client.get(&path(&vendor)?).await?;
            out.result(&hook, || show(&hook))
        }
        WebhookCommand::Remove { vendor } => {
            client
                .send(client.request(Method::DELETE, &path(&vendor)?))
                .await?;
            let done = WebhookRemoved {
                vendor,
                removed: true,
            };
            out.result(&done, || format!("{}'s webhook removed", done.vendor))
        }
    }
}

/// What `custody webhook remove --json` prints.
#[derive(Serialize)]
struct WebhookRemoved {
    vendor: String,
    removed: bool,
}
