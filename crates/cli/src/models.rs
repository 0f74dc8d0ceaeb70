//! `custody ls`: the models the caller may see, or one model's revisions.

use clap::Args;
use reqwest::Method;
use types::{RepoRef, VendorName};
use wire::models::{ModelInfo, ModelList, ModelListQuery};

use crate::Global;
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
        lines(&info.revisions, |r| {
            let derived = r
                .derived_from
                .as_ref()
                .map(|c| format!("  (derived from {c})"))
                .unwrap_or_default();
            format!("{}  {}  {}{derived}", r.commit, r.created_by, r.message)
        })
    })
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
            format!(
                "{}  {}",
                m.id,
                m.latest.as_ref().map_or("(no revision)", |c| c.as_str())
            )
        })
    })
}
