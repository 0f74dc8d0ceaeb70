//! Authentication (who is asking) and authorization (may they), for every route.
//!
//! Tokens are `<id>.<secret>`. The id finds the stored record; the secret's SHA-256 is
//! compared in constant time. The header value is never logged; errors name no token part.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use crypto::token::TokenSecret;
use policy::{Action, Decision, Principal, Resource};

use crate::App;
use crate::error::ApiError;

/// An authenticated request: who, and an id to correlate logs and audit entries.
pub(crate) struct Caller {
    pub principal: Principal,
    pub request_id: String,
}

impl Caller {
    /// `role:user`, as audit entries name actors.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.principal.role, self.principal.user)
    }

    pub fn entry(&self, action: &str, resource: impl Into<String>) -> audit::Entry {
        audit::Entry::new(self.actor(), action, resource).with_request_id(&self.request_id)
    }
}

fn request_id() -> String {
    crypto::token::random_id().unwrap_or_else(|_| "unknown".into())
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let request_id = request_id();
        let result = authenticate(parts, app).await;
        match result {
            Ok(principal) => Ok(Caller {
                principal,
                request_id,
            }),
            Err(reason) => {
                tracing::info!(%request_id, reason, "authentication refused");
                let entry = audit::Entry::new("anonymous", "authenticate", "service")
                    .with_request_id(&request_id)
                    .with_outcome(audit::Outcome::Denied)
                    .with_detail(reason);
                if let Err(e) = app.store.record(entry).await {
                    return Err(ApiError::Internal(format!("recording a refusal: {e}")));
                }
                Err(ApiError::Unauthenticated(reason))
            }
        }
    }
}

async fn authenticate(parts: &Parts, app: &App) -> Result<Principal, &'static str> {
    const MISSING: &str = "missing or malformed bearer token";
    const INVALID: &str = "invalid, expired or revoked token";
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(MISSING)?;
    let presented = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or(MISSING)?;
    let (id, secret) = presented.trim().split_once('.').ok_or(MISSING)?;
    let valid_id = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid_id {
        return Err(INVALID);
    }
    let secret = TokenSecret::from_string(secret.to_owned());
    // Errors here are failures to authenticate: fail closed.
    let record = app
        .store
        .token(id)
        .await
        .map_err(|_| INVALID)?
        .ok_or(INVALID)?;
    if !crypto::token::verify(&secret, &record.secret_hash) {
        return Err(INVALID);
    }
    let now = store_now();
    if record.revoked_at.is_some() || record.expires_at.is_some_and(|t| t <= now) {
        return Err(INVALID);
    }
    Ok(Principal {
        user: record.user,
        role: record.role,
        vendor: record.vendor,
    })
}

pub(crate) fn store_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The one authorization function. A denial is logged, recorded in the audit log and
/// returned as an error; an allow is returned for the caller to record with its action.
pub(crate) async fn authorize(
    app: &App,
    caller: &Caller,
    action: Action,
    resource: Resource<'_>,
    resource_name: &str,
) -> Result<Decision, ApiError> {
    let decision = policy::decide(&caller.principal, action, resource);
    tracing::info!(
        request_id = %caller.request_id,
        actor = %caller.actor(),
        action = action.as_str(),
        resource = resource_name,
        allowed = decision.allowed,
        policy = decision.policy,
        "authorization decision"
    );
    if decision.allowed {
        return Ok(decision);
    }
    let entry = caller
        .entry(action.as_str(), resource_name)
        .with_decision(false, decision.policy)
        .with_outcome(audit::Outcome::Denied);
    app.store.record(entry).await?;
    Err(ApiError::Denied(decision.reason))
}
