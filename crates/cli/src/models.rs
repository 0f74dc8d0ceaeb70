//! `custody ls`: the models the caller may see, or one model's revisions.

use clap::Args;
use reqwest::Method;
use types::{RepoRef, VendorName};
use wire::models::{Deleted, ModelInfo, ModelList, ModelListQuery};

use crate::Global;
use crate::args::rfc3339;
use crate::client::Client;
use crate::output::{Output, lines};

#[derive(Args)]
pub struct LsArgs {
    /// VENDOR or VENDOR/MODEL
    target: Option<String>,
}

pub async fn run(args: LsArgs, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = Client::from_settings(global)?;
    match args.target.as_deref() {
        Some(t) if t.contains('/') => revisions(&client, &RepoRef::parse(t)?, out).await,
        vendor => {
            let vendor = vendor.map(VendorName::parse).transpose()?;
            models(&client, vendor.as_ref(), out).await
        }
    }
}

async fn revisions(client: &Client, repo: &RepoRef, out: &Output) -> anyhow::Result<()> {
    let info: ModelInfo = client.get(&format!("/v1/models/{repo}")).await?;
    out.result(&info, || {
        let history = lines(&info.revisions, |r| {
            let derived = r
                .derived_from
                .as_ref()
                .map(|c| format!("  (derived from {c})"))
                .unwrap_or_default();
            format!(
                "{}  {}  {}  {}{derived}",
                r.commit,
                rfc3339(r.created_at),
                r.created_by,
                r.message
            )
        });
        match &info.deleted {
            // The history stays readable; the first line says none of it can be fetched.
            Some(d) => format!(
                "{}: {}; its weights can never be read again\n{history}",
                info.id,
                deleted_text(d)
            ),
            None => history,
        }
    })
}

/// How a person reads a deleted model's mark.
fn deleted_text(d: &Deleted) -> String {
    let mut text = format!("deleted {}", rfc3339(d.at));
    if let Some(id) = &d.deletion {
        match d.certified_at {
            Some(t) => text.push_str(&format!(" (deletion {id}, certified {})", rfc3339(t))),
            None => text.push_str(&format!(" (deletion {id}, not yet certified)")),
        }
    }
    text
}

async fn models(client: &Client, vendor: Option<&VendorName>, out: &Output) -> anyhow::Result<()> {
    let query = ModelListQuery {
        vendor: vendor.map(ToString::to_string),
    };
    let list: ModelList = client
        .call(client.request(Method::GET, "/v1/models").query(&query))
        .await?;
    out.result(&list, || {
        lines(&list.models, |m| {
            let latest = m.latest.as_ref().map_or("(no revision)", |c| c.as_str());
            match &m.deleted {
                Some(d) => format!("{}  {latest}  {}", m.id, deleted_text(d)),
                None => format!("{}  {latest}", m.id),
            }
        })
    })
}
