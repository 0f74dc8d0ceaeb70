//! `custody group`: user groups (operator). Grants may name a group instead of a user.

use clap::Subcommand;
use types::{GroupName, UserName};
use wire::access::{AddMember, GroupMembers, MemberAdded, MemberRemoved};

use crate::Global;
use crate::client::Client;
use crate::output::{Output, lines};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Add a user to a group
    Add { group: String, user: String },
    /// Remove a user from a group
    Rm { group: String, user: String },
    /// List groups and their members
    Ls,
}

pub async fn run(command: GroupCommand, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = &Client::from_settings(global)?;
    match command {
        GroupCommand::Add { group, user } => {
            let (group, user) = (GroupName::parse(&group)?, UserName::parse(&user)?);
            let request = AddMember {
                user: user.to_string(),
            };
            let added: MemberAdded = client
                .post(&format!("/v1/groups/{group}/members"), &request)
                .await?;
            out.result(&added, || format!("added {user} to group {group}"))
        }
        GroupCommand::Rm { group, user } => {
            let (group, user) = (GroupName::parse(&group)?, UserName::parse(&user)?);
            let removed: MemberRemoved = client
                .delete(&format!("/v1/groups/{group}/members/{user}"))
                .await?;
            out.result(&removed, || format!("removed {user} from group {group}"))
        }
        GroupCommand::Ls => {
            let list: GroupMembers = client.get("/v1/groups").await?;
            out.result(&list, || {
                lines(&list.members, |m| format!("{}  {}", m.group, m.user))
            })
        }
    }
}
