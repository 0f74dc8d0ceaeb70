//! Deletion commands: request a crypto-shred, schedule one, follow it, fetch the certificate.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use types::{RepoRef, VendorName};
use wire::Empty;
use wire::access::Outcome;
use wire::deletion::{
    DeleteAfter, DeleteAfterSet, DeletionList, DeletionStarted, DeletionStatus, ServiceKey,
};

use crate::Global;
use crate::args::{opaque_id, parse_time, rfc3339};
use crate::client::Client;
use crate::output::{Output, lines};

#[derive(Subcommand)]
pub enum DeleteCommand {
    /// Crypto-shred a model (every revision and derived artifact) or, with --vendor, every
    /// model of a vendor. Vendor admin or operator; waits for a second admin under the
    /// two-person rule
    Delete {
        /// VENDOR/MODEL
        #[arg(required_unless_present = "vendor", conflicts_with = "vendor")]
        model: Option<String>,
        /// Every model of this vendor instead of one model
        #[arg(long)]
        vendor: Option<String>,
        /// Wait until the certificate is issued and write it to this file
        #[arg(long)]
        certificate_out: Option<PathBuf>,
        /// Do not ask for the name to be typed. Required without a terminal (scripts): a
        /// shred cannot be undone
        #[arg(long)]
        yes: bool,
    },
    /// Shred a model automatically at a time (RFC 3339 or Unix seconds); `none` clears it
    DeleteAfter {
        /// VENDOR/MODEL
        model: String,
        /// When: RFC 3339 (2027-01-01T00:00:00Z) or Unix seconds; `none` clears it
        at: String,
    },
    /// The public key deletion certificates are signed with (hex): what verify-certificate
    /// takes as --service-key
    ServiceKey,
    /// A vendor's deletions, newest first: id, model, state, when requested and certified
    /// (vendor admin, auditor, operator)
    Deletions {
        /// The vendor
        vendor: String,
    },
    /// Show a deletion's progress; write its certificate once issued
    Deletion {
        /// The deletion's id (from custody delete, or custody deletions VENDOR)
        id: String,
        /// Write the certificate to this file once issued
        #[arg(long)]
        certificate_out: Option<PathBuf>,
        /// With --certificate-out: wait (up to 10 minutes) until the certificate is issued
        #[arg(long, requires = "certificate_out")]
        wait: bool,
    },
}

pub async fn run(command: DeleteCommand, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = &Client::from_settings(global)?;
    match command {
        DeleteCommand::Delete {
            model,
            vendor,
            certificate_out,
            yes,
        } => {
            let (path, what, name) = match (&model, &vendor) {
                (Some(m), None) => {
                    let m = RepoRef::parse(m)?;
                    (
                        format!("/v1/models/{m}/delete"),
                        "every revision of",
                        m.to_string(),
                    )
                }
                (None, Some(v)) => {
                    let v = VendorName::parse(v)?;
                    (
                        format!("/v1/vendors/{v}/delete"),
                        "every model of vendor",
                        v.to_string(),
                    )
                }
                _ => bail!("name a model (VENDOR/MODEL) or --vendor VENDOR"),
            };
            if !yes {
                confirm_by_name(what, &name)?;
            }
            delete(client, &path, certificate_out.as_deref(), out).await
        }
        DeleteCommand::DeleteAfter { model, at } => {
            let at = if at == "none" {
                None
            } else {
                Some(parse_time(&at)?)
            };
            delete_after(client, &RepoRef::parse(&model)?, at, out).await
        }
        DeleteCommand::ServiceKey => {
            let key: ServiceKey = client.get("/v1/service-key").await?;
            out.result(&key, || key.service_key.clone())
        }
        DeleteCommand::Deletions { vendor } => {
            let vendor = VendorName::parse(&vendor)?;
            let list: DeletionList = client
                .get(&format!("/v1/vendors/{vendor}/deletions"))
                .await?;
            out.result(&list, || deletions_text(&list))
        }
        DeleteCommand::Deletion {
            id,
            certificate_out,
            wait,
        } => match (certificate_out, wait) {
            (Some(file), true) => {
                let done = wait_for_certificate(client, opaque_id(&id)?, &file).await?;
                out.result(&done, || {
                    format!("deleted; certificate written to {}", file.display())
                })
            }
            (file, _) => deletion(client, opaque_id(&id)?, file.as_deref(), out).await,
        },
    }
}

/// Asks, on a terminal, for `name` to be typed before a shred; without a terminal, refuses
/// (a script says `--yes`). Nothing is sent to the server unless the name matches.
fn confirm_by_name(what: &str, name: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "a deletion destroys {what} {name} for good, so custody asks for its name on a \
             terminal; from a script, pass --yes. Nothing was deleted"
        );
    }
    let mut stderr = std::io::stderr();
    write!(
        stderr,
        "This destroys {what} {name} for good: no copy, backups included, can be read again.\n\
         Type {name} to confirm: "
    )?;
    stderr.flush()?;
    let mut typed = String::new();
    stdin.lock().read_line(&mut typed)?;
    if typed.trim() != name {
        bail!("{:?} is not {name}; nothing was deleted", typed.trim());
    }
    Ok(())
}

/// A deletion asked to write its certificate that waits for a second admin instead: the
/// command exits with its own status ([`WaitingForApproval::EXIT_CODE`]), so a script can
/// tell "not yet" from "failed".
#[derive(Debug)]
pub struct WaitingForApproval {
    id: String,
}

