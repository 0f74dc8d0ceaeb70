//! `custody host`: exclusive hosts. On the host: its key and signing request (`csr`). For
//! the operator: enrollment, revocation, listing. For a vendor admin: which enrollments may
//! hold the vendor's weights (`approve`), and which host groups may receive a model's.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use types::{HostGroupName, HostName, RepoRef, VendorName};
use wire::Empty;
use wire::access::{
    AllowHostGroup, ApproveHost, EnrollHost, HostApproval, HostEnrolled, HostGroupChanged,
    HostList, HostRevoked, Outcome, RenewHost, VendorHostList,
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
        /// The host's name (normally the one its request names; a difference is warned about)
        #[arg(long)]
        name: String,
        /// The host group it joins: vendors allow host groups for their models
        #[arg(long)]
        group: String,
        /// Where to write the certificate (give it to the host as CUSTODY_HOST_CERT)
        #[arg(long)]
        out: PathBuf,
    },
    /// On the host, before its certificate expires: a new key and certificate for the same
    /// enrollment (vendors' approvals stay), authenticated by the current certificate
    /// (CUSTODY_HOST_CERT, CUSTODY_HOST_KEY), which both files then replace. Restart the
    /// agent afterwards
    Renew,
    /// Revoke a host: refused from its next request on (operator)
    Revoke {
        /// The host's name
        name: String,
    },
    /// List enrolled hosts (operator), or with --vendor the hosts in the vendor's allowed
    /// groups and whether it approved each (vendor admin)
    Ls {
        /// The vendor whose allowed hosts to list
        #[arg(long)]
        vendor: Option<String>,
    },
    /// Let a host's enrollment hold the vendor's weights (vendor admin): the operator enrolls
    /// hosts, the vendor decides which of them it trusts
    Approve {
        /// The vendor
        vendor: String,
        /// The host's name
        host: String,
    },
    /// Withdraw the vendor's approval of a host (vendor admin)
    Unapprove {
        /// The vendor
        vendor: String,
        /// The host's name
        host: String,
    },
    /// Let a host group's hosts receive a model's weights (vendor admin)
    Allow {
        /// VENDOR/MODEL
        model: String,
        /// The host group
        group: String,
    },
    /// Withdraw a host group from a model (vendor admin)
    Disallow {
        /// VENDOR/MODEL
        model: String,
        /// The host group
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
        HostCommand::Renew => renew(global, out).await,
        HostCommand::Revoke { name } => revoke(&client()?, &name, out).await,
        HostCommand::Ls { vendor: None } => list(&client()?, out).await,
        HostCommand::Ls {
            vendor: Some(vendor),
        } => vendor_list(&client()?, &VendorName::parse(&vendor)?, out).await,
        HostCommand::Approve { vendor, host } => {
            let (vendor, host) = (VendorName::parse(&vendor)?, HostName::parse(&host)?);
            let request = ApproveHost {
                host: host.to_string(),
            };
            let approved: Outcome<HostApproval> = client()?
                .post(&format!("/v1/vendors/{vendor}/hosts"), &request)
                .await?;
            out.result(&approved, || match &approved {
                Outcome::Filed(f) => {
                    crate::access::filed(&format!("approving host {host} for {vendor}"), f)
                }
                Outcome::Done(a) => format!(
                    "host {host} (enrollment {}) may hold {vendor}'s weights",
                    a.host_id
                ),
            })
        }
        HostCommand::Unapprove { vendor, host } => {
            let (vendor, host) = (VendorName::parse(&vendor)?, HostName::parse(&host)?);
            let withdrawn: HostApproval = client()?
                .delete(&format!("/v1/vendors/{vendor}/hosts/{host}"))
                .await?;
            out.result(&withdrawn, || {
                format!("host {host} may no longer hold {vendor}'s weights")
            })
        }
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
            format!("{}  {}  {state}  {}", h.name, h.group, h.id)
        })
    })
}

