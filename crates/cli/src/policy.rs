//! `custody policy validate`: checks a policy directory offline, strictly, as the server
//! would at start.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;

use crate::output::Output;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory (default: ./policies)
    Validate { dir: Option<PathBuf> },
}

/// What `custody policy validate --json` prints.
#[derive(Serialize)]
struct Validated {
    dir: PathBuf,
    valid: bool,
    summary: String,
}

pub fn run(command: PolicyCommand, out: &Output) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Validate { dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("policies"));
            let summary = policy::validate(&dir)
                .with_context(|| format!("{} is not a valid policy set", dir.display()))?;
            let summary = format!("{summary:?}");
            let human = format!("{}: valid ({summary})", dir.display());
            out.result(
                &Validated {
                    dir,
                    valid: true,
                    summary,
                },
                || human,
            )
        }
    }
}
