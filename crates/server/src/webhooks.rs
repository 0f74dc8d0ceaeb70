//! Vendors' webhooks: the background job that sends a vendor's events to its receiver.
//!
//! The audit log is the queue. Each round (under the `webhooks` lease, so one instance sends)
//! reads, for every webhook whose attempt is due, the vendor's entries after its cursor, keeps
//! the kinds a webhook carries (fetches, refusals, grants and revocations, exclusions,
//! deletions), and POSTs them as one JSON body signed with HMAC-SHA256 under the webhook's
//! secret (`v1=` hex of HMAC(secret, timestamp "." body), with the timestamp in its own header,
//! so a receiver refuses replays). A 2xx answer moves the cursor, with an audit entry naming
//! the range; anything else is recorded and retried with exponential backoff (2 s doubling,
//! at most 5 minutes). The receiver must be HTTPS on a host the operator allows
//! (`[webhooks] allowed_hosts`): a webhook makes the server send requests out, and an
//! unrestricted one would let a vendor admin reach the operator's internal network.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::config::WebhookConfig;
use crate::state::App;

/// Events per delivery.
const BATCH: u64 = 100;
/// Longest wait between attempts.
const MAX_BACKOFF_SECS: i64 = 300;
/// How often the job looks for due webhooks.
const ROUND: Duration = Duration::from_secs(1);

/// The URL, if it is HTTPS on an allowed host; otherwise why not.
pub(crate) fn check_url(config: &WebhookConfig, url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if parsed.scheme() != "https" {
        return Err("a webhook receiver must be https://".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a webhook URL may not carry credentials".into());
    }
    let host = parsed.host_str().ok_or("the URL names no host")?;
    let with_port = format!("{host}:{}", parsed.port_or_known_default().unwrap_or(443));
    if !config
        .allowed_hosts
        .iter()
        .any(|allowed| allowed == host || *allowed == with_port)
    {
        return Err(format!(
            "the operator does not allow webhooks to {host} (server configuration: \
             [webhooks] allowed_hosts)"
        ));
    }
    Ok(parsed)
}

/// Whether a webhook carries this event.
fn carried(event: &wire::audit::ActivityEvent) -> bool {
    let action = event.action.as_str();
    event.outcome == "denied"
        || action.starts_with("fetch")
        || action.starts_with("grant")
        || action.starts_with("revoke")
        || action.starts_with("exclude")
        || action.starts_with("unexclude")
        || action.starts_with("deletion")
}

/// The signature header's value for `body` sent at `timestamp`.
pub(crate) fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!(
        "v1={}",
        hex::encode(crypto::mac::hmac_sha256(secret, &message))
    )
}

pub(crate) async fn work(app: Arc<App>, _fence: store::Fence) {
    loop {
        tokio::time::sleep(ROUND).await;
        let due = match app.store.due_webhooks(app.store.clock().now()).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading webhooks failed; will retry");
                continue;
            }
        };
        for hook in due {
            if let Err(e) = deliver(&app, &hook).await {
                tracing::warn!(vendor = %hook.vendor, error = %e, "webhook round failed");
            }
        }
    }
}

async fn deliver(app: &App, hook: &store::Webhook) -> anyhow::Result<()> {
    let rows = app
        .store
        .vendor_entries(&hook.vendor_id, hook.delivered_seq, BATCH)
        .await?;
    let Some(last) = rows.last() else {
        return Ok(());
    };
    let through = last.seq + 1;
    let mut events = Vec::new();
    for row in &rows {
        let entry = audit::Entry::parse(&row.bytes)?;
        let event = crate::api::activity_event(row.seq, entry);
        if carried(&event) {
            events.push(event);
        }
    }
    if events.is_empty() {
        app.store
            .webhook_delivered(&hook.vendor_id, hook.delivered_seq, through, None)
            .await?;
        return Ok(());
    }
    let (first, last_event) = (events[0].index, events[events.len() - 1].index);
    let body = serde_json::to_vec(&wire::audit::WebhookDelivery {
        vendor: hook.vendor.clone(),
        events,
    })?;
    let entry = |outcome: audit::Outcome, detail: String| {
        audit::Entry::new("system", "webhook.deliver", hook.vendor.as_str())
            .with_outcome(outcome)
            .with_detail(detail)
    };
    match send(app, hook, &body).await {
        Ok(status) => {
            let detail = format!(
                "events {first}..={last_event} delivered to {} (HTTP {status})",
                hook.url
            );
            app.store
                .webhook_delivered(
                    &hook.vendor_id,
                    hook.delivered_seq,
                    through,
                    Some(entry(audit::Outcome::Ok, detail)),
                )
                .await?;
        }
        Err(why) => {
            let wait = 2i64
                .saturating_pow(u32::try_from(hook.failures.min(16)).unwrap_or(16) + 1)
                .min(MAX_BACKOFF_SECS);
            let detail = format!(
                "delivering events {first}..={last_event} to {} failed: {why}; next attempt in {wait} s",
                hook.url
            );
            tracing::info!(vendor = %hook.vendor, %detail, "webhook delivery failed");
            app.store
                .webhook_failed(
                    &hook.vendor_id,
                    app.store.clock().now() + wait,
                    &why,
                    entry(audit::Outcome::Failed, detail),
                )
                .await?;
        }
    }
    Ok(())
}

/// POSTs `body`; the status on a 2xx answer, otherwise a short reason.
async fn send(app: &App, hook: &store::Webhook, body: &[u8]) -> Result<u16, String> {
    let url = check_url(&app.config.webhooks, &hook.url)?;
    let client = client(hook.ca_pem.as_deref())?;
    let timestamp = app.store.clock().now();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-custody-timestamp", timestamp.to_string())
        .header(
            "x-custody-signature",
            signature(&hook.secret, timestamp, body),
        )
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                "cannot connect".to_owned()
            } else if e.is_timeout() {
                "timed out".to_owned()
            } else {
                "the request failed (TLS or protocol)".to_owned()
            }
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(format!("the receiver answered HTTP {}", status.as_u16()))
    }
}

fn client(ca_pem: Option<&str>) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            use rustls_pki_types::pem::PemObject;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|_| "the webhook's CA is not PEM".to_owned())?;
                roots
                    .add(cert)
                    .map_err(|_| "the webhook's CA is not a usable certificate".to_owned())?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let tls = rustls::ClientConfig::builder_with_provider(crypto::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}
