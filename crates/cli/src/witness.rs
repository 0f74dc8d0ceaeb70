//! `custody witness`: runs a witness of a custody audit log (C2SP tlog-witness; the server
//! crate serves it, `audit::witness` decides). And the auditor's side: `--witness-key` and
//! `--min-witnesses` for `custody audit verify` and `custody verify-certificate`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use audit::checkpoint::VerifierKey;
use audit::witness::{self, CosignerKey, Quorum};
use clap::Args;

use crate::args::key_text;
use crate::output::init_logging;

#[derive(Args)]
pub struct WitnessArgs {
    /// Address to listen on (plain HTTP: requests and answers are signed, see docs/audit.md)
    #[arg(long)]
    listen: SocketAddr,
    /// The witness's directory: its key (made on the first start) and the last checkpoint it
    /// cosigned
    #[arg(long)]
    state: PathBuf,
    /// The log's verifier key (`custody audit key`), or a file holding it
    #[arg(long)]
    log_key: String,
    /// This witness's name, used when its key is made (default: custody-witness/<random>)
    #[arg(long)]
    name: Option<String>,
}

pub async fn run(args: WitnessArgs) -> anyhow::Result<()> {
    init_logging();
    let log_key = key_text(&args.log_key)
        .map_err(anyhow::Error::msg)
        .and_then(|t| VerifierKey::parse(t.trim()).context("--log-key"))?;
    let options = server::witness::WitnessOptions {
        listen: args.listen,
        state_dir: args.state,
        log_key,
        name: args.name,
    };
    server::witness::run_witness(options, |started| {
        println!("custody witness: verifier key {}", started.verifier_key);
        println!("custody witness: cosigned size {}", started.cosigned_size);
        println!("custody witness: listening on http://{}", started.listen);
    })
    .await
}

/// What an auditor requires of a checkpoint's witnesses.
#[derive(Args, Default)]
pub struct Requirement {
    /// A witness's verifier key (as `custody witness` prints it), or a file holding it;
    /// repeat for each witness you trust
    #[arg(long = "witness-key")]
    witness_keys: Vec<String>,
    /// How many of those witnesses must have cosigned the checkpoint (default: all given)
    #[arg(long)]
    min_witnesses: Option<usize>,
}

impl Requirement {
    /// The keys and the quorum, or `None` when nothing is required. An unusable argument is
    /// an error (the caller exits 2).
    fn parsed(&self) -> Result<Option<(Vec<CosignerKey>, usize)>, String> {
        let keys = self
            .witness_keys
            .iter()
            .map(|k| {
                key_text(k).and_then(|t| {
                    CosignerKey::parse(t.trim()).map_err(|e| format!("--witness-key: {e}"))
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let min = self.min_witnesses.unwrap_or(keys.len());
        if min > keys.len() {
            return Err(format!(
                "--min-witnesses {min} but only {} --witness-key given",
                keys.len()
            ));
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some((keys, min)))
    }

    /// Checks the cosignatures on a signed checkpoint `note` (whose log signature the caller
    /// verified). `Ok(None)`: nothing required.
    pub fn check(&self, note: Option<&[u8]>) -> Result<Option<Quorum>, String> {
        let Some((keys, min)) = self.parsed()? else {
            return Ok(None);
        };
        let note = note
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or_else(|| "no signed checkpoint to check the witnesses of".to_owned())?;
        witness::check_quorum(note, &keys, min)
            .map(Some)
            .map_err(|e| format!("checkpoint: {e}"))
    }

    /// The keys and quorum for `certificate::verify_witnessed`.
    pub fn for_certificate(&self) -> Result<Option<(Vec<CosignerKey>, usize)>, String> {
        self.parsed()
    }
}
