//! `custody init --out DIR`: the service identity for several server instances, made once.
//!
//! Every instance then names DIR (mounted read-only, a Kubernetes secret, ...) as
//! `identity_dir`; the first instance pins its fingerprints in the database, and an instance
//! with any other identity refuses to start.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::output::Output;

#[derive(Args)]
pub(crate) struct InitArgs {
    /// Directory to make the identity in (`tls/`, `keys/`); must not hold one yet
    #[arg(long)]
    out: PathBuf,
    /// A name the TLS certificate is valid for (repeat the flag; default localhost,
    /// 127.0.0.1 and ::1)
    #[arg(long = "hostname")]
    hostnames: Vec<String>,
    /// The audit log's origin, the name in its signed checkpoints (default
    /// custody/audit/<random id>)
    #[arg(long)]
    audit_origin: Option<String>,
}

/// What `custody init --json` prints.
#[derive(Serialize)]
struct Made {
    identity_dir: PathBuf,
    tls_cert: PathBuf,
    host_ca: PathBuf,
    audit_log_key: PathBuf,
    service_key: PathBuf,
}

pub(crate) fn run(args: &InitArgs, out: &Output) -> anyhow::Result<()> {
    let hostnames = if args.hostnames.is_empty() {
        server::ServerConfig::new(PathBuf::new()).hostnames
    } else {
        args.hostnames.clone()
    };
    let paths = server::init_identity(&args.out, &hostnames, args.audit_origin.as_deref())?;
    let made = Made {
        identity_dir: args.out.clone(),
        tls_cert: paths.tls_cert.clone(),
        host_ca: paths.host_ca_cert.clone(),
        audit_log_key: paths.log_key.clone(),
        service_key: paths.service_key.clone(),
    };
    out.result(&made, || {
        format!(
            "made the service identity in {dir}: TLS certificate {cert} (clients trust it), \
             host CA, audit log key and service key.\nGive every server instance the same \
             directory: identity_dir = {dir:?} in its configuration. Keep {keys} secret.",
            dir = args.out.display(),
            cert = paths.tls_cert.display(),
            keys = args.out.join("keys").display(),
        )
    })
}
