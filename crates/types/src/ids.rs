use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NameError;

fn check_lower_hex(
    what: &'static str,
    expected: &'static str,
    len: usize,
    value: &str,
) -> Result<(), NameError> {
    let ok = value.len() == len
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(NameError::BadId {
            what,
            value: value.chars().take(80).collect(),
            expected,
        })
    }
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:literal, $what:literal, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const HEX_LEN: usize = $len;

            pub fn parse(value: &str) -> Result<Self, NameError> {
                check_lower_hex($what, $expected, $len, value)?;
                Ok(Self(value.to_owned()))
            }

            /// From raw bytes, which must be exactly half as many as the hex length.
            pub fn from_bytes(bytes: &[u8; $len / 2]) -> Self {
                Self(hex::encode(bytes))
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

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::string_schema(
                    concat!("a ", $what, ": ", $expected),
                    Some(concat!("^[0-9a-f]{", $len, "}$")),
                )
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

hex_id!(
    /// An immutable revision of a model: 40 lowercase hex characters, like a git commit id, so
    /// Hub clients accept it as a `sha`.
    CommitId,
    40,
    "commit id",
    "40 lowercase hex characters"
);
hex_id!(
    /// The opaque name of a stored object: random, so a storage key says nothing about the
    /// vendor, model or file it holds.
    ObjectId,
    32,
    "object id",
    "32 lowercase hex characters"
);
hex_id!(
    /// A SHA-256 digest in lowercase hex.
    Sha256Hex,
    64,
    "sha256",
    "64 lowercase hex characters"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lowercase_hex_of_fixed_length() {
        let c = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(CommitId::parse(c).unwrap().as_str(), c);
        assert!(CommitId::parse(&c.to_uppercase()).is_err());
        assert!(CommitId::parse(&c[1..]).is_err());
        assert!(ObjectId::parse("zz".repeat(16).as_str()).is_err());
        assert_eq!(Sha256Hex::from_bytes(&[0xab; 32]).as_str(), "ab".repeat(32));
    }
}
