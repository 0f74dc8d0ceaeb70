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
    Validate {
        /// The folder with schema.cedarschema and *.cedar files
        dir: Option<PathBuf>,
    },
}

/// What `custody policy validate --json` prints.
#[derive(Serialize)]
struct Validated {
    dir: PathBuf,
    valid: bool,
    /// Policy files read, in order.
    files: Vec<String>,
    /// Policy ids, in file order.
    policies: Vec<String>,
}

pub fn run(command: PolicyCommand, out: &Output) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Validate { dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("policies"));
            let summary = policy::validate(&dir)
                .with_context(|| format!("{} is not a valid policy set", dir.display()))?;
            let validated = Validated {
                dir,
                valid: true,
                files: summary.files,
                policies: summary.policies.iter().map(|p| (*p).to_owned()).collect(),
            };
            out.result(&validated, || {
                let mut text = vec![format!(
                    "{}: valid (schema.cedarschema and {}): {} policies",
                    validated.dir.display(),
                    validated.files.join(", "),
                    validated.policies.len()
                )];
                text.extend(validated.policies.iter().map(|p| format!("  {p}")));
                text.join("\n")
            })
        }
    }
}
