//! The HTTPS client: trusts exactly the configured certificate, sends the bearer token,
//! reads every answer into its `wire` type (a body that does not fit is an error, never an
//! empty value), and turns the server's error bodies into readable messages.

use std::sync::Arc;

use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wire::ErrorCode;
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
    pub code: ErrorCode,
    pub message: String,
    /// `Retry-After`, in seconds, when the server sent one.
    pub retry_after: Option<u64>,
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
        require_host_identity(global, "this command")?;
        Client::build(global, None)
    }

    /// A client that sends no credential at all (`custody health`).
    pub fn unauthenticated(global: &Global) -> anyhow::Result<Client> {
        Client::build(global, None)
    }

    /// The status of an unauthenticated `GET path` (health routes).
    pub async fn probe(&self, path: &str) -> anyhow::Result<u16> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", unreachable_reason(&e, &self.base)))?;
        Ok(response.status().as_u16())
    }

    fn build(global: &Global, auth: Option<HeaderValue>) -> anyhow::Result<Client> {
        let server = server_url(global)?;
        if !server.starts_with("https://") {
            bail!("the server URL must start with https:// (custody speaks HTTPS only)");
        }
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(global)?)
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
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", unreachable_reason(&e, &self.base)))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = response.bytes().await.unwrap_or_default();
        let error = match serde_json::from_slice::<wire::ErrorBody>(&bytes) {
            Ok(body) => ServerError {
                status,
                retry_after,
                code: body.error.code,
                message: body.error.message,
            },
            Err(_) => ServerError {
                status,
                retry_after,
                code: ErrorCode::Unknown,
                message: "the server gave no reason".to_owned(),
            },
        };
        Err(error.into())
    }

    /// Sends the request `make` builds, and again while the host runs as many fetches of the
    /// model as its egress budget allows (`too_many_fetches`: one ends in a moment). Any other
    /// refusal, a spent byte budget included, is the caller's error with the server's reason.
    pub async fn send_within_budget(
        &self,
        make: impl Fn() -> RequestBuilder,
    ) -> anyhow::Result<Response> {
        const SHORT_WAIT_SECS: u64 = 10;
        const GIVE_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(300);
        let started = std::time::Instant::now();
        loop {
            let error = match self.send(make()).await {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            let wait = error
                .downcast_ref::<ServerError>()
                .filter(|s| s.code == ErrorCode::TooManyFetches)
                .and_then(|s| s.retry_after)
                .filter(|secs| *secs <= SHORT_WAIT_SECS);
            match wait {
                Some(secs) if started.elapsed() < GIVE_UP_AFTER => {
                    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
                }
                _ => return Err(error),
            }
        }
    }

    /// Sends a request and reads the answer as a `T`.
    pub async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<T> {
        let response = self.send(request).await?;
        let url = response.url().path().to_owned();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the server's answer to {url}"))?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the server's answer to {url} is not what this custody understands \
                 (a different version?)"
            )
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(self.request(Method::POST, path).json(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.call(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(self.request(Method::DELETE, path)).await
    }
}

/// The configured server URL (not yet checked).
pub fn server_url(global: &Global) -> anyhow::Result<&str> {
    global
        .server
        .as_deref()
        .context("no server given: set CUSTODY_SERVER or pass --server https://HOST:PORT")
}

/// TLS to the custody server: trusts exactly the configured certificate (`CUSTODY_CA`), and
/// presents the exclusive host's certificate when one is configured.
pub fn tls_config(global: &Global) -> anyhow::Result<rustls::ClientConfig> {
    let ca = global
        .ca
        .as_deref()
        .context("no certificate to trust: set CUSTODY_CA to the server's certificate PEM file")?;
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
    Ok(match host_identity(global)? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .context("the host certificate and key do not form a usable identity")?,
        None => builder.with_no_client_auth(),
    })
}

/// For what acts as the exclusive host (`custody wipe`, the agent): without the host's
/// certificate every request would be refused, so its absence is said at once.
pub fn require_host_identity(global: &Global, who: &str) -> anyhow::Result<()> {
    if global.host_cert.is_none() || global.host_key.is_none() {
        bail!(
            "{who} runs on an enrolled exclusive host and needs its certificate: set \
             CUSTODY_HOST_CERT and CUSTODY_HOST_KEY (made by `custody host csr` and the \
             operator's `custody host enroll`)"
        );
    }
    Ok(())
}

/// The exclusive host's client certificate chain and key, when both are configured
/// (`CUSTODY_HOST_CERT`, `CUSTODY_HOST_KEY`). One without the other is an error, not a
/// silent fallback to no certificate. Errors name the key file, never its content.
pub fn host_identity(
    global: &Global,
) -> anyhow::Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
    let (cert, key) = match (&global.host_cert, &global.host_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => bail!(
            "give both the host certificate and its key (CUSTODY_HOST_CERT and \
             CUSTODY_HOST_KEY, or --host-cert and --host-key), or neither"
        ),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    // A parse error may quote a line of the file; of a key file, that line is secret.
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls_pki_types::pem::Error::Io(e) => {
            anyhow::anyhow!("reading the host key {}: {e}", key.display())
        }
        _ => anyhow::anyhow!("{} holds no readable PEM private key", key.display()),
    })?;
    Ok(Some((chain, key)))
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

