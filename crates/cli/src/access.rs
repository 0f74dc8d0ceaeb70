//! Access commands: grants, exclusions, embargo windows, the two-person rule, user groups,
//! exclusive hosts (key, signing request, enrollment, revocation), tokens, and offline
//! validation of a policy directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use types::{GroupName, HostGroupName, HostName, RepoRef, UserName, VendorName};

use crate::Global;
use crate::client::Client;
use crate::humantime_arg;
use crate::output::{self, Output};

#[derive(Subcommand)]
pub enum AccessCommand {
    /// Grant a user or a group read access to a model (vendor admin)
    Grant {
        /// VENDOR/MODEL
        model: String,
        /// A user
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        to: Option<String>,
        /// A group of users
        #[arg(long)]
        group: Option<String>,
        /// The grant stops counting after this long, such as 30d or 12h
        #[arg(long)]
        expires_in: Option<humantime_arg::Duration>,
    },
    /// Revoke a user's or a group's grant on a model (vendor admin)
    Revoke {
        /// VENDOR/MODEL
        model: String,
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        from: Option<String>,
        #[arg(long)]
        group: Option<String>,
    },
    /// Exclude a user from a model or from every model of a vendor; wins over any grant
    Exclude {
        /// VENDOR or VENDOR/MODEL
        target: String,
        user: String,
        /// Lift the exclusion instead
        #[arg(long)]
        remove: bool,
    },
    /// List a vendor's exclusions (vendor admin)
    Exclusions { vendor: String },
    /// Set or clear a model's embargo window for weights (vendor admin)
    Embargo {
        /// VENDOR/MODEL
        model: String,
        /// No fetch before this time (RFC 3339, e.g. 2026-12-01T00:00:00Z, or Unix seconds)
        #[arg(long)]
        not_before: Option<String>,
        /// No fetch from this time on
        #[arg(long)]
        not_after: Option<String>,
    },
    /// Require a second vendor admin's approval for grants and deletions (on|off)
    TwoPerson { vendor: String, setting: OnOff },
    /// Requests of a vendor waiting for a second admin's approval
    Pending { vendor: String },
    /// Approve another admin's pending request (vendor admin)
    Approve { id: String },
    /// User groups (operator)
    #[command(subcommand)]
    Group(GroupCommand),
    /// Exclusive hosts: key and signing request, enrollment, revocation
    #[command(subcommand)]
    Host(HostCommand),
    /// Check a policy directory (schema.cedarschema and *.cedar) offline, strictly
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Add a user to a group
    Add { group: String, user: String },
    /// Remove a user from a group
    Rm { group: String, user: String },
    /// List groups and their members
    Ls,
}

