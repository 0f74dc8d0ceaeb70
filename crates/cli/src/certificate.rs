//! `custody verify-certificate`: offline verification of a deletion certificate.
//!
//! No server, no network, no async runtime: the file and the keys are read, the `deletion`
//! crate decides, and the exit code says what it decided: 0 valid, 1 invalid, 2 unusable
//! input (unreadable file, not a certificate, a key that does not parse).

use std::path::PathBuf;
use std::process::ExitCode;

use certificate::{Report, Status, Verdict};
use clap::Args;
use serde::Serialize;

use crate::args::key_text;
use crate::output::Output;

#[derive(Args)]
pub struct VerifyArgs {
    /// The certificate file (JSON)
    file: PathBuf,
    /// The service's public key: a verifier key (name+keyid+base64), the 32-byte key as base64
    /// or hex, or a file holding one of those
    #[arg(long)]
    service_key: String,
    /// The audit log's verifier key (name+keyid+base64), or a file holding it; without it the
    /// checkpoint's signature is not checked
    #[arg(long)]
    log_key: Option<String>,
    /// Witnesses that must have cosigned the certificate's checkpoint
    #[command(flatten)]
    witnesses: crate::witness::Requirement,
}

const UNUSABLE: u8 = 2;

/// What `--json` prints for input that cannot be verified at all.
#[derive(Serialize)]
struct Unusable {
    verdict: &'static str,
    exit_code: u8,
    error: String,
}

/// What `--json` prints for a verified certificate: the report and the exit code.
#[derive(Serialize)]
struct Verified<'a> {
    #[serde(flatten)]
    report: &'a Report,
    exit_code: u8,
}

fn unusable(out: &Output, message: String) -> ExitCode {
    if out.is_json() {
        out.json_line(&Unusable {
            verdict: "unusable",
            exit_code: UNUSABLE,
            error: message,
        });
    } else {
        eprintln!("custody: cannot verify: {message}");
    }
    ExitCode::from(UNUSABLE)
}

pub fn run(args: &VerifyArgs, out: &Output) -> ExitCode {
    let service = match key_text(&args.service_key)
        .and_then(|t| certificate::parse_service_key(&t).map_err(|e| format!("--service-key: {e}")))
    {
        Ok(key) => key,
        Err(e) => return unusable(out, e),
    };
    let log = match args.log_key.as_deref().map(|k| {
        key_text(k)
            .and_then(|t| certificate::parse_log_key(&t).map_err(|e| format!("--log-key: {e}")))
    }) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(e)) => return unusable(out, e),
    };
    let bytes = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => return unusable(out, format!("reading {}: {e}", args.file.display())),
    };
    let report = match args.witnesses.for_certificate() {
        Ok(None) => certificate::verify(&bytes, &service, log.as_ref()),
        Ok(Some((keys, min))) => {
            certificate::verify_witnessed(&bytes, &service, log.as_ref(), &keys, min)
        }
        Err(e) => return unusable(out, e),
    };
    if out.is_json() {
        out.json_line(&Verified {
            report: &report,
            exit_code: report.exit_code(),
        });
    } else {
        print!("{}", human(&report));
    }
    ExitCode::from(report.exit_code())
}

fn human(report: &Report) -> String {
    let mut text = String::new();
    let verdict = match report.verdict {
        Verdict::Valid => "VALID",
        Verdict::Invalid => "INVALID",
        Verdict::Unusable => "UNUSABLE",
    };
    text.push_str(&format!(
        "certificate {}: {verdict}\n",
        report.certificate_id.as_deref().unwrap_or("(unreadable)")
    ));
    for check in &report.checks {
        text.push_str(&format!("  {check}\n"));
    }
    if let Some(file) = &report.certificate
        && report.verdict == Verdict::Valid
    {
        let d = &file.certificate.deletion;
        for model in &d.models {
            text.push_str(&format!(
                "deleted {}/{}: {} revision(s), {} object(s)\n",
                d.vendor,
                model.name,
                model.revisions.len(),
                model.objects.len()
            ));
        }
        text.push_str(&format!(
            "requested by {} at {}, completed at {}\n",
            d.requested_by, d.requested_at, d.completed_at
        ));
        for host in &d.hosts {
            let wiped = match &host.confirmed_at {
                Some(at) => format!("wipe confirmed at {at}"),
                None => "wipe NOT confirmed".to_owned(),
            };
            text.push_str(&format!(
                "host {}: {} file(s), {wiped}\n",
                host.host, host.files
            ));
        }
        if report.status(certificate::CheckName::CheckpointSignature) == Some(Status::Skipped) {
            text.push_str(
                "note: without --log-key, the audit checkpoint is trusted on the service's \
                 word alone\n",
            );
        }
    }
    text
}
