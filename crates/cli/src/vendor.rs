//! `custody vendor`: vendors (operator).

use clap::Subcommand;
use types::VendorName;
use wire::admin::{CreateVendor, VendorCreated, VendorList};

use crate::Global;
use crate::client::Client;
use crate::output::{Output, lines};

#[derive(Subcommand)]
pub enum VendorCommand {
    /// Create a vendor
    Create {
        /// The vendor's name (lowercase letters, digits, dashes), as models name it
        name: String,
    },
    /// List vendors
    Ls,
}

pub async fn run(command: VendorCommand, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = Client::from_settings(global)?;
    match command {
        VendorCommand::Create { name } => create(&client, &name, out).await,
        VendorCommand::Ls => list(&client, out).await,
    }
}

async fn create(client: &Client, name: &str, out: &Output) -> anyhow::Result<()> {
    let name = VendorName::parse(name)?;
    let request = CreateVendor {
        name: name.to_string(),
    };
    let created: VendorCreated = client.post("/v1/vendors", &request).await?;
    out.result(&created, || format!("created vendor {}", created.name))
}

async fn list(client: &Client, out: &Output) -> anyhow::Result<()> {
    let list: VendorList = client.get("/v1/vendors").await?;
    out.result(&list, || lines(&list.vendors, ToString::to_string))
}
