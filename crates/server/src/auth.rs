//! Authentication (who is asking, from which host) and authorization (may they), for every
//! route.
//!
//! People present bearer tokens `<id>.<secret>`: the id finds the stored record, the secret's
//! SHA-256 is compared in constant time. The header value is never logged; errors name no
//! token part. Exclusive servers present a client certificate issued by the service's host
//! CA (checked by rustls in the handshake); the connection layer ([`crate::tls`]) puts its
//! SHA-256 into the request, and every request looks the host up again, so a revocation
//! takes effect on the host's next request.
//!
//! [`authorize`] is the one authorization function: it gathers the facts of the request from
//! the database, in one SQL statement, and asks the policy engine. Listings read the facts of
//! all their items in one statement too ([`allowed_models`], [`allowed_vendors`]). Any error
//! while gathering facts is a denial.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use crypto::token::TokenSecret;
use policy::{Action, Decision, Facts, Grant, HostFacts, ModelFacts, Principal, ResourceFacts};
use store::{HostRecord, ModelRecord, VendorRecord};

use crate::error::{ApiError, refusal_message};
use crate::refusals::PeerSource;
use crate::state::App;

/// The SHA-256 (lowercase hex) of the client certificate of the connection, when the peer
/// presented one that chains to the host CA. Set by the accept loop.
#[derive(Clone, Debug)]
pub(crate) struct PeerCertificate(pub String);

/// An authenticated request: who, with which credential, from which host, and an id to
/// correlate logs and audit entries.
pub(crate) struct Caller {
    pub principal: Principal,
    pub credential: Credential,
    pub request_id: String,
    /// The host the request came through: `None` without a client certificate.
    pub host: Option<CallerHost>,
}

/// The token a request presented: whose, and where it counts (see `store::users`).
#[derive(Clone, Debug)]
pub struct Credential {
    pub token_id: String,
    pub user_id: String,
    /// Counts for every vendor; otherwise only where a vendor endorsed it.
    pub all_vendors: bool,
    /// The operator bootstrap token: it may only create one named operator token.
    pub bootstrap: bool,
}

pub enum CallerHost {
    Enrolled(HostRecord),
    /// A certificate the CA issued that no longer belongs to an enrolled host (the host was
    /// enrolled again with a new certificate). Treated as revoked.
    Unknown {
        cert_sha256: String,
    },
}

impl CallerHost {
    pub fn name(&self) -> String {
        match self {
            CallerHost::Enrolled(h) => h.name.to_string(),
            CallerHost::Unknown { cert_sha256 } => format!("unenrolled:{}", &cert_sha256[..16]),
        }
    }

    /// The enrollment id, for a host that is enrolled.
    pub fn id(&self) -> Option<&str> {
        match self {
            CallerHost::Enrolled(h) => Some(&h.id),
            CallerHost::Unknown { .. } => None,
        }
    }

    fn facts(&self, now: i64, vendor_approved: bool) -> HostFacts {
        match self {
            CallerHost::Enrolled(h) => HostFacts {
                name: h.name.to_string(),
                groups: vec![h.group.to_string()],
                revoked: h.revoked_at.is_some() || h.not_after <= now,
                vendor_approved,
            },
            CallerHost::Unknown { .. } => HostFacts {
                name: self.name(),
                groups: Vec::new(),
                revoked: true,
                vendor_approved: false,
            },
        }
    }
}

impl Caller {
    /// Who asks, as the facts of a decision need it.
    pub(crate) fn asking(&self) -> Asking<'_> {
        Asking {
            principal: &self.principal,
            credential: &self.credential,
            host: self.host.as_ref(),
        }
    }

    /// `role:user`, as audit entries name actors.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.principal.role, self.principal.user)
    }

    pub fn entry(&self, action: &str, resource: impl Into<String>) -> audit::Entry {
        let mut entry =
            audit::Entry::new(self.actor(), action, resource).with_request_id(&self.request_id);
        entry.host = self.host.as_ref().map(CallerHost::name);
        entry
    }
}

