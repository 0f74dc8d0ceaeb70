use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NameError;

const MAX_PATH_LEN: usize = 1024;

/// A file's path inside a model folder, `/`-separated, relative, normalised.
///
/// Refused: absolute paths, `.` and `..` segments, empty segments, backslashes, NUL and other
/// control characters. What is left can be joined under an output directory without escaping
/// it, and printed without corrupting a terminal or a log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RepoPath(String);

impl RepoPath {
    pub fn parse(value: &str) -> Result<Self, NameError> {
        if value.is_empty() {
            return Err(NameError::Empty { what: "path" });
        }
        if value.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        if value.len() > MAX_PATH_LEN {
            return Err(NameError::TooLong {
                what: "path",
                len: value.len(),
                max: MAX_PATH_LEN,
            });
        }
        if value.starts_with('/') {
            return Err(NameError::AbsolutePath(value.to_owned()));
        }
        if value.contains('\\') {
            return Err(NameError::Backslash(value.to_owned()));
        }
        for segment in value.split('/') {
            match segment {
                "" => return Err(NameError::EmptySegment(value.to_owned())),
                "." | ".." => return Err(NameError::DotSegment(value.to_owned())),
                _ => {}
            }
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RepoPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for RepoPath {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::string_schema(
            "a file's path in a model: relative, '/'-separated, no '.', '..' or empty parts",
            None,
        )
    }
}

impl utoipa::ToSchema for RepoPath {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nested_relative_paths() {
        for ok in [
            "config.json",
            "a/b/c.safetensors",
            "tokenizer/vocab.txt",
            ".gitattributes",
            "dir.with.dots/x",
            "ünïcode.txt",
        ] {
            assert_eq!(RepoPath::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_escapes_and_control_characters() {
        type Check = fn(&NameError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, NameError::Empty { .. })),
            ("/etc/passwd", |e| matches!(e, NameError::AbsolutePath(_))),
            ("../x", |e| matches!(e, NameError::DotSegment(_))),
            ("a/../../x", |e| matches!(e, NameError::DotSegment(_))),
            ("a/./x", |e| matches!(e, NameError::DotSegment(_))),
            ("a//x", |e| matches!(e, NameError::EmptySegment(_))),
            ("a/", |e| matches!(e, NameError::EmptySegment(_))),
            ("a\0b", |e| matches!(e, NameError::ControlCharacter)),
            ("a\nb", |e| matches!(e, NameError::ControlCharacter)),
            ("a\u{1b}[31m", |e| matches!(e, NameError::ControlCharacter)),
            ("a\\..\\b", |e| matches!(e, NameError::Backslash(_))),
        ];
        for (input, expected) in cases {
            let err = RepoPath::parse(input).unwrap_err();
            assert!(expected(&err), "{input:?} gave {err:?}");
        }
    }
}
