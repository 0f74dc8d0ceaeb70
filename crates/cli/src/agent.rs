//! `custody agent`: the host agent of an exclusive server.
//!
//! The Hugging Face client (`huggingface_hub`, `hf`, vLLM) cannot present a client
//! certificate, and custody gives weights only to enrolled hosts that do. The agent runs on the
//! exclusive server, listens on loopback only, and forwards each request to the custody server
//! over HTTPS with the host's certificate: method, path, query, headers (the committer's own
//! `Authorization` among them) and bodies, streamed both ways. It adds nothing, keeps nothing
//! (no cache, no plaintext on disk) and decides nothing: the server authorizes every request.
//!
//! It listens on plain HTTP, which is why it refuses any address but loopback: the bytes it
//! relays are plaintext weights. Loopback is still reachable by every local process and by
//! web pages a browser on the host opens, so it relays only the Hugging Face client's read
//! routes (never the host-only wipe routes nor the native API, which would lend the host's
//! identity to any process), and only requests whose `Host` names the agent itself (DNS
//! rebinding). Absolute URLs that point at the server (`Location`, `Link`)
//! are rewritten to the agent's own address, so redirects and next pages stay on the agent
//! (a redirect elsewhere would also lose the `Authorization` header).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Global;
use crate::client::{server_url, tls_config};
use crate::output::init_logging;

#[derive(Args)]
pub struct AgentArgs {
    /// Loopback address to listen on, for example 127.0.0.1:8090
    #[arg(long)]
    listen: SocketAddr,
}

/// What every forwarded request needs.
struct Agent {
    http: reqwest::Client,
    /// The server's origin, `https://HOST[:PORT]`, as URLs it emits start.
    server: String,
    /// Our own address, for rewriting when a request names no usable `Host`.
    local: SocketAddr,
}