/// The request's id, as the logging middleware chose it (taken from `x-request-id` or new).
pub(crate) fn request_id(parts: &Parts) -> String {
    parts
        .extensions
        .get::<Arc<crate::logging::RequestContext>>()
        .map_or_else(crate::logging::new_request_id, |c| c.id.clone())
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let request_id = request_id(parts);
        let host = match parts.extensions.get::<PeerCertificate>() {
            None => None,
            Some(PeerCertificate(sha)) => Some(match app.store.host_by_cert(sha).await? {
                Some(record) => CallerHost::Enrolled(record),
                None => CallerHost::Unknown {
                    cert_sha256: sha.clone(),
                },
            }),
        };
        match authenticate(parts, app).await {
            Ok((principal, credential)) => {
                if let Some(context) = parts
                    .extensions
                    .get::<Arc<crate::logging::RequestContext>>()
                {
                    context.set_user(&credential.user_id);
                }
                let caller = Caller {
                    principal,
                    credential,
                    request_id,
                    host,
                };
                if caller.credential.bootstrap && !creates_token(parts) {
                    // Default deny: whatever the route, the bootstrap token does one thing.
                    let entry = caller
                        .entry("bootstrap-token.use", "service")
                        .with_outcome(audit::Outcome::Denied)
                        .with_detail(format!(
                            "the bootstrap token may only create an operator token: {} {}",
                            parts.method,
                            parts.uri.path()
                        ));
                    app.store.record(entry).await?;
                    return Err(ApiError::Denied(BOOTSTRAP_ONLY.into()));
                }
                Ok(caller)
            }
            Err(reason) => {
                // The source's first refusal (per reason and minute) has an entry of its own;
                // the others are counted into one aggregated entry (`refusals.rs`).
                let source = parts
                    .extensions
                    .get::<PeerSource>()
                    .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |s| s.0);
                let verdict = app.refusals.note(source, reason, app.store.clock().now());
                tracing::debug!(%request_id, %source, reason, "authentication refused");
                if verdict.record {
                    tracing::info!(%request_id, %source, reason, "authentication refused (further refusals from this source are counted, not logged, for a minute)");
                    let mut entry = audit::Entry::new("anonymous", "authenticate", "service")
                        .with_request_id(&request_id)
                        .with_outcome(audit::Outcome::Denied)
                        .with_detail(format!("{reason} (from {source})"));
                    entry.host = host.as_ref().map(CallerHost::name);
                    if let Err(e) = app.store.record(entry).await {
                        return Err(ApiError::Internal(format!("recording a refusal: {e}")));
                    }
                }
                match verdict.limited {
                    Some(retry_after) => Err(ApiError::RateLimited {
                        message: format!(
                            "too many refused requests from {source}: {reason}; retry after {retry_after} s"
                        ),
                        retry_after,
                    }),
                    None => Err(ApiError::Unauthenticated(reason)),
                }
            }
        }
    }
}

/// What the bootstrap token is told when it asks for anything else.
pub(crate) const BOOTSTRAP_ONLY: &str = "the bootstrap token only creates named operator tokens \
     (custody token create --role operator --name NAME); use the token that prints";

/// `POST /v1/tokens`: the one route the bootstrap token may use.
fn creates_token(parts: &Parts) -> bool {
    parts.method == axum::http::Method::POST && parts.uri.path() == "/v1/tokens"
}

async fn authenticate(parts: &Parts, app: &App) -> Result<(Principal, Credential), &'static str> {
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
    if !crypto::token::is_id(id) {
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
    live_credential(record, app.store.clock().now()).ok_or(INVALID)
}

/// The principal and credential of a token that is neither revoked nor expired.
fn live_credential(record: store::TokenRecord, now: i64) -> Option<(Principal, Credential)> {
    if record.revoked_at.is_some() || record.expires_at.is_some_and(|t| t <= now) {
        return None;
    }
    Some((
        Principal {
            user: record.user,
            role: record.role,
            vendor: record.vendor,
        },
        Credential {
            token_id: record.id,
            user_id: record.user_id,
            all_vendors: record.all_vendors,
            bootstrap: record.bootstrap,
        },
    ))
}

