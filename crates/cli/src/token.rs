//! `custody token`: tokens (operator): create one (its secret is printed once), list them
//! (never a secret), revoke one.

use clap::Subcommand;
use wire::Empty;
use wire::admin::{CreateToken, TokenCreated, TokenInfo, TokenList, TokenRevoked};

use crate::Global;
use crate::args::{self, opaque_id};
use crate::client::Client;
use crate::output::{Output, lines};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once
    Create {
        #[arg(long)]
        role: String,
        #[arg(long)]
        vendor: Option<String>,
        /// Who the token is for (grants name this user)
        #[arg(long)]
        name: String,
        /// Lifetime such as 30d or 12h
        #[arg(long)]
        expires_in: Option<args::Duration>,
    },
    /// List tokens: ids, roles, owners, expiry, revocation (never secrets)
    Ls,
    /// Revoke a token by id (the part before the dot)
    Revoke { id: String },
}

pub async fn run(command: TokenCommand, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = Client::from_settings(global)?;
    match command {
        TokenCommand::Create {
            role,
            vendor,
            name,
            expires_in,
        } => {
            let request = CreateToken {
                role,
                vendor,
                name,
                expires_in_secs: expires_in.map(args::Duration::secs),
            };
            create(&client, &request, out).await
        }
        TokenCommand::Ls => list(&client, out).await,
        TokenCommand::Revoke { id } => revoke(&client, &id, out).await,
    }
}

async fn create(client: &Client, request: &CreateToken, out: &Output) -> anyhow::Result<()> {
    let created: TokenCreated = client.post("/v1/tokens", request).await?;
    // The token itself goes to stdout alone, so `$(custody token create …)` captures it.
    out.result(&created, || created.token.clone())
}

async fn list(client: &Client, out: &Output) -> anyhow::Result<()> {
    let list: TokenList = client.get("/v1/tokens").await?;
    let now = args::now();
    out.result(&list, || {
        lines(&list.tokens, |t: &TokenInfo| {
            let state = if t.revoked_at.is_some() {
                "revoked"
            } else if t.expires_at.is_some_and(|e| e <= now) {
                "expired"
            } else {
                "active"
            };
            format!(
                "{}  {}  {}  {}  {state}",
                t.id,
                t.role,
                t.vendor.as_ref().map_or("-", |v| v.as_str()),
                t.name
            )
        })
    })
}

async fn revoke(client: &Client, id: &str, out: &Output) -> anyhow::Result<()> {
    let path = format!("/v1/tokens/{}/revoke", opaque_id(id)?);
    let revoked: TokenRevoked = client.post(&path, &Empty {}).await?;
    out.result(&revoked, || format!("revoked token {id}"))
}