/// Runs the agent until the process ends. `listen` must be a loopback address.
pub async fn run(args: AgentArgs, global: &Global) -> anyhow::Result<()> {
    init_logging();
    let listen = args.listen;
    if !listen.ip().is_loopback() {
        bail!(
            "the agent serves plain HTTP and listens on loopback only (127.0.0.1 or [::1]); \
             refusing to listen on {}",
            listen.ip()
        );
    }
    // Weight bytes reach only enrolled exclusive hosts: without the host's certificate every
    // relayed request would be refused, so an agent without one is a mistake to say at once.
    crate::client::require_host_identity(global, "the agent")?;
    let server = server_url(global)?;
    let url =
        reqwest::Url::parse(server).with_context(|| format!("invalid server URL {server}"))?;
    if url.scheme() != "https" {
        bail!("the server URL must start with https:// (custody speaks HTTPS only)");
    }
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(global)?)
        .https_only(true)
        // Redirects go back to the Hub client (rewritten to the agent), which follows them.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(20))
        .build()
        .context("building the HTTPS client")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    let agent = Arc::new(Agent {
        http,
        server: url.origin().ascii_serialization(),
        local,
    });
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "custody: agent listening on http://{local}, forwarding to {}",
            agent.server
        );
        let _ = stdout.flush();
    }
    tracing::info!(%local, server = %agent.server, "agent started");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the others.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let agent = agent.clone();
                async move { Ok::<_, Infallible>(agent.forward(request).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// Headers that describe one connection, not the request: never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `headers` without hop-by-hop headers (and those the `Connection` header names) and
/// without `Host`, which the outgoing connection sets.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        if n == "host" || HOP_BY_HOP.contains(&n) || named.iter().any(|x| x == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

impl Agent {
    async fn forward(&self, request: Request<Incoming>) -> Response<reqwest::Body> {
        let method = request.method().clone();
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        // Any process on this machine, and any web page a browser here opens, can reach the
        // loopback port: only requests addressed to the agent by its own name, and only the
        // Hugging Face client's read routes, are relayed with the host's identity.
        if !self.addressed_to_me(request.headers()) {
            tracing::warn!(%method, %path, "refused: the Host header names another site");
            return refusal(
                StatusCode::FORBIDDEN,
                "custody agent: refused: this request was addressed to another host name \
                 (a web page trying to reach the agent?); use the agent's own address",
            );
        }
        if !hub_read_route(&method, request.uri().path()) {
            tracing::warn!(%method, %path, "refused: not a Hugging Face read route");
            return refusal(
                StatusCode::FORBIDDEN,
                "custody agent: refused: the agent relays only the Hugging Face Hub's read \
                 routes (model info, file listings and downloads); use `custody` with the host \
                 certificate for anything else",
            );
        }
        let agent_origin = self.own_origin(request.headers());
        match self.relay(request, &path, &agent_origin).await {
            Ok(response) => {
                tracing::info!(%method, %path, status = response.status().as_u16(), "forwarded");
                response
            }
            Err(e) => {
                tracing::warn!(%method, %path, error = format!("{e:#}"), "forwarding failed");
                bad_gateway(&format!(
                    "custody agent: the custody server at {} could not be reached: {e:#}",
                    self.server
                ))
            }
        }
    }

    async fn relay(
        &self,
        request: Request<Incoming>,
        path: &str,
        agent_origin: &str,
    ) -> anyhow::Result<Response<reqwest::Body>> {
        let (parts, body) = request.into_parts();
        if !path.starts_with('/') {
            bail!("only origin-form request targets are forwarded");
        }
        let mut headers = end_to_end(&parts.headers);
        if let Some(auth) = headers.get_mut(header::AUTHORIZATION) {
            auth.set_sensitive(true);
        }
        let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
            || parts.headers.contains_key(header::TRANSFER_ENCODING);
        let mut outgoing = self
            .http
            .request(parts.method, format!("{}{path}", self.server))
            .headers(headers);
        if has_body {
            outgoing = outgoing.body(reqwest::Body::wrap(body));
        }
        let upstream = outgoing.send().await?;
        let status = upstream.status();
        let mut headers = end_to_end(upstream.headers());
        rewrite_urls(&mut headers, &self.server, agent_origin);
        let mut response = Response::new(reqwest::Body::from(upstream));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// Whether the request's `Host` names this agent: its loopback address and port, or
    /// `localhost` with its port. A browser sends the name of the site whose page made the
    /// request, so a page of another site (DNS rebinding) is refused here.
    fn addressed_to_me(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let port = self.local.port();
        let mine = [
            self.local.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        mine.iter().any(|m| m.eq_ignore_ascii_case(host))
    }

    /// `http://HOST:PORT` as the client addressed us, so rewritten URLs reach us the same way.
    fn own_origin(&self, headers: &HeaderMap) -> String {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                    })
            });
        match host {
            Some(h) => format!("http://{h}"),
            None => format!("http://{}", self.local),
        }
    }
}

/// Points `Location` and `Link` URLs that name the server at the agent instead. Relative
/// URLs already resolve against the agent and stay as they are.
fn rewrite_urls(headers: &mut HeaderMap, server: &str, agent: &str) {
    for name in [header::LOCATION, header::CONTENT_LOCATION, header::LINK] {
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        if values.is_empty() {
            continue;
        }
        headers.remove(&name);
        for value in values {
            let rewritten = value
                .to_str()
                .ok()
                .map(|v| rewrite_value(v, server, agent))
                .and_then(|v| HeaderValue::from_str(&v).ok())
                .unwrap_or(value);
            headers.append(name.clone(), rewritten);
        }
    }
}

