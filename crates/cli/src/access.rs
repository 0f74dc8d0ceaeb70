//! Access commands of a vendor admin: grants, exclusions, embargo windows, the two-person
//! rule and its pending requests, and a model's access at a glance. (A vendor's user groups
//! are in `group.rs`, hosts and their approvals in `host.rs`.)
//!
//! A change that widens access may wait for the vendor's approval (the two-person rule, or a
//! requester who is not the vendor's admin): the server then answers with a pending request,
//! which [`filed`] tells the user about.

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use types::{GroupName, RepoRef, UserName, VendorName};
use wire::Empty;
use wire::access::{
    Embargo, Exclude, Excluded, ExclusionList, ExclusionQuery, Filed, ModelAccess, Outcome,
    PendingAction, PendingList, PendingRequest, SetEmbargo, Unexcluded, VendorSettings,
    VendorSettingsChanged,
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
        /// The user whose direct grant ends
        #[arg(long, conflicts_with = "group", required_unless_present = "group")]
        from: Option<String>,
        /// The vendor's group whose grant ends (its members keep any grant of their own)
        #[arg(long)]
        group: Option<String>,
    },
    /// Exclude a user from a model or from every model of a vendor; wins over any grant
    Exclude {
        /// VENDOR or VENDOR/MODEL
        target: String,
        /// The user to exclude
        user: String,
        /// Lift the exclusion instead
        #[arg(long)]
        remove: bool,
    },
    /// List a vendor's exclusions (vendor admin)
    Exclusions {
        /// The vendor
        vendor: String,
    },
    /// Set or clear a model's embargo window for weights (vendor admin); a window that opens
    /// earlier or closes later waits for approval under the two-person rule
    Embargo {
        /// VENDOR/MODEL
        model: String,
        /// No fetch before this time (RFC 3339, e.g. 2026-12-01T00:00:00Z, or Unix seconds);
        /// given alone, the window's closing time stays as it is
        #[arg(long, required_unless_present_any = ["not_after", "clear"])]
        not_before: Option<String>,
        /// No fetch from this time on; given alone, the window's opening time stays as it is
        #[arg(long)]
        not_after: Option<String>,
        /// Remove the window (weights may be fetched at any time)
        #[arg(long, conflicts_with_all = ["not_before", "not_after"])]
        clear: bool,
    },
    /// Require two people of the vendor for every change that widens access or schedules
    /// destruction (on|off; turning it off waits for a second person)
    TwoPerson {
        /// The vendor
        vendor: String,
        /// on or off
        setting: OnOff,
    },
    /// Requests of a vendor waiting for its admins' approval
    Pending {
        /// The vendor
        vendor: String,
    },
    /// Approve a pending request of your vendor (vendor admin; never your own, nor one about
    /// you)
    Approve {
        /// The request's id (custody pending VENDOR lists them)
        id: String,
    },
    /// End a pending request without carrying it out: reject one of your vendor's (vendor
    /// admin), or cancel your own
    Reject {
        /// The request's id (custody pending VENDOR lists them)
        id: String,
    },
    /// Everything that decides who receives a model's weights: grants, exclusions, groups,
    /// host groups and hosts, embargo, delete-after, the two-person rule, pending requests
    Access {
        /// VENDOR/MODEL
        model: String,
    },
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
            clear: _,
        } => {
            let repo = RepoRef::parse(&model)?;
            let mut window = SetEmbargo {
                not_before: not_before.as_deref().map(parse_time).transpose()?,
                not_after: not_after.as_deref().map(parse_time).transpose()?,
            };
            // One bound given: the other stays (only --clear removes a window).
            if window.not_before.is_none() != window.not_after.is_none() {
                let view: ModelAccess = client.get(&format!("/v1/models/{repo}/access")).await?;
                window.not_before = window.not_before.or(view.embargo.not_before);
                window.not_after = window.not_after.or(view.embargo.not_after);
            }
            embargo(client, &repo, &window, out).await
        }
        AccessCommand::TwoPerson { vendor, setting } => {
            let on = matches!(setting, OnOff::On);
            two_person(client, &VendorName::parse(&vendor)?, on, out).await
        }
        AccessCommand::Pending { vendor } => {
            pending(client, &VendorName::parse(&vendor)?, out).await
        }
        AccessCommand::Approve { id } => approve(client, &id, out).await,
        AccessCommand::Reject { id } => reject(client, &id, out).await,
        AccessCommand::Access { model } => access(client, &RepoRef::parse(&model)?, out).await,
    }
}