/// Why a request did not reach the server, in words that say what to change. A TLS failure
/// (the server's certificate not the one in CUSTODY_CA, a name it does not cover, this host's
/// certificate refused) otherwise reads exactly like a stopped server.
pub fn unreachable_reason(error: &reqwest::Error, base: &str) -> String {
    let detail = format!("{error:#}");
    let Some(tls) = tls_cause(error) else {
        return format!("cannot reach the custody server at {base}: {detail}");
    };
    use rustls::{AlertDescription, CertificateError, Error as Tls};
    let why = match tls {
        Tls::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "its certificate is not the one CUSTODY_CA names (or not signed by it): set \
              CUSTODY_CA to this server's certificate (the server prints its fingerprint at \
              start)"
            .to_owned(),
        Tls::InvalidCertificate(CertificateError::NotValidForName)
        | Tls::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "its certificate does not cover the name in CUSTODY_SERVER: use an address the \
             certificate was issued for (the server's `hostnames` setting)"
                .to_owned()
        }
        Tls::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "its certificate has expired: the operator must renew it".to_owned(),
        Tls::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            // rustls answers a client certificate signed by another CA with this one.
            | AlertDescription::DecryptError,
        ) => "the server refused this host's client certificate (CUSTODY_HOST_CERT): it must \
              be one the server's operator enrolled, not revoked or expired"
            .to_owned(),
        other => format!("the TLS handshake failed: {other}"),
    };
    format!("the custody server at {base} was reached but not trusted: {why} ({detail})")
}

/// The rustls error somewhere in `error`'s chain. An `io::Error` hides the error it wraps
/// from `source()` (it skips to that error's own source), so the walk steps into it instead.
fn tls_cause(error: &reqwest::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn global(cert: Option<PathBuf>, key: Option<PathBuf>) -> Global {
        Global {
            server: None,
            token: None,
            ca: None,
            host_cert: cert,
            host_key: key,
            host_state: None,
            json: false,
        }
    }

    fn error(global: &Global) -> String {
        match host_identity(global) {
            Ok(_) => panic!("an unusable host identity was accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn host_key_errors_name_the_file_never_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("host.crt");
        let (key_pem, _) = crypto::host_ca::host_key_and_csr("h1").unwrap();
        let (cert_pem, _) = crypto::tls::self_signed_server_cert(&["h1".into()]).unwrap();
        std::fs::write(&cert, cert_pem).unwrap();
        // Damaged key files, as a copy and paste leaves them: the PEM parser's own errors would
        // quote the damaged line, which is key material.
        let key = dir.path().join("host.key");
        let flattened: String = key_pem.lines().collect();
        let truncated: String = key_pem.lines().take(3).collect::<Vec<_>>().join("\n");
        for damaged in [flattened, truncated] {
            std::fs::write(&key, &damaged).unwrap();
            let message = error(&global(Some(cert.clone()), Some(key.clone())));
            assert_eq!(
                message,
                format!("{} holds no readable PEM private key", key.display())
            );
        }
        let missing = dir.path().join("absent.key");
        let message = error(&global(Some(cert.clone()), Some(missing)));
        assert!(message.contains("absent.key"), "{message}");
        // One without the other is an error, not a silent fallback to no certificate.
        assert!(error(&global(Some(cert), None)).contains("give both"));
        assert!(host_identity(&global(None, None)).unwrap().is_none());
    }
}