async fn vendor_list(client: &Client, vendor: &VendorName, out: &Output) -> anyhow::Result<()> {
    let list: VendorHostList = client.get(&format!("/v1/vendors/{vendor}/hosts")).await?;
    out.result(&list, || {
        lines(&list.hosts, |h| {
            let state = match (&h.revoked_at, &h.approved_by) {
                (Some(_), _) => "revoked".to_owned(),
                (None, Some(by)) => format!("approved by {by}"),
                (None, None) => "not approved".to_owned(),
            };
            format!("{}  {}  {state}  {}", h.name, h.group, h.id)
        })
    })
}

async fn allow(client: &Client, model: &str, group: &str, out: &Output) -> anyhow::Result<()> {
    let (repo, group) = (RepoRef::parse(model)?, HostGroupName::parse(group)?);
    let request = AllowHostGroup {
        group: group.to_string(),
    };
    let allowed: Outcome<HostGroupChanged> = client
        .post(&format!("/v1/models/{repo}/host-groups"), &request)
        .await?;
    out.result(&allowed, || match &allowed {
        Outcome::Filed(f) => {
            crate::access::filed(&format!("allowing host group {group} for {repo}"), f)
        }
        Outcome::Done(_) => format!(
            "hosts of group {group} may receive {repo}, each once {} approves it",
            repo.vendor
        ),
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
    // The request names the host it was made for: enrolling it under another name is allowed
    // (the certificate carries --name) but usually a mix-up of two hosts' files.
    let requested = crypto::host_ca::csr_host_name(&csr)?;
    if let Some(requested) = requested.as_deref().filter(|r| *r != name.as_str()) {
        eprintln!(
            "custody: warning: the signing request was made for host {requested}, but it is \
             being enrolled as {name}: check that this is that host's host.csr (the \
             certificate names {name})"
        );
    }
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

/// `custody host renew`: the new key is written beside the old one before asking, and both
/// files are replaced only once the new certificate arrived, so a failure leaves the host
/// with the certificate that still works.
async fn renew(global: &Global, out: &Output) -> anyhow::Result<()> {
    let (Some(cert_path), Some(key_path)) = (&global.host_cert, &global.host_key) else {
        anyhow::bail!(
            "renewal runs on the host, with its current certificate: set CUSTODY_HOST_CERT and \
             CUSTODY_HOST_KEY"
        );
    };
    let current = std::fs::read_to_string(cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    let name = crypto::host_ca::cert_host_name(&current)?
        .with_context(|| format!("{} names no host", cert_path.display()))?;
    let name = HostName::parse(&name)?;
    let (key_pem, csr) = crypto::host_ca::host_key_and_csr(name.as_str())?;
    let new_key = beside(key_path, "new");
    let new_cert = beside(cert_path, "new");
    for stale in [&new_key, &new_cert] {
        // Left by a renewal that failed: never used.
        let _ = std::fs::remove_file(stale);
    }
    write_new(&new_key, key_pem.as_bytes(), 0o600)?;
    let renewed: Result<HostEnrolled, _> = Client::for_host(global)?
        .post("/v1/host/renew", &RenewHost { csr })
        .await;
    let renewed = match renewed {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&new_key);
            return Err(e);
        }
    };
    write_new(&new_cert, renewed.certificate.as_bytes(), 0o644)?;
    std::fs::rename(&new_key, key_path)
        .with_context(|| format!("replacing {}", key_path.display()))?;
    std::fs::rename(&new_cert, cert_path)
        .with_context(|| format!("replacing {}", cert_path.display()))?;
    out.result(&renewed, || {
        format!(
            "renewed host {name}: new certificate valid until {} in {} (key {}); the old one no \
             longer counts: restart the agent",
            crate::args::rfc3339(renewed.not_after),
            cert_path.display(),
            key_path.display()
        )
    })
}

/// `path` with `.suffix` added to its name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
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
