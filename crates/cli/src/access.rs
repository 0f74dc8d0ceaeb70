//! Access commands of a vendor admin: grants, exclusions, embargo windows, the two-person
//! rule and its pending requests. (User groups are in `group.rs`, hosts in `host.rs`.)

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use types::{GroupName, RepoRef, UserName, VendorName};
use wire::Empty;
use wire::access::{
    Embargo, Exclude, Excluded, ExclusionList, ExclusionQuery, PendingAction, PendingList,
    PendingRequest, SetEmbargo, Unexcluded, VendorSettings, VendorSettingsChanged,
};
use wire::models::{GrantRequest, GrantResponse, GrantRevoked, RevokeQuery};

use crate::Global;
use crate::args::{self, opaque_id, parse_time};
use crate::client::Client;
use crate::output::{Output, lines};

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
        expires_in: Option<args::Duration>,
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
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

pub async fn run(command: AccessCommand, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = &Client::from_settings(global)?;
    match command {
        AccessCommand::Grant {
            model,
            to,
            group,
            expires_in,
        } => {
            let who = Grantee::parse(to.as_deref(), group.as_deref())?;
            grant(client, &RepoRef::parse(&model)?, &who, expires_in, out).await
        }
        AccessCommand::Revoke { model, from, group } => {
            let who = Grantee::parse(from.as_deref(), group.as_deref())?;
            revoke(client, &RepoRef::parse(&model)?, &who, out).await
        }
        AccessCommand::Exclude {
            target,
            user,
            remove,
        } => {
            let user = UserName::parse(&user)?;
            if remove {
                unexclude(client, &target, &user, out).await
            } else {
                exclude(client, &target, &user, out).await
            }
        }
        AccessCommand::Exclusions { vendor } => {
            exclusions(client, &VendorName::parse(&vendor)?, out).await
        }
        AccessCommand::Embargo {
            model,
            not_before,
            not_after,
        } => {
            let window = SetEmbargo {
                not_before: not_before.as_deref().map(parse_time).transpose()?,
                not_after: not_after.as_deref().map(parse_time).transpose()?,
            };
            embargo(client, &RepoRef::parse(&model)?, &window, out).await
        }
        AccessCommand::TwoPerson { vendor, setting } => {
            let on = matches!(setting, OnOff::On);
            two_person(client, &VendorName::parse(&vendor)?, on, out).await
        }
        AccessCommand::Pending { vendor } => {
            pending(client, &VendorName::parse(&vendor)?, out).await
        }
        AccessCommand::Approve { id } => approve(client, &id, out).await,
    }
}

async fn grant(
    client: &Client,
    repo: &RepoRef,
    who: &Grantee,
    expires_in: Option<args::Duration>,
    out: &Output,
) -> anyhow::Result<()> {
    let (user, group) = match who {
        Grantee::User(u) => (Some(u.to_string()), None),
        Grantee::Group(g) => (None, Some(g.to_string())),
    };
    let request = GrantRequest {
        user,
        group,
        expires_at: expires_in.map(|d| args::now().saturating_add(d.secs())),
    };
    let granted: GrantResponse = client
        .post(&format!("/v1/models/{repo}/grants"), &request)
        .await?;
    out.result(&granted, || match &granted {
        GrantResponse::Pending(p) => format!(
            "grant of {repo} to {who} is waiting for a second admin: custody approve {}",
            p.pending
        ),
        GrantResponse::Granted(_) => format!("granted {who} access to {repo}"),
    })
}

async fn revoke(
    client: &Client,
    repo: &RepoRef,
    who: &Grantee,
    out: &Output,
) -> anyhow::Result<()> {
    let (name, group) = match who {
        Grantee::User(u) => (u.as_str(), false),
        Grantee::Group(g) => (g.as_str(), true),
    };
    let request = client
        .request(Method::DELETE, &format!("/v1/models/{repo}/grants/{name}"))
        .query(&RevokeQuery { group });
    let revoked: GrantRevoked = client.call(request).await?;
    out.result(&revoked, || format!("revoked {who}'s access to {repo}"))
}

