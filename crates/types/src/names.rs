use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NameError;

const MAX_NAME_LEN: usize = 96;

/// The safe character set shared by vendor, model and user names: they appear in URLs, in
/// Hub-style repository ids and in audit entries, so they stay plain.
fn check_simple_name(what: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if value.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            len: value.len(),
            max: MAX_NAME_LEN,
        });
    }
    let bytes = value.as_bytes();
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !bytes[0].is_ascii_alphanumeric() || !bytes.iter().all(|&b| allowed(b)) {
        return Err(NameError::BadCharacters {
            what,
            value: value.chars().take(MAX_NAME_LEN).collect(),
        });
    }
    // The Hugging Face cache names a repository's folder `models--VENDOR--MODEL`: with '--'
    // inside a name, `a--b/c` and `a/b--c` would share one folder (and `custody wipe` could
    // not tell them apart). The Hub refuses both sequences in repository ids too.
    if value.contains("--") || value.contains("..") {
        return Err(NameError::DoubleSeparator {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! simple_name {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: &str) -> Result<Self, NameError> {
                check_simple_name($what, value)?;
                Ok(Self(value.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::string_schema(
                    concat!("a ", $what, ": ASCII letters, digits, '-', '_' and '.', 1 to 96"),
                    Some("^[A-Za-z0-9._-]{1,96}$"),
                )
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

simple_name!(
    /// A model vendor (the tenant), for example `acme`.
    VendorName,
    "vendor name"
);
simple_name!(
    /// A model within a vendor, for example `llama-5-400b`.
    ModelName,
    "model name"
);
simple_name!(
    /// A person or service account that tokens are issued to and grants name.
    UserName,
    "user name"
);

simple_name!(
    /// A named set of users (a team), for example `vllm-committers`. Grants can name a group.
    GroupName,
    "group name"
);
simple_name!(
    /// An exclusive server, as enrolled with the service's host CA, for example `gpu-01`.
    HostName,
    "host name"
);
simple_name!(
    /// A named set of exclusive servers; a vendor allows host groups per model.
    HostGroupName,
    "host group name"
);

/// `VENDOR/MODEL`, the name users type and the Hub-style repository id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoRef {
    pub vendor: VendorName,
    pub model: ModelName,
}

impl RepoRef {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        let Some((vendor, model)) = value.split_once('/') else {
            return Err(NameError::NotVendorModel(value.to_owned()));
        };
        if model.contains('/') {
            return Err(NameError::NotVendorModel(value.to_owned()));
        }
        Ok(Self {
            vendor: VendorName::parse(vendor)?,
            model: ModelName::parse(model)?,
        })
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vendor, self.model)
    }
}

/// What a token holder is. The policy crate decides what each role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Operator,
    VendorAdmin,
    Committer,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Operator,
        Role::VendorAdmin,
        Role::Committer,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::VendorAdmin => "vendor-admin",
            Role::Committer => "committer",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(value: &str) -> Result<Self, NameError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == value)
            .ok_or_else(|| NameError::UnknownRole(value.chars().take(32).collect()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_safe_set_and_refuse_the_rest() {
        let good = ["acme", "Llama-3.1-8B", "a", "x_y", "9lives"];
        for name in good {
            assert!(ModelName::parse(name).is_ok(), "{name}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let bad = [
            "", ".hidden", "-dash", "a b", "a/b", "a..b", "a--b", "ü", "a\0b", "a\nb", &long,
        ];
        for name in bad {
            assert!(VendorName::parse(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn names_map_to_distinct_hugging_face_cache_folders() {
        // `models--a--b--c` could be a--b/c or a/b--c: neither name is accepted.
        for (vendor, model) in [("a--b", "c"), ("a", "b--c")] {
            let refused = VendorName::parse(vendor).is_err() || ModelName::parse(model).is_err();
            assert!(refused, "{vendor}/{model}");
        }
        assert!(RepoRef::parse("a-b/c-d").is_ok());
    }

    #[test]
    fn repo_ref_needs_exactly_one_slash() {
        let r = RepoRef::parse("acme/model-1").unwrap();
        assert_eq!(r.vendor.as_str(), "acme");
        assert_eq!(r.to_string(), "acme/model-1");
        for bad in ["acme", "acme/", "/m", "a/b/c", "../m", "acme/.."] {
            assert!(RepoRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_roundtrip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()).unwrap(), role);
        }
        assert!(Role::parse("root").is_err());
    }
}
