//! Argument types several commands share: durations, points in time, ids the server made.

use anyhow::{Context, bail};

/// A duration flag like `30d`, parsed without pulling a date library into the CLI.
#[derive(Clone, Copy)]
pub struct Duration(pub u64);

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let n: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        let scale = match unit {
            "s" | "" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(format!("invalid duration unit in {s:?} (use s, m, h or d)")),
        };
        n.checked_mul(scale)
            .filter(|secs| i64::try_from(*secs).is_ok())
            .map(Duration)
            .ok_or_else(|| "duration too long".into())
    }
}

impl Duration {
    /// The duration in seconds, as the API takes it.
    pub fn secs(self) -> i64 {
        // `from_str` admits only durations that fit.
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

/// A point in time: RFC 3339 (`2026-12-01T00:00:00Z`) or Unix seconds.
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

/// Unix seconds as RFC 3339, as a person reads a time.
pub fn rfc3339(secs: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Now, in Unix seconds.
/// An id the server made (a pending request, a token, a deletion): hex, checked before it
/// becomes part of a URL path.
pub fn opaque_id(id: &str) -> anyhow::Result<&str> {
    if !crypto::token::is_id(id) {
        bail!("{id:?} is not an id custody made (hexadecimal)");
    }
    Ok(id)
}

/// A key given inline, or the content of the file it names (`--log-key`, `--service-key`,
/// `--vendor-key`, `--witness-key`).
pub fn key_text(arg: &str) -> Result<String, String> {
    let path = std::path::Path::new(arg);
    if path.is_file() {
        return std::fs::read_to_string(path)
            .map_err(|e| format!("reading key file {}: {e}", path.display()));
    }
    Ok(arg.to_owned())
}