/// The caller a request acts for when it carries a capability instead of a token (the URLs
/// the Hub upload API hands out, `api/hub_upload.rs`): the token that asked for them, as it
/// stands now. A revoked or expired token, or the bootstrap token, is refused.
pub(crate) async fn caller_for_token(
    app: &App,
    parts: &Parts,
    token_id: &str,
) -> Result<Caller, ApiError> {
    let refused = || {
        ApiError::Unauthenticated("the token these upload URLs were made for is no longer valid")
    };
    let record = app.store.token(token_id).await?.ok_or_else(refused)?;
    let (principal, credential) =
        live_credential(record, app.store.clock().now()).ok_or_else(refused)?;
    if credential.bootstrap {
        return Err(refused());
    }
    if let Some(context) = parts
        .extensions
        .get::<Arc<crate::logging::RequestContext>>()
    {
        context.set_user(&credential.user_id);
    }
    Ok(Caller {
        principal,
        credential,
        request_id: request_id(parts),
        host: None,
    })
}

/// What a request acts on.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Service,
    Vendor(&'a VendorRecord),
    Model(&'a ModelRecord),
}

impl Target<'_> {
    /// The answer for a caller who may not see the target: exactly what a missing one gets.
    pub(crate) fn not_found(&self) -> ApiError {
        match self {
            Target::Service => ApiError::NotFound("route".into()),
            Target::Vendor(v) => ApiError::NotFound(format!("vendor {}", v.name)),
            Target::Model(m) => ApiError::ModelNotFound(format!("model {}/{}", m.vendor, m.name)),
        }
    }

    /// The resource as audit entries and logs name it.
    pub fn name(&self) -> String {
        match self {
            Target::Service => "service".into(),
            Target::Vendor(v) => v.name.to_string(),
            Target::Model(m) => format!("{}/{}", m.vendor, m.name),
        }
    }
}

async fn gather_facts(app: &App, caller: &Caller, target: Target<'_>) -> Result<Facts, ApiError> {
    let now = app.store.clock().now();
    Ok(request_facts(&app.store, &caller.asking(), target, now).await?)
}

/// Who asks, as the facts of a decision need it.
pub struct Asking<'a> {
    pub principal: &'a Principal,
    pub credential: &'a Credential,
    pub host: Option<&'a CallerHost>,
}

impl Asking<'_> {
    /// The store's view of the asker: whose facts to read.
    fn in_store(&self) -> store::Asking<'_> {
        store::Asking {
            user: &self.principal.user,
            token_id: &self.credential.token_id,
            all_vendors: self.credential.all_vendors,
            host_id: self.host.and_then(CallerHost::id),
        }
    }

    fn facts(
        &self,
        resource: ResourceFacts,
        groups: &[types::GroupName],
        host: Option<HostFacts>,
        credential_counts: bool,
        now: i64,
    ) -> Facts {
        Facts {
            principal: self.principal.clone(),
            groups: groups.iter().map(ToString::to_string).collect(),
            resource,
            host,
            now,
            credential_counts,
        }
    }

    /// The facts of a decision on a vendor, from what the store read about it.
    fn vendor_facts(&self, v: &VendorRecord, at: store::VendorAccessFacts, now: i64) -> Facts {
        let user = &self.principal.user;
        let only_user = |yes: bool| if yes { vec![user.clone()] } else { Vec::new() };
        self.facts(
            ResourceFacts::Vendor(policy::VendorFacts {
                name: v.name.clone(),
                excluded: only_user(at.excluded),
                readers: only_user(at.holds_grant),
            }),
            &at.groups,
            // Bytes are only ever decided on a model, with the model's vendor's approval.
            self.host.map(|h| h.facts(now, false)),
            at.credential_counts,
            now,
        )
    }

    /// The facts of a decision on a model, from what the store read about it.
    fn model_facts(&self, m: &ModelRecord, access: store::AccessFacts, now: i64) -> Facts {
        let user = &self.principal.user;
        let only_user = |yes: bool| if yes { vec![user.clone()] } else { Vec::new() };
        let facts = ModelFacts {
            id: m.id.clone(),
            vendor: m.vendor.clone(),
            readers: access
                .direct_grant
                .map(|expires_at| Grant {
                    to: user.clone(),
                    expires_at,
                })
                .into_iter()
                .collect(),
            reader_groups: access
                .group_grants
                .into_iter()
                .map(|(group, expires_at)| Grant {
                    to: group.to_string(),
                    expires_at,
                })
                .collect(),
            excluded: only_user(access.excluded_from_model),
            vendor_excluded: only_user(access.excluded_from_vendor),
            host_groups: access.host_groups.iter().map(ToString::to_string).collect(),
            not_before: access.not_before,
            not_after: access.not_after,
        };
        self.facts(
            ResourceFacts::Model(facts),
            &access.groups,
            self.host.map(|h| h.facts(now, access.host_approved)),
            access.credential_counts,
            now,
        )
    }
}

