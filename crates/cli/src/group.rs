//! `custody group`: a vendor's user groups (vendor admin). Grants may name a group instead of
//! a user. Groups belong to a vendor, and only its admins change them: adding a member widens
//! access, so under the vendor's two-person rule it waits for a second person.

use anyhow::Context;
use clap::Subcommand;
use types::{GroupName, UserName, VendorName};
use wire::access::{AddMember, GroupMembers, MemberAdded, MemberRemoved, Outcome};

use crate::Global;
use crate::client::Client;
use crate::output::{Output, lines};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Add a user to a vendor's group
    Add {
        /// VENDOR/GROUP
        group: String,
        /// The user (a name a token was issued for)
        user: String,
    },
    /// Remove a user from a vendor's group
    Rm {
        /// VENDOR/GROUP
        group: String,
        /// The user (a name a token was issued for)
        user: String,
    },
    /// List a vendor's groups and their members
    Ls {
        /// The vendor
        vendor: String,
    },
}

/// `VENDOR/GROUP`.
fn vendor_group(value: &str) -> anyhow::Result<(VendorName, GroupName)> {
    let (vendor, group) = value.split_once('/').with_context(|| {
        format!("{value:?}: groups belong to a vendor; name one as VENDOR/GROUP (e.g. acme/team)")
    })?;
    Ok((VendorName::parse(vendor)?, GroupName::parse(group)?))
}

pub async fn run(command: GroupCommand, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = &Client::from_settings(global)?;
    match command {
        GroupCommand::Add { group, user } => {
            let ((vendor, group), user) = (vendor_group(&group)?, UserName::parse(&user)?);
            let request = AddMember {
                user: user.to_string(),
            };
            let added: Outcome<MemberAdded> = client
                .post(
                    &format!("/v1/vendors/{vendor}/groups/{group}/members"),
                    &request,
                )
                .await?;
            out.result(&added, || match &added {
                Outcome::Filed(f) => {
                    crate::access::filed(&format!("adding {user} to {vendor}/{group}"), f)
                }
                Outcome::Done(_) => format!("added {user} to {vendor}/{group}"),
            })
        }
        GroupCommand::Rm { group, user } => {
            let ((vendor, group), user) = (vendor_group(&group)?, UserName::parse(&user)?);
            let removed: MemberRemoved = client
                .delete(&format!(
                    "/v1/vendors/{vendor}/groups/{group}/members/{user}"
                ))
                .await?;
            out.result(&removed, || format!("removed {user} from {vendor}/{group}"))
        }
        GroupCommand::Ls { vendor } => {
            let vendor = VendorName::parse(&vendor)?;
            let list: GroupMembers = client.get(&format!("/v1/vendors/{vendor}/groups")).await?;
            out.result(&list, || {
                lines(&list.members, |m| {
                    format!("{vendor}/{}  {}", m.group, m.user)
                })
            })
        }
    }
}
