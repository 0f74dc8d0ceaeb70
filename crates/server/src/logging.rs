//! One log line per request, and the request id that joins it to the audit log.
//!
//! Every request gets an id: the client's `x-request-id` when it is a plain short token
//! (letters, digits, `-`, `_`, `.`, `:`; at most 64), otherwise a random one. The response
//! carries it back in `x-request-id`, the request's audit entry records it (`request_id`), and
//! every log line written while the request is handled carries it (the `request` span), so a
//! log line and an audit entry join on it. A client-chosen id is only a correlation aid: it is
//! not unique and proves nothing.
//!
//! The access line (target `custody::access`) has the route template (never the raw path or
//! query), method, status, duration to the response head, the caller's user id when the
//! request authenticated, and the request id; never a header, so never a token. Health probes
//! log at debug.
//!
//! The same middleware feeds the request metrics ([`crate::metrics`]): requests by route and
//! status, latency, file bytes received and sent, transfers in flight.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use tracing::Instrument;

pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// What is known about a request as it is handled: set by the middleware, the route layer
/// and authentication, read back for the access line.
pub(crate) struct RequestContext {
    pub id: String,
    route: OnceLock<String>,
    user_id: OnceLock<String>,
}

impl RequestContext {
    /// Notes the authenticated caller's user id (once).
    pub fn set_user(&self, user_id: &str) {
        let _ = self.user_id.set(user_id.to_owned());
    }
}

/// The client's request id when it is acceptable, else a new random one.
fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_id(v))
        .map_or_else(new_request_id, str::to_owned)
}

pub(crate) fn new_request_id() -> String {
    crypto::token::random_id().unwrap_or_else(|_| "unknown".into())
}

/// Short, and nothing a log or an audit reader could mistake for structure.
fn acceptable_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The outer middleware: request id, span, access line, request metrics.
pub(crate) async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let context = Arc::new(RequestContext {
        id: request_id(request.headers()),
        route: OnceLock::new(),
        user_id: OnceLock::new(),
    });
    request.extensions_mut().insert(context.clone());
    let method = request.method().clone();
    let span = tracing::info_span!("request", request_id = %context.id);
    let mut response = next.run(request).instrument(span).await;
    let elapsed = started.elapsed();
    if let Ok(value) = HeaderValue::from_str(&context.id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let route = context.route.get().map_or("unmatched", String::as_str);
    let status = response.status().as_u16();
    let user_id = context.user_id.get().map_or("", String::as_str);
    let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    if matches!(route, "/healthz" | "/readyz") {
        tracing::debug!(target: "custody::access", request_id = %context.id, method = %method, route, status, duration_ms, user_id, "request");
    } else {
        tracing::info!(target: "custody::access", request_id = %context.id, method = %method, route, status, duration_ms, user_id, "request");
    }
    // A client may send any method name: the label takes a known set, so no client can grow
    // the number of series.
    let method = known_method(&method);
    metrics::counter!(
        "custody_http_requests_total",
        "method" => method,
        "route" => route.to_owned(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "custody_http_request_duration_seconds",
        "method" => method,
        "route" => route.to_owned()
    )
    .record(elapsed.as_secs_f64());
    response
}

fn known_method(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| method.as_str() == *known)
        .unwrap_or("other")
}

/// Routes whose request body is (part of) an uploaded file: the native upload, and a part of a
/// Hub LFS upload (`api/hub_upload.rs`).
const UPLOAD_ROUTES: [&str; 2] = [
    "/v1/uploads/{id}/files/{index}",
    "/api/lfs-upload/{session}/{key}/{index}/parts/{part}",
];
/// Routes whose response body is a stored file, and the API they belong to.
const DOWNLOAD_ROUTES: [(&str, &str); 2] = [
    (
        "/v1/models/{vendor}/{model}/revisions/{rev}/files/{*path}",
        "native",
    ),
    ("/{ns}/{name}/resolve/{rev}/{*path}", "hub"),
];

/// The inner (route) layer: notes the matched route template, and meters file bodies.
pub(crate) async fn route(matched: MatchedPath, request: Request, next: Next) -> Response {
    let route = matched.as_str().to_owned();
    if let Some(context) = request.extensions().get::<Arc<RequestContext>>() {
        let _ = context.route.set(route.clone());
    }
    let request = if UPLOAD_ROUTES.contains(&route.as_str()) {
        let transfer = InFlight::start("upload");
        let bytes = metrics::counter!("custody_uploaded_bytes_total");
        request.map(|body| {
            Body::new(body.map_frame(move |frame| {
                let _ = &transfer;
                if let Some(data) = frame.data_ref() {
                    bytes.increment(data.len() as u64);
                }
                frame
            }))
        })
    } else {
        request
    };
    let response = next.run(request).await;
    match DOWNLOAD_ROUTES.iter().find(|(r, _)| *r == route) {
        Some((_, api)) if response.status().is_success() => {
            let transfer = InFlight::start("download");
            let bytes = metrics::counter!("custody_served_bytes_total", "api" => *api);
            response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &transfer;
                    if let Some(data) = frame.data_ref() {
                        bytes.increment(data.len() as u64);
                    }
                    frame
                }))
            })
        }
        _ => response,
    }
}

/// A transfer in flight, counted until its body is dropped (sent, received, or cut).
struct InFlight(metrics::Gauge);

impl InFlight {
    fn start(direction: &'static str) -> InFlight {
        let gauge = metrics::gauge!("custody_transfers_in_flight", "direction" => direction);
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_short_request_ids_are_taken_from_the_client() {
        assert!(acceptable_id("3f9c2a1e-77aa-4b1c"));
        assert!(acceptable_id("trace:abc.def_1"));
        assert!(!acceptable_id(""));
        assert!(!acceptable_id(&"a".repeat(65)));
        assert!(!acceptable_id("a b"));
        assert!(!acceptable_id("a\"b"));
        assert!(!acceptable_id("line\nbreak"));
        assert!(!acceptable_id("{\"json\":1}"));
    }

    #[test]
    fn method_labels_are_a_fixed_set() {
        use axum::http::Method;
        assert_eq!(known_method(&Method::PUT), "PUT");
        let invented = Method::from_bytes(b"X-INVENTED-1").unwrap();
        assert_eq!(known_method(&invented), "other");
    }
}