#[derive(Subcommand)]
pub enum HostCommand {
    /// On the host: make its private key (never leaves this machine) and a signing request
    Csr {
        /// The host's name, as it will be enrolled
        #[arg(long)]
        name: String,
        /// Directory for host.key (mode 0600) and host.csr
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a host's request into a certificate and enroll it in a host group (operator)
    Enroll {
        /// The host's signing request (host.csr)
        csr: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        group: String,
        /// Where to write the certificate (give it to the host as CUSTODY_HOST_CERT)
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke a host: refused from its next request on (operator)
    Revoke { name: String },
    /// List enrolled hosts (operator)
    Ls,
    /// Let a host group's hosts receive a model's weights (vendor admin)
    Allow {
        /// VENDOR/MODEL
        model: String,
        group: String,
    },
    /// Withdraw a host group from a model (vendor admin)
    Disallow {
        /// VENDOR/MODEL
        model: String,
        group: String,
    },
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory (default: ./policies)
    Validate { dir: Option<PathBuf> },
}

/// Token listing and revocation, added to `custody token`.
#[derive(Subcommand)]
pub enum TokenAdmin {
    /// List tokens: ids, roles, owners, expiry, revocation (never secrets)
    Ls,
    /// Revoke a token by id (the part before the dot)
    Revoke { id: String },
}

pub fn parse_time(value: &str) -> anyhow::Result<i64> {
    if let Ok(secs) = value.parse::<i64>() {
        return Ok(secs);
    }
    let t = humantime::parse_rfc3339_weak(value)
        .with_context(|| format!("{value:?} is neither RFC 3339 nor Unix seconds"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .context("time before 1970")?
        .as_secs() as i64)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub async fn run(command: AccessCommand, global: &Global, out: &Output) -> anyhow::Result<()> {
    match command {
        AccessCommand::Policy(PolicyCommand::Validate { dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("policies"));
            let summary = policy::validate(&dir)
                .with_context(|| format!("{} is not a valid policy set", dir.display()))?;
            let v = json!({ "dir": dir, "valid": true, "summary": format!("{summary:?}") });
            out.result(&v, || format!("{}: valid ({summary:?})", dir.display()));
            Ok(())
        }
        AccessCommand::Host(HostCommand::Csr { name, out: dir }) => host_csr(&name, &dir, out),
        command => {
            let client = Client::from_settings(global)?;
            run_remote(command, &client, out).await
        }
    }
}

async fn run_remote(command: AccessCommand, client: &Client, out: &Output) -> anyhow::Result<()> {
    match command {
        AccessCommand::Grant {
            model,
            to,
            group,
            expires_in,
        } => {
            let repo = RepoRef::parse(&model)?;
            let who = Grantee::parse(to.as_deref(), group.as_deref())?;
            let mut body = who.body();
            if let Some(d) = expires_in {
                body["expires_at"] = json!(now().saturating_add(d.0 as i64));
            }
            let v = client
                .post_json(&format!("/v1/models/{repo}/grants"), &body)
                .await?;
            out.result(&v, || match v["pending"].as_str() {
                Some(id) => format!(
                    "grant of {repo} to {who} is waiting for a second admin: custody approve {id}"
                ),
                None => format!("granted {who} access to {repo}"),
            });
        }
        AccessCommand::Revoke { model, from, group } => {
            let repo = RepoRef::parse(&model)?;
            let who = Grantee::parse(from.as_deref(), group.as_deref())?;
            let path = who.grant_path(&repo);
            let v = client.delete_json(&path).await?;
            out.result(&v, || format!("revoked {who}'s access to {repo}"));
        }
        AccessCommand::Exclude {
            target,
            user,
            remove,
        } => {
            let user = UserName::parse(&user)?;
            let (vendor, model) = match target.split_once('/') {
                Some(_) => {
                    let repo = RepoRef::parse(&target)?;
                    (repo.vendor, Some(repo.model))
                }
                None => (VendorName::parse(&target)?, None),
            };
            let v = if remove {
                let query = model
                    .as_ref()
                    .map(|m| format!("?model={m}"))
                    .unwrap_or_default();
                client
                    .delete_json(&format!("/v1/vendors/{vendor}/exclusions/{user}{query}"))
                    .await?
            } else {
                client
                    .post_json(
                        &format!("/v1/vendors/{vendor}/exclusions"),
                        &json!({ "user": user, "model": model }),
                    )
                    .await?
            };
            out.result(&v, || {
                let verb = if remove {
                    "lifted the exclusion of"
                } else {
                    "excluded"
                };
                format!("{verb} {user} from {target}")
            });
        }
        AccessCommand::Exclusions { vendor } => {
            let vendor = VendorName::parse(&vendor)?;
            let v = client
                .get_json(&format!("/v1/vendors/{vendor}/exclusions"))
                .await?;
            out.result(&v, || {
                output::lines(&v["exclusions"], |e| {
                    format!(
                        "{}  {}",
                        e["user"].as_str().unwrap_or(""),
                        e["model"].as_str().unwrap_or("(every model)")
                    )
                })
            });
        }
        AccessCommand::Embargo {
            model,
            not_before,
            not_after,
        } => {
            let repo = RepoRef::parse(&model)?;
            let body = json!({
                "not_before": not_before.as_deref().map(parse_time).transpose()?,
                "not_after": not_after.as_deref().map(parse_time).transpose()?,
            });
            let v = client
                .put_json(&format!("/v1/models/{repo}/embargo"), &body)
                .await?;
            out.result(&v, || format!("embargo of {repo} set"));
        }
        AccessCommand::TwoPerson { vendor, setting } => {
            let vendor = VendorName::parse(&vendor)?;
            let on = matches!(setting, OnOff::On);
            let v = client
                .put_json(
                    &format!("/v1/vendors/{vendor}/settings"),
                    &json!({ "two_person": on }),
                )
                .await?;
            out.result(&v, || match v["pending"].as_str() {
                Some(id) => format!(
                    "turning the two-person rule off waits for a second admin: custody approve {id}"
                ),
                None => format!(
                    "two-person rule for {vendor}: {}",
                    if on { "on" } else { "off" }
                ),
            });
        }
        AccessCommand::Pending { vendor } => {
            let vendor = VendorName::parse(&vendor)?;
            let v = client
                .get_json(&format!("/v1/vendors/{vendor}/pending"))
                .await?;
            out.result(&v, || {
                output::lines(&v["pending"], |p| {
                    format!(
                        "{}  {}  {}  {}  by {}",
                        p["id"].as_str().unwrap_or(""),
                        p["request"]["kind"].as_str().unwrap_or(""),
                        p["model"].as_str().unwrap_or("-"),
                        p["request"]["to"].as_str().unwrap_or(""),
                        p["requested_by"].as_str().unwrap_or("")
                    )
                })
            });
        }
        AccessCommand::Approve { id } => {
            let v = client
                .post_json(
                    &format!("/v1/pending/{}/approve", crate::client::opaque_id(&id)?),
                    &json!({}),
                )
                .await?;
            out.result(&v, || format!("approved request {id}"));
        }
        AccessCommand::Group(GroupCommand::Add { group, user }) => {
            let group = GroupName::parse(&group)?;
            let user = UserName::parse(&user)?;
            let v = client
                .post_json(
                    &format!("/v1/groups/{group}/members"),
                    &json!({ "user": user }),
                )
                .await?;
            out.result(&v, || format!("added {user} to group {group}"));
        }
        AccessCommand::Group(GroupCommand::Rm { group, user }) => {
            let group = GroupName::parse(&group)?;
            let user = UserName::parse(&user)?;
            let v = client
                .delete_json(&format!("/v1/groups/{group}/members/{user}"))
                .await?;
            out.result(&v, || format!("removed {user} from group {group}"));
        }
        AccessCommand::Group(GroupCommand::Ls) => {
            let v = client.get_json("/v1/groups").await?;
            out.result(&v, || {
                output::lines(&v["members"], |m| {
                    format!(
                        "{}  {}",
                        m["group"].as_str().unwrap_or(""),
                        m["user"].as_str().unwrap_or("")
                    )
                })
            });
        }
        AccessCommand::Host(HostCommand::Enroll {
            csr,
            name,
            group,
            out: cert_out,
        }) => {
            let name = HostName::parse(&name)?;
            let group = HostGroupName::parse(&group)?;
            let csr_pem = std::fs::read_to_string(&csr)
                .with_context(|| format!("reading {}", csr.display()))?;
            let v = client
                .post_json(
                    "/v1/hosts",
                    &json!({ "name": name, "group": group, "csr": csr_pem }),
                )
                .await?;
            let cert = v["certificate"]
                .as_str()
                .context("the server returned no certificate")?;
            write_new(&cert_out, cert.as_bytes(), 0o644)?;
            out.result(&v, || {
                format!(
                    "enrolled {name} in host group {group}; certificate written to {}",
                    cert_out.display()
                )
            });
        }
        AccessCommand::Host(HostCommand::Revoke { name }) => {
            let name = HostName::parse(&name)?;
            let v = client
                .post_json(&format!("/v1/hosts/{name}/revoke"), &json!({}))
                .await?;
            out.result(&v, || format!("revoked host {name}"));
        }
        AccessCommand::Host(HostCommand::Ls) => {
            let v = client.get_json("/v1/hosts").await?;
            out.result(&v, || {
                output::lines(&v["hosts"], |h| {
                    format!(
                        "{}  {}  {}",
                        h["name"].as_str().unwrap_or(""),
                        h["group"].as_str().unwrap_or(""),
                        if h["revoked_at"].is_null() {
                            "active"
                        } else {
                            "revoked"
                        }
                    )
                })
            });
        }
        AccessCommand::Host(HostCommand::Allow { model, group }) => {
            let repo = RepoRef::parse(&model)?;
            let group = HostGroupName::parse(&group)?;
            let v = client
                .post_json(
                    &format!("/v1/models/{repo}/host-groups"),
                    &json!({ "group": group }),
                )
                .await?;
            out.result(&v, || format!("hosts of group {group} may receive {repo}"));
        }
        AccessCommand::Host(HostCommand::Disallow { model, group }) => {
            let repo = RepoRef::parse(&model)?;
            let group = HostGroupName::parse(&group)?;
            let v = client
                .delete_json(&format!("/v1/models/{repo}/host-groups/{group}"))
                .await?;
            out.result(&v, || {
                format!("hosts of group {group} may no longer receive {repo}")
            });
        }
        AccessCommand::Host(HostCommand::Csr { .. }) | AccessCommand::Policy(_) => {
            bail!("this command runs locally, without a server")
        }
    }
    Ok(())
}

pub async fn run_token_admin(
    command: TokenAdmin,
    global: &Global,
    out: &Output,
) -> anyhow::Result<()> {
    let client = Client::from_settings(global)?;
    match command {
        TokenAdmin::Ls => {
            let v = client.get_json("/v1/tokens").await?;
            out.result(&v, || {
                output::lines(&v["tokens"], |t| {
                    let state = if !t["revoked_at"].is_null() {
                        "revoked"
                    } else if t["expires_at"].as_i64().is_some_and(|e| e <= now()) {
                        "expired"
                    } else {
                        "active"
                    };
                    format!(
                        "{}  {}  {}  {}  {state}",
                        t["id"].as_str().unwrap_or(""),
                        t["role"].as_str().unwrap_or(""),
                        t["vendor"].as_str().unwrap_or("-"),
                        t["name"].as_str().unwrap_or("")
                    )
                })
            });
        }
        TokenAdmin::Revoke { id } => {
            let v = client
                .post_json(
                    &format!("/v1/tokens/{}/revoke", crate::client::opaque_id(&id)?),
                    &json!({}),
                )
                .await?;
            out.result(&v, || format!("revoked token {id}"));
        }
    }
    Ok(())
}

/// Who a grant names, parsed once from `--to`/`--from` or `--group`.
enum Grantee {
    User(UserName),
    Group(GroupName),
}

impl Grantee {
    fn parse(user: Option<&str>, group: Option<&str>) -> anyhow::Result<Grantee> {
        match (user, group) {
            (Some(u), None) => Ok(Grantee::User(UserName::parse(u)?)),
            (None, Some(g)) => Ok(Grantee::Group(GroupName::parse(g)?)),
            _ => bail!("name exactly one of a user or a group"),
        }
    }

    /// The grant request's body.
    fn body(&self) -> Value {
        match self {
            Grantee::User(u) => json!({ "user": u }),
            Grantee::Group(g) => json!({ "group": g }),
        }
    }

    /// The path of this grantee's grant on `repo` (for revocation).
    fn grant_path(&self, repo: &RepoRef) -> String {
        match self {
            Grantee::User(u) => format!("/v1/models/{repo}/grants/{u}"),
            Grantee::Group(g) => format!("/v1/models/{repo}/grants/{g}?group=true"),
        }
    }
}

impl std::fmt::Display for Grantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grantee::User(u) => write!(f, "{u}"),
            Grantee::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// `custody host csr`: the key is made here and written with mode 0600; only the request
/// (public) goes to the operator.
fn host_csr(name: &str, dir: &Path, out: &Output) -> anyhow::Result<()> {
    let name = HostName::parse(name)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (key_pem, csr_pem) = crypto::host_ca::host_key_and_csr(name.as_str())?;
    let key_path = dir.join("host.key");
    let csr_path = dir.join("host.csr");
    write_new(&key_path, key_pem.as_bytes(), 0o600)?;
    write_new(&csr_path, csr_pem.as_bytes(), 0o644)?;
    let v = json!({ "key": key_path, "csr": csr_path });
    out.result(&v, || {
        format!(
            "wrote {} (keep it on this host) and {} (send it to the operator for `custody host enroll`)",
            key_path.display(),
            csr_path.display()
        )
    });
    Ok(())
}

/// Writes a file that must not exist yet, with `mode`, durably.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}