/// Reads from the store what a decision about the asker doing something to `target` depends
/// on: only the facts about this principal, this credential and this host, so the cost does
/// not grow with the number of grants; and all of them in one SQL statement
/// (`store::facts`), since round trips, not lookups, are what a decision costs. Nothing is
/// cached, so a change made through any instance counts on the next request everywhere.
/// Public for the decision benchmark (`examples/`).
pub async fn request_facts(
    store: &store::Store,
    asking: &Asking<'_>,
    target: Target<'_>,
    now: i64,
) -> Result<Facts, store::StoreError> {
    Ok(match target {
        Target::Service => asking.facts(
            ResourceFacts::Service,
            &[],
            asking.host.map(|h| h.facts(now, false)),
            true,
            now,
        ),
        Target::Vendor(v) => {
            let mut read = store
                .vendor_access_facts(&[v.id.as_str()], &asking.in_store(), now)
                .await?;
            let at = read.remove(&v.id).unwrap_or_default();
            asking.vendor_facts(v, at, now)
        }
        Target::Model(m) => {
            let access = store
                .access_facts(&m.id, &m.vendor_id, &asking.in_store())
                .await?;
            asking.model_facts(m, access, now)
        }
    })
}

/// [`request_facts`] for every model of a listing, in one statement (per 400 models) rather
/// than one per model: in the order given, `None` for a model that no longer exists (which
/// its caller denies).
pub async fn models_facts(
    store: &store::Store,
    asking: &Asking<'_>,
    models: &[&ModelRecord],
    now: i64,
) -> Result<Vec<Option<Facts>>, store::StoreError> {
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    let mut read = store
        .access_facts_of_models(&ids, &asking.in_store())
        .await?;
    Ok(models
        .iter()
        .map(|m| match read.remove(&m.id) {
            // The model's vendor as the store has it, or no facts at all.
            Some((vendor_id, access)) if vendor_id == m.vendor_id => {
                Some(asking.model_facts(m, access, now))
            }
            _ => None,
        })
        .collect())
}

/// [`request_facts`] for every vendor of a listing, in one statement, in the order given.
pub async fn vendors_facts(
    store: &store::Store,
    asking: &Asking<'_>,
    vendors: &[&VendorRecord],
    now: i64,
) -> Result<Vec<Facts>, store::StoreError> {
    let ids: Vec<&str> = vendors.iter().map(|v| v.id.as_str()).collect();
    let mut read = store
        .vendor_access_facts(&ids, &asking.in_store(), now)
        .await?;
    Ok(vendors
        .iter()
        .map(|v| asking.vendor_facts(v, read.remove(&v.id).unwrap_or_default(), now))
        .collect())
}

/// Decides without recording: for filtering listings, where each hidden item is not a
/// request of its own. Errors are denials.
pub(crate) async fn allowed(
    app: &App,
    caller: &Caller,
    action: Action,
    target: Target<'_>,
) -> bool {
    match gather_facts(app, caller, target).await {
        Ok(facts) => app.policy.decide(&facts, action).allowed,
        Err(_) => false,
    }
}

