//! Refusing names that name nothing. A grant to `alcie`, a host group `gpuu` or a group
//! nobody is in would be stored and do nothing, while the person who typed it believes access
//! was given (or, for a host group, that hosts were limited). custody refuses such names and
//! offers the closest known one.
//!
//! What a suggestion reveals is what the caller could learn anyway: users are the project's
//! committers (a grant or group change naming one already tells whether the name exists), a
//! vendor's groups are its own, and host groups are the names its admins allow hosts by.

use store::{UserRecord, VendorRecord};
use types::{GroupName, HostGroupName, UserName};

use crate::error::ApiError;
use crate::state::App;

/// The user named `user`, or the refusal that names the closest existing user.
pub(crate) async fn known_user(app: &App, user: &UserName) -> Result<UserRecord, ApiError> {
    if let Some(found) = app.store.user(user).await? {
        return Ok(found);
    }
    let users = app.store.users().await?;
    Err(unknown(
        "user",
        user.as_str(),
        users.iter().map(|u| u.name.as_str()),
        "the operator creates users with `custody token create`",
    ))
}

/// Refuses a group of `vendor` that has no members: a grant to it would reach nobody.
pub(crate) async fn known_group(
    app: &App,
    vendor: &VendorRecord,
    group: &GroupName,
) -> Result<(), ApiError> {
    let members = app.store.group_members(&vendor.id).await?;
    if members.iter().any(|(g, _)| g == group) {
        return Ok(());
    }
    Err(unknown(
        &format!("group of {}", vendor.name),
        group.as_str(),
        members.iter().map(|(g, _)| g.as_str()),
        &format!(
            "a group exists once it has a member: `custody group add {}/{group} USER`",
            vendor.name
        ),
    ))
}

/// Refuses a host group no enrolled host is in: allowing it would admit no host, while the
/// vendor believes it limited the model to a real set of machines.
pub(crate) async fn known_host_group(app: &App, group: &HostGroupName) -> Result<(), ApiError> {
    let hosts = app.store.hosts().await?;
    let live = || hosts.iter().filter(|h| h.revoked_at.is_none());
    if live().any(|h| &h.group == group) {
        return Ok(());
    }
    Err(unknown(
        "host group",
        group.as_str(),
        live().map(|h| h.group.as_str()),
        "a host group exists once the operator enrolls a host in it: `custody host enroll ... --group GROUP`",
    ))
}

/// The refusal for `wanted` (a `kind` such as "user"), with the closest of `known` when one
/// is close enough to be a typo.
pub(crate) fn unknown<'a>(
    kind: &str,
    wanted: &str,
    known: impl IntoIterator<Item = &'a str>,
    hint: &str,
) -> ApiError {
    let suggestion = closest(wanted, known)
        .map(|name| format!("; did you mean {name}?"))
        .unwrap_or_default();
    ApiError::UnknownName(format!("no {kind} named {wanted}{suggestion} ({hint})"))
}

/// The known name closest to `wanted`, if it is within two edits (one for short names), so a
/// suggestion is a likely typo and never just some other name.
fn closest<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = if wanted.chars().count() <= 4 { 1 } else { 2 };
    known
        .into_iter()
        .filter(|k| *k != wanted)
        .map(|k| (strsim::damerau_levenshtein(wanted, k), k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn suggestions_are_typos_of_known_names_only() {
        // (wanted, known, suggestion)
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            ("alcie", &["alice", "bob"], Some("alice")), // transposition
            ("gpuu", &["gpu", "cpu-01"], Some("gpu")),   // one extra letter
            ("tema", &["team"], Some("team")),
            ("bob", &["rob", "bobby"], Some("rob")),
            ("carol", &["alice", "bob"], None), // nothing close: no guess
            ("ab", &["xy"], None),
            ("no-such-group", &["team", "ops"], None),
            ("alice", &[], None),
            ("mallory", &["mxllxry", "malory"], Some("malory")), // nearest wins
        ];
        for (wanted, known, expected) in cases {
            assert_eq!(
                closest(wanted, known.iter().copied()),
                *expected,
                "{wanted} among {known:?}"
            );
        }
    }
}
