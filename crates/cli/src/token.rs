//! `custody token`: tokens (operator): create one (its secret is printed once), list them
//! (never a secret), revoke one.

use clap::Subcommand;
use wire::Empty;
use wire::admin::{
    CreateToken, RotateToken, TokenCreated, TokenInfo, TokenList, TokenRevoked, UserList, WhoAmI,
};

use crate::Global;
use crate::args::{self, opaque_id};
use crate::client::Client;
use crate::output::{Output, lines};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once
    Create {
        /// What the holder may do: operator (runs the service), vendor-admin (one vendor's
        /// models and access), committer (fetches what it is granted), auditor (reads one
        /// vendor's record)
        #[arg(long, value_parser = ["operator", "vendor-admin", "committer", "auditor"])]
        role: String,
        /// The vendor a vendor-admin or auditor token belongs to
        #[arg(long)]
        vendor: Option<String>,
        /// Who the token is for (grants name this user)
        #[arg(long)]
        name: String,
        /// Lifetime such as 30d or 12h
        #[arg(long)]
        expires_in: Option<args::Duration>,
    },
    /// List tokens: ids, roles, owners, expiry, revocation, where each counts (never
    /// secrets)
    Ls,
    /// Revoke a token by id (the part before the dot)
    Revoke {
        /// The token's id: the part before the dot (custody token ls lists them)
        id: String,
    },
    /// Replace your own token by a new one that counts exactly where it did; the old one is
    /// revoked (run it once you received a token someone else saw, such as the operator)
    Rotate {
        /// Lifetime of the new token, such as 30d
        #[arg(long)]
        expires_in: Option<args::Duration>,
    },
    /// Every person the service knows, with their ids (operator)
    Users,
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
        TokenCommand::Rotate { expires_in } => {
            let request = RotateToken {
                expires_in_secs: expires_in.map(args::Duration::secs),
            };
            let created: TokenCreated = client.post("/v1/tokens/rotate", &request).await?;
            out.result(&created, || created.token.clone())
        }
        TokenCommand::Users => {
            let list: UserList = client.get("/v1/users").await?;
            out.result(&list, || {
                lines(&list.users, |u| {
                    format!(
                        "{}  {}  created {} by {}",
                        u.name,
                        u.id,
                        args::rfc3339(u.created_at),
                        u.created_by
                    )
                })
            })
        }
    }
}

/// `custody whoami`: who the token says you are, where it counts, and what waits.
pub async fn whoami(global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = Client::from_settings(global)?;
    let me: WhoAmI = client.get("/v1/whoami").await?;
    out.result(&me, || {
        let mut text = vec![format!(
            "{} ({}, user id {}), token {}",
            me.user,
            match &me.vendor {
                Some(v) => format!("{} of {v}", me.role),
                None => me.role.to_string(),
            },
            me.user_id,
            me.token_id
        )];
        text.push(match me.expires_at {
            Some(t) => format!("expires {}", args::rfc3339(t)),
            None => "never expires".into(),
        });
        if me.all_vendors {
            text.push("counts at every vendor".into());
        } else if !me.endorsed_by.is_empty() {
            let names: Vec<_> = me.endorsed_by.iter().map(ToString::to_string).collect();
            text.push(format!("counts at: {}", names.join(", ")));
        }
        for a in &me.awaiting {
            text.push(format!(
                "waits for {}'s approval (request {}): until then it gets nothing of {}'s",
                a.vendor, a.pending, a.vendor
            ));
        }
        if let Some(host) = &me.host {
            text.push(format!("from exclusive host {host}"));
        }
        if !me.grants.is_empty() {
            text.push("grants (fetching also needs an allowed host and no embargo):".into());
        }
        for g in &me.grants {
            let via = match &g.group {
                Some(group) => format!("through group {group}"),
                None => "granted to you".to_owned(),
            };
            let until = match g.expires_at {
                Some(t) => format!(", until {}", args::rfc3339(t)),
                None => String::new(),
            };
            text.push(format!("  {}  {via}{until}", g.model));
        }
        if me.grants.is_empty() && me.role == types::Role::Committer {
            text.push("no grants: a vendor admin grants access (custody grant)".into());
        }
        text.join("\n")
    })
}

async fn create(client: &Client, request: &CreateToken, out: &Output) -> anyhow::Result<()> {
    let created: TokenCreated = client.post("/v1/tokens", request).await?;
    // What the token is good for goes to stderr, so `$(custody token create …)` captures
    // the token alone.
    if !out.is_json() {
        if !created.new_user {
            eprintln!(
                "custody: {} already exists (user id {}): this is another credential for that \
                 same person",
                created.name, created.user_id
            );
        }
        for a in &created.awaiting {
            eprintln!(
                "custody: it counts for {}'s models only once {}'s admins approve request {}",
                a.vendor, a.vendor, a.pending
            );
        }
    }
    out.result(&created, || created.token.clone())
}

async fn list(client: &Client, out: &Output) -> anyhow::Result<()> {
    let list: TokenList = client.get("/v1/tokens").await?;
    out.result(&list, || {
        lines(&list.tokens, |t: &TokenInfo| {
            let state = if t.revoked_at.is_some() {
                "revoked"
            } else if t.expired {
                "expired"
            } else {
                "active"
            };
            let counts = if t.all_vendors {
                "everywhere".to_owned()
            } else if t.endorsed_by.is_empty() {
                "nowhere yet".to_owned()
            } else {
                t.endorsed_by
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            format!(
                "{}  {}  {}  {}  {state}  counts: {counts}",
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
