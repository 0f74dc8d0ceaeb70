//! `custody budget`: a model's egress budget, shown with its current use, or changed. The
//! flags given change those limits only; the rest of the budget stays (`none` removes one
//! limit, `--clear` the whole budget). A change that lets more leave waits for approval under
//! the vendor's two-person rule.

use anyhow::bail;
use clap::Args;
use types::RepoRef;
use wire::access::Outcome;
use wire::budget::{Budget, BudgetView, ByteLimit, SetBudget};

use crate::Global;
use crate::access::filed;
use crate::args;
use crate::client::Client;
use crate::output::Output;

/// The window a new budget gets when `--window` is not given.
const DEFAULT_WINDOW_SECS: u64 = 86_400;

#[derive(Args)]
pub struct BudgetArgs {
    /// VENDOR/MODEL
    model: String,
    /// Bytes one host may receive per window: a multiple of the model's size (2x, 1.5x),
    /// bytes with a unit (500GiB, 10GB, 4096), or none
    #[arg(long, value_name = "LIMIT")]
    per_host: Option<LimitArg>,
    /// Bytes one person may receive per window over all hosts, as --per-host
    #[arg(long, value_name = "LIMIT")]
    per_user: Option<LimitArg>,
    /// The rolling window of the byte limits, such as 24h, 7d or 30s (a new budget: 24h)
    #[arg(long)]
    window: Option<args::Duration>,
    /// How many distinct hosts may hold the model (a number, or none)
    #[arg(long, value_name = "N")]
    max_hosts: Option<CountArg>,
    /// How many fetches of the model one host may run at once (a number, or none)
    #[arg(long, value_name = "N")]
    per_host_concurrency: Option<CountArg>,
    /// Remove the whole budget: nothing is limited
    #[arg(long, conflicts_with_all = ["per_host", "per_user", "window", "max_hosts", "per_host_concurrency"])]
    clear: bool,
}

/// A byte limit flag, or `none`.
#[derive(Clone, Copy)]
struct LimitArg(Option<ByteLimit>);

impl std::str::FromStr for LimitArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") {
            return Ok(LimitArg(None));
        }
        if let Some(times) = s.strip_suffix(['x', 'X']) {
            return thousandths(times)
                .map(|m| LimitArg(Some(ByteLimit::ModelSizeMilli(m))))
                .ok_or_else(|| format!("invalid multiple {s:?} (such as 2x or 1.5x)"));
        }
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("invalid byte limit {s:?} (such as 2x, 500GiB or none)"))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1000,
            "MB" => 1000u64.pow(2),
            "GB" => 1000u64.pow(3),
            "TB" => 1000u64.pow(4),
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => {
                return Err(format!(
                    "invalid unit {other:?} in {s:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                ));
            }
        };
        n.checked_mul(scale)
            .filter(|b| i64::try_from(*b).is_ok())
            .map(|b| LimitArg(Some(ByteLimit::Bytes(b))))
            .ok_or_else(|| format!("byte limit {s:?} too large"))
    }
}

/// `1.5` as 1500: at most three decimals.
fn thousandths(s: &str) -> Option<u64> {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if fraction.len() > 3 || (whole.is_empty() && fraction.is_empty()) {
        return None;
    }
    let all_digits = |t: &str| t.chars().all(|c| c.is_ascii_digit());
    if !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: u64 = format!("{fraction:0<3}").parse().ok()?;
    whole.checked_mul(1000)?.checked_add(fraction)
}

/// A count flag, or `none`.
#[derive(Clone, Copy)]
struct CountArg(Option<u64>);

impl std::str::FromStr for CountArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(CountArg(None));
        }
        s.trim()
            .parse()
            .map(|n| CountArg(Some(n)))
            .map_err(|_| format!("invalid number {s:?} (a whole number, or none)"))
    }
}

pub async fn run(args: BudgetArgs, global: &Global, out: &Output) -> anyhow::Result<()> {
    let client = &Client::from_settings(global)?;
    let repo = RepoRef::parse(&args.model)?;
    let path = format!("/v1/models/{repo}/budget");
    let changes = args.per_host.is_some()
        || args.per_user.is_some()
        || args.window.is_some()
        || args.max_hosts.is_some()
        || args.per_host_concurrency.is_some();
    if !changes && !args.clear {
        let view: BudgetView = client.get(&path).await?;
        return out.result(&view, || show(&view));
    }
    let budget = if args.clear {
        None
    } else {
        // Who may not read the budget may not set it either: the server's refusal of the
        // change itself says so, so the change goes ahead from an empty budget.
        let current = match client.get::<BudgetView>(&path).await {
            Ok(view) => view.budget,
            Err(e) if refused(&e) => None,
            Err(e) => return Err(e.context("reading the current budget to change it")),
        };
        let mut b = current.unwrap_or(Budget {
            window_secs: DEFAULT_WINDOW_SECS,
            per_host: None,
            per_user: None,
            max_hosts: None,
            per_host_concurrency: None,
        });
        if let Some(w) = args.window {
            if w.0 == 0 {
                bail!("the window must be at least one second");
            }
            b.window_secs = w.0;
        }
        if let Some(LimitArg(l)) = args.per_host {
            b.per_host = l;
        }
        if let Some(LimitArg(l)) = args.per_user {
            b.per_user = l;
        }
        if let Some(CountArg(n)) = args.max_hosts {
            b.max_hosts = n;
        }
        if let Some(CountArg(n)) = args.per_host_concurrency {
            b.per_host_concurrency = n;
        }
        Some(b)
    };
    let set: Outcome<BudgetView> = client.put(&path, &SetBudget { budget }).await?;
    out.result(&set, || match &set {
        Outcome::Filed(f) => filed(&format!("the new egress budget of {repo}"), f),
        Outcome::Done(view) => show(view),
    })
}

