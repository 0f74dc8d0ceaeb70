//! `custody host`: exclusive hosts. On the host: its key and signing request (`csr`). For
//! the operator: enrollment, revocation, listing. For a vendor admin: which host groups may
//! receive a model's weights.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use types::{HostGroupName, HostName, RepoRef};
use wire::Empty;
use wire::access::{
    AllowHostGroup, EnrollHost, HostEnrolled, HostGroupChanged, HostList, HostRevoked,
};

use crate::Global;
use crate::client::Client;
use crate::output::{Output, lines};

#[derive(Subcommand)]
pub enum HostCommand {
    /// On the host: make its private key (never leaves this machine) and a signing request
    Csr {
        /// The host's name, as it will be enrolled
        #[arg(long)]
        name: String,
        /// Directory for host.key (mode 0600) and host.csr
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a host's request into a certificate and enroll it in a host group (operator)
    Enroll {
        /// The host's signing request (host.csr)
        csr: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        group: String,
        /// Where to write the certificate (give it to the host as CUSTODY_HOST_CERT)
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke a host: refused from its next request on (operator)
    Revoke { name: String },
    /// List enrolled hosts (operator)
    Ls,
    /// Let a host group's hosts receive a model's weights (vendor admin)
    Allow {
        /// VENDOR/MODEL
        model: String,
        group: String,
    },
    /// Withdraw a host group from a model (vendor admin)
    Disallow {
        /// VENDOR/MODEL
        model: String,
        group: String,
    },
}

pub async fn run(command: HostCommand, global: &Global, out: &Output) -> anyhow::Result<()> {
    // Every command but `csr` (local: no server, no token) asks the server.
    let client = || Client::from_settings(global);
    match command {
        HostCommand::Csr { name, out: dir } => csr(&name, &dir, out),
        HostCommand::Enroll {
            csr,
            name,
            group,
            out: cert_out,
        } => enroll(&client()?, &csr, &name, &group, &cert_out, out).await,
        HostCommand::Revoke { name } => revoke(&client()?, &name, out).await,
        HostCommand::Ls => list(&client()?, out).await,
        HostCommand::Allow { model, group } => allow(&client()?, &model, &group, out).await,
        HostCommand::Disallow { model, group } => disallow(&client()?, &model, &group, out).await,
    }
}

async fn revoke(client: &Client, name: &str, out: &Output) -> anyhow::Result<()> {
    let name = HostName::parse(name)?;
    let revoked: HostRevoked = client
        .post(&format!("/v1/hosts/{name}/revoke"), &Empty {})
        .await?;
    out.result(&revoked, || format!("revoked host {name}"))
}

async fn list(client: &Client, out: &Output) -> anyhow::Result<()> {
    let list: HostList = client.get("/v1/hosts").await?;
    out.result(&list, || {
        lines(&list.hosts, |h| {
            let state = if h.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            };
            format!("{}  {}  {state}", h.name, h.group)
        })
    })
}

async fn allow(client: &Client, model: &str, group: &str, out: &Output) -> anyhow::Result<()> {
    let (repo, group) = (RepoRef::parse(model)?, HostGroupName::parse(group)?);
    let request = AllowHostGroup {
        group: group.to_string(),
    };
    let allowed: HostGroupChanged = client
        .post(&format!("/v1/models/{repo}/host-groups"), &request)
        .await?;
    out.result(&allowed, || {
        format!("hosts of group {group} may receive {repo}")
    })
}

async fn disallow(client: &Client, model: &str, group: &str, out: &Output) -> anyhow::Result<()> {
    let (repo, group) = (RepoRef::parse(model)?, HostGroupName::parse(group)?);
    let withdrawn: HostGroupChanged = client
        .delete(&format!("/v1/models/{repo}/host-groups/{group}"))
        .await?;
    out.result(&withdrawn, || {
        format!("hosts of group {group} may no longer receive {repo}")
    })
}

/// What `custody host csr --json` prints.
#[derive(Serialize)]
struct CsrWritten {
    key: PathBuf,
    csr: PathBuf,
}

/// `custody host csr`: the key is made here and written with mode 0600; only the request
/// (public) goes to the operator.
fn csr(name: &str, dir: &Path, out: &Output) -> anyhow::Result<()> {
    let name = HostName::parse(name)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (key_pem, csr_pem) = crypto::host_ca::host_key_and_csr(name.as_str())?;
    let key = dir.join("host.key");
    let csr = dir.join("host.csr");
    write_new(&key, key_pem.as_bytes(), 0o600)?;
    write_new(&csr, csr_pem.as_bytes(), 0o644)?;
    let human = format!(
        "wrote {} (keep it on this host) and {} (send it to the operator for `custody host enroll`)",
        key.display(),
        csr.display()
    );
    out.result(&CsrWritten { key, csr }, || human)
}

async fn enroll(
    client: &Client,
    csr: &Path,
    name: &str,
    group: &str,
    cert_out: &Path,
    out: &Output,
) -> anyhow::Result<()> {
    let (name, group) = (HostName::parse(name)?, HostGroupName::parse(group)?);
    let csr = std::fs::read_to_string(csr).with_context(|| format!("reading {}", csr.display()))?;
    let request = EnrollHost {
        name: name.to_string(),
        group: group.to_string(),
        csr,
    };
    let enrolled: HostEnrolled = client.post("/v1/hosts", &request).await?;
    write_new(cert_out, enrolled.certificate.as_bytes(), 0o644)?;
    out.result(&enrolled, || {
        format!(
            "enrolled {name} in host group {group}; certificate written to {}",
            cert_out.display()
        )
    })
}

/// Writes a file that must not exist yet, with `mode`, durably.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}