/// Replaces every occurrence of `server` that begins a URL (at the start of the value or
/// after `<`, as in `Link`) and is followed by a path, query or the end.
fn rewrite_value(value: &str, server: &str, agent: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find(server) {
        let after = &rest[i + server.len()..];
        let starts_url = (i == 0 && out.is_empty()) || rest[..i].ends_with('<');
        let ends_origin = after.is_empty() || after.starts_with(['/', '?', '>', '#']);
        out.push_str(&rest[..i]);
        out.push_str(if starts_url && ends_origin {
            agent
        } else {
            server
        });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The agent's own failure, in the Hub's error convention so the client shows it.
/// The routes the Hugging Face client reads a model with (`shared/reference/hf-hub-api.md`):
/// model info (optionally at a revision), tree listings, and `resolve` for file bytes; GET
/// and HEAD only. Paths with `..` segments or percent-escapes in them are refused, so nothing
/// the server would normalise differently slips through.
fn hub_read_route(method: &hyper::Method, path: &str) -> bool {
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return false;
    }
    if path.contains('%') || path.contains("//") {
        return false;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return false;
    }
    match segments.as_slice() {
        // /api/models/{ns}/{name}, /revision/{rev}, /tree/{rev}[/{path...}]
        ["api", "models", _, _] => true,
        ["api", "models", _, _, "revision", _] => true,
        ["api", "models", _, _, "tree", _, ..] => true,
        // /{ns}/{name}/resolve/{rev}/{path...}
        [ns, _, "resolve", _, _, ..] => *ns != "api" && *ns != "v1",
        _ => false,
    }
}

/// A refusal of the agent's own, in the Hub's error shape (the client shows the message).
fn refusal(status: StatusCode, message: &str) -> Response<reqwest::Body> {
    let mut response = bad_gateway(message);
    *response.status_mut() = status;
    response
}

fn bad_gateway(message: &str) -> Response<reqwest::Body> {
    // Serializing a struct of one string cannot fail; the fallback is only for the type.
    let body = serde_json::to_string(&wire::hub::HubError {
        error: message.to_owned(),
    })
    .unwrap_or_default();
    let mut response = Response::new(reqwest::Body::from(body));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let visible: String = message
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&visible) {
        headers.insert(HeaderName::from_static(wire::hub::ERROR_MESSAGE_HEADER), v);
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use hyper::Method;

    use super::*;

    #[test]
    fn only_the_hub_read_routes_are_relayed() {
        let cases = [
            (Method::GET, "/api/models/acme/m", true),
            (Method::GET, "/api/models/acme/m/revision/main", true),
            (Method::GET, "/api/models/acme/m/tree/main", true),
            (Method::GET, "/api/models/acme/m/tree/main/sub/dir", true),
            (Method::HEAD, "/acme/m/resolve/main/config.json", true),
            (
                Method::GET,
                "/acme/m/resolve/0123abc/sub/model.safetensors",
                true,
            ),
            (Method::POST, "/api/models/acme/m", false),
            (Method::PUT, "/acme/m/resolve/main/config.json", false),
            (Method::GET, "/v1/host/wipe", false),
            (Method::POST, "/v1/host/wipe", false),
            (Method::GET, "/v1/models/acme/m", false),
            (Method::GET, "/v1/x/resolve/main/y", false),
            (Method::GET, "/api/whoami-v2", false),
            (Method::GET, "/api/models/acme/m/commit/main", false),
            (
                Method::GET,
                "/api/models/acme/m/../../../v1/host/wipe",
                false,
            ),
            (Method::GET, "/acme/m/resolve/main/%2e%2e/x", false),
            (Method::GET, "/acme//m/resolve/main/x", false),
            (Method::GET, "/", false),
        ];
        for (method, path, relayed) in cases {
            assert_eq!(hub_read_route(&method, path), relayed, "{method} {path}");
        }
    }

    #[test]
    fn urls_naming_the_server_are_pointed_at_the_agent() {
        let s = "https://custody.example:8443";
        let a = "http://127.0.0.1:9000";
        assert_eq!(
            rewrite_value("https://custody.example:8443/acme/m/resolve/main/x", s, a),
            "http://127.0.0.1:9000/acme/m/resolve/main/x"
        );
        assert_eq!(
            rewrite_value(
                "<https://custody.example:8443/api/models/a/b/tree/c?cursor=2>; rel=\"next\"",
                s,
                a
            ),
            "<http://127.0.0.1:9000/api/models/a/b/tree/c?cursor=2>; rel=\"next\""
        );
        // Relative URLs, other hosts, and hosts that merely start like the server stay.
        for same in [
            "/acme/m/resolve/main/x",
            "https://elsewhere.example/x",
            "https://custody.example:84430/x",
            "https://other.example/?u=https://custody.example:8443/x",
        ] {
            assert_eq!(rewrite_value(same, s, a), same);
        }
    }

    #[test]
    fn hop_by_hop_headers_and_host_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:9000"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("authorization", HeaderValue::from_static("Bearer a.b"));
        h.insert("range", HeaderValue::from_static("bytes=5-"));
        h.append("accept", HeaderValue::from_static("a/b"));
        h.append("accept", HeaderValue::from_static("c/d"));
        let out = end_to_end(&h);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "authorization", "range"]);
        assert_eq!(out.get_all("accept").iter().count(), 2);
    }
}