impl WaitingForApproval {
    pub const EXIT_CODE: u8 = 3;
}

impl std::fmt::Display for WaitingForApproval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = &self.id;
        write!(
            f,
            "no certificate written yet: deletion {id} waits for approval; once a second admin \
             has approved it, write the certificate with custody deletion {id} --wait --certificate-out FILE"
        )
    }
}

impl std::error::Error for WaitingForApproval {}

async fn delete(
    client: &Client,
    path: &str,
    certificate_out: Option<&Path>,
    out: &Output,
) -> anyhow::Result<()> {
    let started: DeletionStarted = client.post(path, &Empty {}).await?;
    let id = &started.deletion;
    if started.is_pending_approval() {
        out.result(&started, || {
            format!(
                "deletion {id} waits for a second admin of the vendor: they run custody approve {id}"
            )
        })?;
        if certificate_out.is_some() {
            // The caller asked for a certificate and gets none now: not a success.
            return Err(WaitingForApproval { id: id.clone() }.into());
        }
        return Ok(());
    }
    match certificate_out {
        Some(file) => {
            let done = wait_for_certificate(client, opaque_id(id)?, file).await?;
            out.result(&done, || {
                format!("deleted; certificate written to {}", file.display())
            })
        }
        None => out.result(&started, || {
            format!("deletion {id} started; follow it with: custody deletion {id}")
        }),
    }
}

async fn delete_after(
    client: &Client,
    repo: &RepoRef,
    at: Option<i64>,
    out: &Output,
) -> anyhow::Result<()> {
    let set: Outcome<DeleteAfterSet> = client
        .put(
            &format!("/v1/models/{repo}/delete-after"),
            &DeleteAfter { at },
        )
        .await?;
    out.result(&set, || match (&set, at) {
        (Outcome::Filed(f), _) => {
            crate::access::filed(&format!("scheduling the deletion of {repo}"), f)
        }
        (Outcome::Done(_), Some(t)) => {
            format!("{repo} will be shredded at {}", crate::args::rfc3339(t))
        }
        (Outcome::Done(_), None) => format!("{repo} has no scheduled deletion"),
    })
}

async fn deletion(
    client: &Client,
    id: &str,
    certificate_out: Option<&Path>,
    out: &Output,
) -> anyhow::Result<()> {
    let status: DeletionStatus = client.get(&format!("/v1/deletions/{id}")).await?;
    if let Some(file) = certificate_out {
        let Some(certificate) = &status.certificate else {
            bail!(
                "deletion {id} has no certificate yet (state {}); to wait for it: custody \
                 deletion {id} --wait --certificate-out FILE",
                status.state
            );
        };
        write_certificate(certificate, file)?;
    }
    out.result(&status, || status_text(&status))
}

/// A deletion as a person reads it: its state, when, and each host's wipe as it stands now
/// (a confirmation after the certificate shows here, not in the certificate).
fn status_text(status: &DeletionStatus) -> String {
    let mut lines = vec![format!(
        "deletion {}: {} (requested {} by {})",
        status.deletion,
        status.state,
        rfc3339(status.requested_at),
        status.requested_by
    )];
    if let Some(t) = status.completed_at {
        lines.push(format!("  certified {}", rfc3339(t)));
    }
    if let Some(e) = &status.last_error {
        lines.push(format!("  failing ({} attempts): {e}", status.attempts));
    }
    for w in &status.wipes {
        let wipe = match (w.confirmed_at, w.late) {
            (Some(t), true) => format!(
                "wipe confirmed {} (after the certificate was issued)",
                rfc3339(t)
            ),
            (Some(t), false) => format!("wipe confirmed {}", rfc3339(t)),
            (None, _) => "wipe NOT confirmed".to_owned(),
        };
        lines.push(format!(
            "  host {} (enrollment {}): {}, {} file(s), {wipe}",
            w.host, w.host_id, w.model, w.files
        ));
    }
    lines.join("\n")
}

async fn wait_for_certificate(
    client: &Client,
    id: &str,
    file: &Path,
) -> anyhow::Result<DeletionStatus> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        let status: DeletionStatus = client.get(&format!("/v1/deletions/{id}")).await?;
        if let Some(certificate) = &status.certificate {
            write_certificate(certificate, file)?;
            return Ok(status);
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "deletion {id} is still at {} after 10 minutes; it continues on the server",
                status.state
            );
        }
        // Each poll is an audited read: start quick (a shred takes well under a second),
        // then back off.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Writes the certificate document as the server holds it (pretty-printed JSON).
fn write_certificate(certificate: &serde_json::Value, file: &Path) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(certificate)?;
    text.push('\n');
    std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))
}

/// `ID  TARGET  STATE  requested T by WHO  certified T`, one line per deletion.
fn deletions_text(list: &DeletionList) -> String {
    if list.deletions.is_empty() {
        return format!("no deletions of {}", list.vendor);
    }
    lines(&list.deletions, |d| {
        let target = d
            .model
            .clone()
            .unwrap_or_else(|| format!("{} (every model)", list.vendor));
        let mut line = format!(
            "{}  {target}  {}  requested {} by {}",
            d.deletion,
            d.state,
            rfc3339(d.requested_at),
            d.requested_by
        );
        if let Some(t) = d.certified_at {
            line.push_str(&format!("  certified {}", rfc3339(t)));
        }
        if let Some(e) = &d.last_error {
            line.push_str(&format!("  (retrying: {e})"));
        }
        line
    })
}