/// `VENDOR` or `VENDOR/MODEL`: the vendor, and the model if one is named.
fn exclusion_target(target: &str) -> anyhow::Result<(VendorName, Option<String>)> {
    Ok(match target.split_once('/') {
        Some(_) => {
            let repo = RepoRef::parse(target)?;
            (repo.vendor, Some(repo.model.to_string()))
        }
        None => (VendorName::parse(target)?, None),
    })
}

async fn exclude(
    client: &Client,
    target: &str,
    user: &UserName,
    out: &Output,
) -> anyhow::Result<()> {
    let (vendor, model) = exclusion_target(target)?;
    let request = Exclude {
        user: user.to_string(),
        model,
    };
    let excluded: Excluded = client
        .post(&format!("/v1/vendors/{vendor}/exclusions"), &request)
        .await?;
    out.result(&excluded, || format!("excluded {user} from {target}"))
}

async fn unexclude(
    client: &Client,
    target: &str,
    user: &UserName,
    out: &Output,
) -> anyhow::Result<()> {
    let (vendor, model) = exclusion_target(target)?;
    let request = client
        .request(
            Method::DELETE,
            &format!("/v1/vendors/{vendor}/exclusions/{user}"),
        )
        .query(&ExclusionQuery { model });
    let lifted: Unexcluded = client.call(request).await?;
    out.result(&lifted, || {
        format!("lifted the exclusion of {user} from {target}")
    })
}

async fn exclusions(client: &Client, vendor: &VendorName, out: &Output) -> anyhow::Result<()> {
    let list: ExclusionList = client
        .get(&format!("/v1/vendors/{vendor}/exclusions"))
        .await?;
    out.result(&list, || {
        lines(&list.exclusions, |e| {
            format!(
                "{}  {}",
                e.user,
                e.model.as_deref().unwrap_or("(every model)")
            )
        })
    })
}

async fn embargo(
    client: &Client,
    repo: &RepoRef,
    window: &SetEmbargo,
    out: &Output,
) -> anyhow::Result<()> {
    let set: Embargo = client
        .put(&format!("/v1/models/{repo}/embargo"), window)
        .await?;
    out.result(&set, || format!("embargo of {repo} set"))
}

async fn two_person(
    client: &Client,
    vendor: &VendorName,
    on: bool,
    out: &Output,
) -> anyhow::Result<()> {
    let changed: VendorSettingsChanged = client
        .put(
            &format!("/v1/vendors/{vendor}/settings"),
            &VendorSettings { two_person: on },
        )
        .await?;
    out.result(&changed, || match &changed.pending {
        Some(id) => format!(
            "turning the two-person rule off waits for a second admin: custody approve {id}"
        ),
        None => format!(
            "two-person rule for {vendor}: {}",
            if on { "on" } else { "off" }
        ),
    })
}

async fn pending(client: &Client, vendor: &VendorName, out: &Output) -> anyhow::Result<()> {
    let list: PendingList = client.get(&format!("/v1/vendors/{vendor}/pending")).await?;
    out.result(&list, || {
        lines(&list.pending, |p| {
            let to = match &p.request {
                PendingAction::Grant { to, .. } => to.as_str(),
                PendingAction::Delete | PendingAction::DisableTwoPerson => "",
            };
            format!(
                "{}  {}  {}  {to}  by {}",
                p.id,
                p.request.kind(),
                p.model.as_deref().unwrap_or("-"),
                p.requested_by
            )
        })
    })
}

async fn approve(client: &Client, id: &str, out: &Output) -> anyhow::Result<()> {
    let approved: PendingRequest = client
        .post(
            &format!("/v1/pending/{}/approve", opaque_id(id)?),
            &Empty {},
        )
        .await?;
    out.result(&approved, || format!("approved request {id}"))
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
}

impl std::fmt::Display for Grantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grantee::User(u) => write!(f, "{u}"),
            Grantee::Group(g) => write!(f, "group {g}"),
        }
    }
}