/// What a person reads when a change was filed for approval instead of applied.
pub(crate) fn filed(what: &str, filed: &Filed) -> String {
    format!(
        "{what} waits for approval (request {}): {}",
        filed.pending, filed.message
    )
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
        expires_at: None,
        expires_in_secs: expires_in.map(|d| d.secs()),
    };
    let granted: GrantResponse = client
        .post(&format!("/v1/models/{repo}/grants"), &request)
        .await?;
    out.result(&granted, || match &granted {
        GrantResponse::Pending(p) => format!(
            "the grant of {repo} to {who} waits for approval (request {}): {}",
            p.pending, p.message
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
    let lifted: Outcome<Unexcluded> = client.call(request).await?;
    out.result(&lifted, || match &lifted {
        Outcome::Filed(f) => filed(&format!("lifting the exclusion of {user} from {target}"), f),
        Outcome::Done(_) => format!("lifted the exclusion of {user} from {target}"),
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
    let set: Outcome<Embargo> = client
        .put(&format!("/v1/models/{repo}/embargo"), window)
        .await?;
    out.result(&set, || match &set {
        Outcome::Filed(f) => filed(&format!("the new embargo window of {repo}"), f),
        Outcome::Done(e) => format!(
            "embargo of {repo}: {}",
            window_text(e.not_before, e.not_after)
        ),
    })
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

/// A window as a person reads it.
fn window_text(not_before: Option<i64>, not_after: Option<i64>) -> String {
    match (not_before, not_after) {
        (None, None) => "none (weights may be fetched at any time)".into(),
        (Some(b), None) => format!("no fetch before {}", args::rfc3339(b)),
        (None, Some(a)) => format!("no fetch from {} on", args::rfc3339(a)),
        (Some(b), Some(a)) => format!("fetch from {} until {}", args::rfc3339(b), args::rfc3339(a)),
    }
}

/// One line of what a request will do.
fn request_text(p: &PendingRequest) -> String {
    let on = p.model.as_deref().unwrap_or("-");
    match &p.request {
        PendingAction::Grant { to, .. } => format!("grant {on} to {to}"),
        PendingAction::Delete => format!("delete {on}"),
        PendingAction::DisableTwoPerson => "turn the two-person rule off".into(),
        PendingAction::Unexclude { user } => format!("lift the exclusion of {user} from {on}"),
        PendingAction::Embargo {
            not_before,
            not_after,
        } => format!("embargo {on}: {}", window_text(*not_before, *not_after)),
        PendingAction::AllowHostGroup { group } => format!("allow host group {group} for {on}"),
        PendingAction::ApproveHost { host, host_id } => {
            format!("approve host {host} (enrollment {host_id})")
        }
        PendingAction::DeleteAfter { at } => match at {
            Some(t) => format!("delete {on} by itself at {}", args::rfc3339(*t)),
            None => format!("clear the scheduled deletion of {on}"),
        },
        PendingAction::AddGroupMember { group, user } => format!("add {user} to group {group}"),
        PendingAction::EndorseCredential {
            token_id,
            user,
            role,
        } => format!("let {user}'s {role} token {token_id} count here"),
        PendingAction::Budget { budget } => match budget {
            Some(b) => format!(
                "set the egress budget of {on}: {}",
                crate::budget::summary(b)
            ),
            None => format!("remove the egress budget of {on} (nothing limited)"),
        },
    }
}

/// `ID  what  by WHO  (approvals)  expiry`.
fn pending_line(p: &PendingRequest) -> String {
    let approvals = format!("{} of {} approvals", p.approvals.len(), p.approvals_needed);
    let expiry = if p.expired {
        "expired".to_owned()
    } else {
        format!("expires {}", args::rfc3339(p.expires_at))
    };
    format!(
        "{}  {}  by {}  ({approvals})  {expiry}",
        p.id,
        request_text(p),
        p.requested_by
    )
}

async fn pending(client: &Client, vendor: &VendorName, out: &Output) -> anyhow::Result<()> {
    let list: PendingList = client.get(&format!("/v1/vendors/{vendor}/pending")).await?;
    out.result(&list, || lines(&list.pending, pending_line))
}

async fn reject(client: &Client, id: &str, out: &Output) -> anyhow::Result<()> {
    let ended: PendingRequest = client
        .post(&format!("/v1/pending/{}/reject", opaque_id(id)?), &Empty {})
        .await?;
    out.result(&ended, || {
        format!(
            "request {id} ({}) {}: nothing of it takes effect",
            request_text(&ended),
            ended.state
        )
    })
}

async fn approve(client: &Client, id: &str, out: &Output) -> anyhow::Result<()> {
    let approved: PendingRequest = client
        .post(
            &format!("/v1/pending/{}/approve", opaque_id(id)?),
            &Empty {},
        )
        .await?;
    out.result(&approved, || {
        let have = approved.approvals.len();
        if approved.state == "approved" {
            format!(
                "approved request {id} ({}): carried out",
                request_text(&approved)
            )
        } else {
            format!(
                "approved request {id} ({}): {have} of {} approvals; it waits for another person",
                request_text(&approved),
                approved.approvals_needed
            )
        }
    })
}

async fn access(client: &Client, repo: &RepoRef, out: &Output) -> anyhow::Result<()> {
    let view: ModelAccess = client.get(&format!("/v1/models/{repo}/access")).await?;
    out.result(&view, || {
        let mut text = vec![format!("access to {}", view.model)];
        text.push(format!(
            "  two-person rule: {}",
            if view.two_person { "on" } else { "off" }
        ));
        text.push(format!(
            "  embargo: {}",
            window_text(view.embargo.not_before, view.embargo.not_after)
        ));
        text.push(format!(
            "  delete after: {}",
            view.delete_after.map_or("-".into(), args::rfc3339)
        ));
        text.push("  grants:".into());
        for g in &view.grants {
            let until = g
                .expires_at
                .map_or(String::new(), |t| format!(" until {}", args::rfc3339(t)));
            text.push(format!("    {}{until} (by {})", g.to, g.granted_by));
        }
        text.push("  exclusions:".into());
        for e in &view.exclusions {
            let from = e.model.as_deref().map_or("every model", |_| "this model");
            text.push(format!("    {} from {from}", e.user));
        }
        text.push("  groups:".into());
        for m in &view.groups {
            text.push(format!("    {}  {}", m.group, m.user));
        }
        text.push(format!(
            "  host groups: {}",
            view.host_groups
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        text.push("  hosts:".into());
        for h in &view.hosts {
            let state = match (&h.revoked_at, &h.approved_by) {
                (Some(_), _) => "revoked".to_owned(),
                (None, Some(by)) => format!("approved by {by}"),
                (None, None) => "NOT approved: receives nothing".to_owned(),
            };
            text.push(format!("    {}  {}  {state}", h.name, h.group));
        }
        text.push("  pending:".into());
        for p in &view.pending {
            text.push(format!("    {}", pending_line(p)));
        }
        text.join("\n")
    })
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