/// [`allowed`] for each model of a listing, their facts read in one statement: in the order
/// given. An error reading them denies every one (fail closed).
pub(crate) async fn allowed_models(
    app: &App,
    caller: &Caller,
    action: Action,
    models: &[&ModelRecord],
) -> Vec<bool> {
    match models_facts(
        &app.store,
        &caller.asking(),
        models,
        app.store.clock().now(),
    )
    .await
    {
        Ok(facts) => facts
            .iter()
            .map(|f| {
                f.as_ref()
                    .is_some_and(|f| app.policy.decide(f, action).allowed)
            })
            .collect(),
        Err(e) => {
            tracing::error!(request_id = %caller.request_id, error = %e, "gathering decision facts failed");
            vec![false; models.len()]
        }
    }
}

/// [`allowed`] for each vendor of a listing, their facts read in one statement: in the order
/// given. An error reading them denies every one (fail closed).
pub(crate) async fn allowed_vendors(
    app: &App,
    caller: &Caller,
    action: Action,
    vendors: &[&VendorRecord],
) -> Vec<bool> {
    match vendors_facts(
        &app.store,
        &caller.asking(),
        vendors,
        app.store.clock().now(),
    )
    .await
    {
        Ok(facts) => facts
            .iter()
            .map(|f| app.policy.decide(f, action).allowed)
            .collect(),
        Err(e) => {
            tracing::error!(request_id = %caller.request_id, error = %e, "gathering decision facts failed");
            vec![false; vendors.len()]
        }
    }
}

/// The one authorization function. Every decision is logged with its deciding policies. A
/// denial is recorded in the audit log and returned as an error; an allowed read of metadata
/// is recorded here; any other allowed action is recorded by its handler, in the same
/// transaction as the change it makes (or, for a fetch, with what was served).
///
/// A caller who may not even see a vendor or model gets the answer a missing one gets (the
/// audit entry keeps the real reason), so refusals do not tell which vendors and models
/// exist. Whether the caller may see it is decided as for its user, whatever the credential:
/// a person waiting for a vendor to endorse a new credential learns why.
pub(crate) async fn authorize(
    app: &App,
    caller: &Caller,
    action: Action,
    target: Target<'_>,
) -> Result<Decision, ApiError> {
    let resource = target.name();
    let facts = gather_facts(app, caller, target).await;
    let decision = match &facts {
        Ok(facts) => app.policy.decide(facts, action),
        Err(e) => {
            tracing::error!(request_id = %caller.request_id, error = %e, "gathering decision facts failed");
            Decision {
                allowed: false,
                policy: "engine-error",
                policies: Vec::new(),
                reason: "the access decision could not be made; refusing".into(),
                errors: vec!["facts unavailable".into()],
            }
        }
    };
    tracing::info!(
        request_id = %caller.request_id,
        actor = %caller.actor(),
        host = caller.host.as_ref().map(CallerHost::name),
        action = action.as_str(),
        resource,
        allowed = decision.allowed,
        policies = %decision.policies.join(","),
        errors = decision.errors.len(),
        "authorization decision"
    );
    crate::metrics::authorization(decision.allowed, decision.policy);
    let record_now =
        !decision.allowed || matches!(action, Action::ReadMetadata | Action::ListVendors);
    if record_now {
        let mut entry = caller
            .entry(action.as_str(), resource)
            .with_decision(decision.allowed, &policy_ids(&decision));
        if !decision.allowed {
            entry = entry.with_outcome(audit::Outcome::Denied);
        }
        app.store.record(entry).await?;
    }
    if decision.allowed {
        return Ok(decision);
    }
    let visible = match &facts {
        Ok(facts) if !matches!(target, Target::Service) => {
            let mut as_user = facts.clone();
            as_user.credential_counts = true;
            app.policy.decide(&as_user, Action::ReadMetadata).allowed
        }
        Ok(_) => true,
        Err(_) => false,
    };
    if visible {
        Err(ApiError::Denied(refusal_message(
            &decision,
            action,
            facts.as_ref().ok(),
        )))
    } else {
        Err(target.not_found())
    }
}

/// The deciding policies as an audit entry names them: comma-separated ids, or the reason
/// there were none.
pub(crate) fn policy_ids(decision: &Decision) -> String {
    if decision.policies.is_empty() {
        decision.policy.to_owned()
    } else {
        decision.policies.join(",")
    }
}
