//! The HTTPS client: trusts exactly the configured certificate, sends the bearer token, and
//! turns the server's JSON errors into readable messages.

use std::sync::Arc;

use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::Global;

pub struct Client {
    http: reqwest::Client,
    base: String,
    /// `None` for a host-only client ([`Client::for_host`]).
    auth: Option<HeaderValue>,
}

/// A refusal or failure reported by the server, with its stable code.
#[derive(Debug)]
pub struct ServerError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {})",
            self.message,
            self.code,
            self.status.as_u16()
        )
    }
}

impl std::error::Error for ServerError {}

impl Client {
    pub fn from_settings(global: &Global) -> anyhow::Result<Client> {
        let token = Zeroizing::new(
            global
                .token
                .clone()
                .context("no token given: set CUSTODY_TOKEN")?,
        );
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
            .context("the token contains characters that cannot be sent")?;
        auth.set_sensitive(true);
        Client::build(global, Some(auth))
    }

    /// A client that authenticates with the exclusive host's certificate alone, sending no
    /// token (`custody wipe`). Fails unless the host certificate and key are configured.
    pub fn for_host(global: &Global) -> anyhow::Result<Client> {
        if global.host_cert.is_none() {
            bail!(
                "this command runs on an exclusive host: set CUSTODY_HOST_CERT and CUSTODY_HOST_KEY"
            );
        }
        Client::build(global, None)
    }

    fn build(global: &Global, auth: Option<HeaderValue>) -> anyhow::Result<Client> {
        let server = global
            .server
            .as_deref()
            .context("no server given: set CUSTODY_SERVER or pass --server https://HOST:PORT")?;
        if !server.starts_with("https://") {
            bail!("the server URL must start with https:// (custody speaks HTTPS only)");
        }
        let ca = global.ca.as_deref().context(
            "no certificate to trust: set CUSTODY_CA to the server's certificate PEM file",
        )?;
        let certs = CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", ca.display()))?;
        if certs.is_empty() {
            bail!("{} holds no certificate", ca.display());
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("using {} as a trust anchor", ca.display()))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(crypto::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(Arc::new(roots));
        let tls = match host_identity(global)? {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .context("using the host certificate and key")?,
            None => builder.with_no_client_auth(),
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .connect_timeout(std::time::Duration::from_secs(20))
            .build()
            .context("building the HTTPS client")?;
        Ok(Client {
            http,
            base: server.trim_end_matches('/').to_owned(),
            auth,
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some(auth) => request.header(AUTHORIZATION, auth.clone()),
            None => request,
        }
    }

    /// The server URL, as configured (without a trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the response if it succeeded, the server's error if not.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!("cannot reach the custody server at {}: {e:#}", self.base)
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(ServerError {
            status,
            code: body["error"]["code"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
            message: body["error"]["message"]
                .as_str()
                .unwrap_or("the server gave no reason")
                .to_owned(),
        }
        .into())
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .send(self.request(Method::GET, path))
            .await?
            .json()
            .await?)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(self
            .send(self.request(Method::POST, path).json(body))
            .await?
            .json()
            .await?)
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(self
            .send(self.request(Method::PUT, path).json(body))
            .await?
            .json()
            .await?)
    }

    pub async fn delete_json(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .send(self.request(Method::DELETE, path))
            .await?
            .json()
            .await?)
    }
}

/// The exclusive host's client certificate chain and key, when both are configured
/// (`CUSTODY_HOST_CERT`, `CUSTODY_HOST_KEY`). One without the other is an error, not a
/// silent fallback to no certificate.
pub fn host_identity(
    global: &Global,
) -> anyhow::Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
    let (cert, key) = match (&global.host_cert, &global.host_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => bail!(
            "give both the host certificate and its key (CUSTODY_HOST_CERT, CUSTODY_HOST_KEY)"
        ),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the host key {}", key.display()))?;
    Ok(Some((chain, key)))
}

/// An id the server made (a pending request, a token, a deletion): hex, checked before it
/// becomes part of a URL path.
pub fn opaque_id(id: &str) -> anyhow::Result<&str> {
    if !crypto::token::is_id(id) {
        bail!("{id:?} is not an id custody made (hexadecimal)");
    }
    Ok(id)
}

/// Percent-encodes each segment of a repository path for a URL.
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            segment
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}
