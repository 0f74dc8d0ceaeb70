//! Deletion commands: request a crypto-shred, schedule one, follow it, fetch the certificate.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use types::{RepoRef, VendorName};

use crate::Global;
use crate::client::Client;
use crate::output::Output;

#[derive(Subcommand)]
pub enum DeleteCommand {
    /// Crypto-shred a model (every revision and derived artifact) or, with --vendor, every
    /// model of a vendor. Vendor admin or operator; waits for a second admin under the
    /// two-person rule
    Delete {
        /// VENDOR/MODEL
        #[arg(required_unless_present = "vendor", conflicts_with = "vendor")]
        model: Option<String>,
        #[arg(long)]
        vendor: Option<String>,
        /// Wait until the certificate is issued and write it to this file
        #[arg(long)]
        certificate_out: Option<PathBuf>,
    },
    /// Shred a model automatically at a time (RFC 3339 or Unix seconds); `none` clears it
    DeleteAfter {
        /// VENDOR/MODEL
        model: String,
        at: String,
    },
    /// Show a deletion's progress; write its certificate once issued
    Deletion {
        id: String,
        #[arg(long)]
        certificate_out: Option<PathBuf>,
    },
}

pub async fn run(command: DeleteCommand, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = Client::from_settings(global)?;
    match command {
        DeleteCommand::Delete {
            model,
            vendor,
            certificate_out,
        } => {
            let path = match (&model, &vendor) {
                (Some(m), None) => format!("/v1/models/{}/delete", RepoRef::parse(m)?),
                (None, Some(v)) => format!("/v1/vendors/{}/delete", VendorName::parse(v)?),
                _ => bail!("name a model (VENDOR/MODEL) or --vendor VENDOR"),
            };
            let v = client.post_json(&path, &json!({})).await?;
            let id = v["deletion"].as_str().unwrap_or("").to_owned();
            if v["state"] == "pending-approval" {
                out.result(&v, || {
                    format!("deletion {id} waits for a second admin: custody approve {id}")
                });
                return Ok(());
            }
            match certificate_out {
                Some(file) => {
                    let done = wait_for_certificate(&client, &id, &file).await?;
                    out.result(&done, || {
                        format!("deleted; certificate written to {}", file.display())
                    });
                }
                None => out.result(&v, || {
                    format!("deletion {id} started; follow it with: custody deletion {id}")
                }),
            }
        }
        DeleteCommand::DeleteAfter { model, at } => {
            let repo = RepoRef::parse(&model)?;
            let at = if at == "none" {
                None
            } else {
                Some(crate::access::parse_time(&at)?)
            };
            let v = client
                .put_json(
                    &format!("/v1/models/{repo}/delete-after"),
                    &json!({ "at": at }),
                )
                .await?;
            out.result(&v, || match at {
                Some(t) => format!("{repo} will be shredded at {t}"),
                None => format!("{repo} has no scheduled deletion"),
            });
        }
        DeleteCommand::Deletion {
            id,
            certificate_out,
        } => {
            crate::client::opaque_id(&id)?;
            let v = client.get_json(&format!("/v1/deletions/{id}")).await?;
            if let Some(file) = certificate_out {
                if v["certificate"].is_null() {
                    bail!(
                        "deletion {id} has no certificate yet (state {})",
                        v["state"].as_str().unwrap_or("?")
                    );
                }
                write_certificate(&v["certificate"], &file)?;
            }
            out.result(&v, || {
                format!("deletion {id}: {}", v["state"].as_str().unwrap_or("?"))
            });
        }
    }
    Ok(())
}

async fn wait_for_certificate(
    client: &Client,
    id: &str,
    file: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut pause = std::time::Duration::from_millis(100);
    crate::client::opaque_id(id)?;
    loop {
        let v = client.get_json(&format!("/v1/deletions/{id}")).await?;
        if !v["certificate"].is_null() {
            write_certificate(&v["certificate"], file)?;
            return Ok(v);
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "deletion {id} is still at {} after 10 minutes; it continues on the server",
                v["state"].as_str().unwrap_or("?")
            );
        }
        // Each poll is an audited read: start quick (a shred takes well under a second),
        // then back off.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
}

fn write_certificate(
    certificate: &serde_json::Value,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(certificate)?;
    text.push('\n');
    std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))
}