/// Whether the server refused the caller (rather than failed).
fn refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::client::ServerError>()
        .is_some_and(|s| s.status == reqwest::StatusCode::FORBIDDEN)
}

fn bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        format!("{n} bytes ({})", indicatif::BinaryBytes(n))
    }
}

fn limit_text(limit: Option<ByteLimit>, model_size: u64) -> String {
    match limit {
        None => "none".to_owned(),
        Some(ByteLimit::Bytes(b)) => bytes(b),
        Some(ByteLimit::ModelSizeMilli(m)) => {
            let b = u128::from(model_size) * u128::from(m) / 1000;
            format!(
                "{}.{:03}x the model's size, now {}",
                m / 1000,
                m % 1000,
                bytes(u64::try_from(b).unwrap_or(u64::MAX))
            )
        }
    }
}

fn count_text(n: Option<u64>) -> String {
    n.map_or_else(|| "none".to_owned(), |n| n.to_string())
}

/// A budget on one line (the model's size unknown: multiples stay multiples).
pub(crate) fn summary(b: &Budget) -> String {
    let limit = |l: Option<ByteLimit>| match l {
        None => "none".to_owned(),
        Some(ByteLimit::Bytes(n)) => bytes(n),
        Some(ByteLimit::ModelSizeMilli(m)) => format!("{}.{:03}x", m / 1000, m % 1000),
    };
    format!(
        "per host {}, per user {} per {}, max hosts {}, per-host concurrency {}",
        limit(b.per_host),
        limit(b.per_user),
        humantime::format_duration(std::time::Duration::from_secs(b.window_secs)),
        count_text(b.max_hosts),
        count_text(b.per_host_concurrency)
    )
}

/// The budget and its use, as a person reads them.
fn show(view: &BudgetView) -> String {
    let Some(b) = &view.budget else {
        return format!(
            "{} has no egress budget: nothing is limited (set one with `custody budget {} \
             --per-host 2x --window 24h`)",
            view.model, view.model
        );
    };
    let mut lines = vec![format!("egress budget of {}", view.model)];
    if let (Some(by), Some(at)) = (&view.set_by, view.set_at) {
        lines[0].push_str(&format!(" (set by {by} at {})", args::rfc3339(at)));
    }
    let window = humantime::format_duration(std::time::Duration::from_secs(b.window_secs));
    lines.push(format!("  window:               {window}"));
    lines.push(format!(
        "  per host:             {}",
        limit_text(b.per_host, view.model_size)
    ));
    lines.push(format!(
        "  per user:             {}",
        limit_text(b.per_user, view.model_size)
    ));
    lines.push(format!(
        "  max hosts:            {}",
        count_text(b.max_hosts)
    ));
    lines.push(format!(
        "  per-host concurrency: {}",
        count_text(b.per_host_concurrency)
    ));
    lines.push(format!(
        "  model size:           {}",
        bytes(view.model_size)
    ));
    lines.push(format!("use in the last {window}:"));
    if view.hosts.is_empty() && view.users.is_empty() {
        lines.push("  nothing fetched".to_owned());
    }
    for (kind, list) in [("host", &view.hosts), ("user", &view.users)] {
        for u in list {
            let of = u
                .limit
                .map(|l| format!(" of {}", bytes(l)))
                .unwrap_or_default();
            lines.push(format!("  {kind} {}: {}{of}", u.name, bytes(u.bytes)));
        }
    }
    if !view.holding_hosts.is_empty() {
        lines.push(format!(
            "hosts holding the model: {} ({})",
            view.holding_hosts.len(),
            view.holding_hosts.join(", ")
        ));
    }
    for f in &view.in_flight {
        lines.push(format!("fetches running on {}: {}", f.host, f.fetches));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(s: &str) -> Result<Option<ByteLimit>, String> {
        s.parse::<LimitArg>().map(|l| l.0)
    }

    #[test]
    fn limits_read_as_multiples_bytes_or_none() {
        assert_eq!(limit("2x"), Ok(Some(ByteLimit::ModelSizeMilli(2000))));
        assert_eq!(limit("1.5x"), Ok(Some(ByteLimit::ModelSizeMilli(1500))));
        assert_eq!(limit("0.25X"), Ok(Some(ByteLimit::ModelSizeMilli(250))));
        assert_eq!(limit("4096"), Ok(Some(ByteLimit::Bytes(4096))));
        assert_eq!(limit("10GB"), Ok(Some(ByteLimit::Bytes(10_000_000_000))));
        assert_eq!(limit("500GiB"), Ok(Some(ByteLimit::Bytes(500 << 30))));
        assert_eq!(limit("none"), Ok(None));
        for bad in [
            "x",
            "1.2345x",
            "-1x",
            "2y",
            "GiB",
            "1e3",
            "99999999999TiB",
            "",
        ] {
            assert!(limit(bad).is_err(), "{bad}");
        }
        assert!("none".parse::<CountArg>().unwrap().0.is_none());
        assert_eq!("3".parse::<CountArg>().unwrap().0, Some(3));
        assert!("-3".parse::<CountArg>().is_err());
    }
}
