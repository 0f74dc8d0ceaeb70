//! The Cedar engine: a strictly validated schema and policy set, and decisions over facts.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{LazyLock, Mutex};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity,
    EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet, Request, RestrictedExpression,
    Schema, ValidationMode, Validator,
};
use serde::Serialize;
use types::Role;

use crate::Action;
use crate::error::PolicyError;
use crate::facts::{Facts, ResourceFacts};

/// The outcome of one decision, as data for logs and the audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// True only when Cedar says Allow and no error occurred.
    pub allowed: bool,
    /// The first deciding policy id (`policies[0]`), `default-deny` when none decided,
    /// `engine-error` when the decision could not be made. Kept for the server's audit
    /// entries; `policies` is the full list.
    pub policy: &'static str,
    /// Ids (@id) of the deciding policies: the permits of an allow, the forbids of a
    /// denial (in policy-file order). Empty for a default denial.
    pub policies: Vec<String>,
    /// Human-readable refusal (empty when allowed): the @reason of each deciding forbid, or
    /// a default-deny sentence.
    pub reason: String,
    /// Evaluation or preparation errors. Any error makes the decision a denial.
    pub errors: Vec<String>,
}

impl Decision {
    fn failed(errors: Vec<String>) -> Self {
        Decision {
            allowed: false,
            policy: "engine-error",
            policies: Vec::new(),
            reason: "the access policy could not be evaluated for this request; refusing".into(),
            errors,
        }
    }
}

/// Interned policy ids, so a `Decision` can carry a `&'static str` (see `Decision::policy`).
/// Each distinct id is leaked once per process; ids come from the policy files only.
fn intern(id: &str) -> &'static str {
    static IDS: LazyLock<Mutex<BTreeSet<&'static str>>> =
        LazyLock::new(|| Mutex::new(BTreeSet::new()));
    let mut ids = IDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = ids.get(id) {
        return found;
    }
    let leaked: &'static str = Box::leak(id.to_owned().into_boxed_str());
    ids.insert(leaked);
    leaked
}

#[derive(Debug, Clone)]
struct PolicyMeta {
    order: usize,
    id: &'static str,
    reason: Option<String>,
}

struct TypeNames {
    user: EntityTypeName,
    group: EntityTypeName,
    vendor: EntityTypeName,
    model: EntityTypeName,
    host: EntityTypeName,
    host_group: EntityTypeName,
    service: EntityTypeName,
}

fn type_name(name: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(name).map_err(|e| PolicyError::Schema(e.to_string()))
}

impl TypeNames {
    fn new() -> Result<Self, PolicyError> {
        Ok(TypeNames {
            user: type_name("User")?,
            group: type_name("Group")?,
            vendor: type_name("Vendor")?,
            model: type_name("Model")?,
            host: type_name("Host")?,
            host_group: type_name("HostGroup")?,
            service: type_name("Service")?,
        })
    }
}

fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

/// A loaded, strictly validated policy engine. Cheap to share (`Send + Sync`).
pub struct PolicyEngine {
    pub(crate) schema: Schema,
    /// Every policy; decisions use the per-action sets in `actions` (tests compare both).
    #[cfg(test)]
    pub(crate) policies: PolicySet,
    meta: HashMap<PolicyId, PolicyMeta>,
    authorizer: Authorizer,
    types: TypeNames,
    /// Each action with its uid and the policies whose action scope can match it. Cedar
    /// evaluates every policy it is given; a request only ever needs those whose scope
    /// names its action (about a quarter of the set), and leaving out a policy whose scope
    /// cannot match changes no decision (see `scope_can_match`).
    actions: Vec<ActionPolicies>,
}

struct ActionPolicies {
    action: Action,
    uid: EntityUid,
    policies: PolicySet,
}

/// Whether a policy with action scope `scope` could apply to a request for `action`.
/// Conservative: with action groups in the schema, an `in` scope is kept for every action
/// (membership would need the hierarchy); keeping a policy that cannot apply costs time,
/// never a decision.
fn scope_can_match(scope: &ActionConstraint, action: &EntityUid, schema_has_groups: bool) -> bool {
    match scope {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(only) => only == action,
        ActionConstraint::In(any_of) => schema_has_groups || any_of.contains(action),
    }
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.policy_ids())
            .finish_non_exhaustive()
    }
}

/// A request ready for the authorizer: what `PolicyEngine::prepare` builds from facts.
pub struct Prepared {
    pub(crate) request: Request,
    pub(crate) entities: Entities,
    pub(crate) role: Role,
    pub(crate) action: Action,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("role", &self.role)
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

fn article(role: Role) -> &'static str {
    match role {
        Role::Operator | Role::Auditor => "an",
        Role::VendorAdmin | Role::Committer => "a",
    }
}

impl PolicyEngine {
    /// Parse and strictly validate a schema and one source of policies (tests, tools).
    pub fn from_sources(schema: &str, policies: &str) -> Result<Self, PolicyError> {
        Self::from_files(schema, &[("<policies>", policies)])
    }

    /// Parse and strictly validate a schema and named policy sources (file name, text).
    ///
    /// Every policy needs `@id("...")` (unique across files) and every forbid a
    /// `@reason("...")`. Templates are refused. Any validation error or warning, and any
    /// schema warning, is an error.
    pub fn from_files(schema: &str, files: &[(&str, &str)]) -> Result<Self, PolicyError> {
        let (schema, schema_warnings) =
            Schema::from_cedarschema_str(schema).map_err(|e| PolicyError::Schema(e.to_string()))?;
        let schema_warnings: Vec<String> = schema_warnings.map(|w| w.to_string()).collect();
        if !schema_warnings.is_empty() {
            return Err(PolicyError::Schema(schema_warnings.join("; ")));
        }

        let mut set = PolicySet::new();
        let mut meta = HashMap::new();
        let mut order = 0usize;
        for (file, src) in files {
            let parsed = PolicySet::from_str(src).map_err(|e| PolicyError::Parse {
                file: (*file).to_owned(),
                message: format!("{e}"),
            })?;
            if let Some(t) = parsed.templates().next() {
                return Err(PolicyError::Template {
                    file: (*file).to_owned(),
                    id: t.annotation("id").unwrap_or("?").to_owned(),
                });
            }
            // The parser names policies policy0, policy1, ... in source order.
            let mut in_file: Vec<_> = parsed.policies().collect();
            in_file.sort_by_key(|p| {
                p.id()
                    .to_string()
                    .strip_prefix("policy")
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(usize::MAX)
            });
            for policy in in_file {
                let Some(id) = policy.annotation("id") else {
                    return Err(PolicyError::MissingId {
                        file: (*file).to_owned(),
                        policy: policy.to_string().chars().take(120).collect(),
                    });
                };
                let id = id.to_owned();
                let reason = policy.annotation("reason").map(str::to_owned);
                if policy.effect() == Effect::Forbid && reason.as_deref().is_none_or(str::is_empty)
                {
                    return Err(PolicyError::MissingReason {
                        file: (*file).to_owned(),
                        id,
                    });
                }
                let policy_id = PolicyId::new(&id);
                set.add(policy.new_id(policy_id.clone())).map_err(|_| {
                    PolicyError::DuplicateId {
                        file: (*file).to_owned(),
                        id: id.clone(),
                    }
                })?;
                meta.insert(
                    policy_id,
                    PolicyMeta {
                        order,
                        id: intern(&id),
                        reason,
                    },
                );
                order += 1;
            }
        }
        if meta.is_empty() {
            return Err(PolicyError::NoPolicies("the given sources".into()));
        }

        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        let problems: Vec<String> = result
            .validation_errors()
            .map(|e| format!("error: {e}"))
            .chain(
                result
                    .validation_warnings()
                    .map(|w| format!("warning: {w}")),
            )
            .collect();
        if !problems.is_empty() {
            return Err(PolicyError::Validation(problems));
        }

        let types = TypeNames::new()?;
        let action_type = type_name("Action")?;
        let schema_has_groups = schema.action_groups().next().is_some();
        let mut actions = Vec::with_capacity(Action::ALL.len());
        for action in Action::ALL {
            let action_uid = uid(&action_type, action.cedar_name());
            let mut policies = PolicySet::new();
            for policy in set.policies() {
                if scope_can_match(&policy.action_constraint(), &action_uid, schema_has_groups) {
                    policies
                        .add(policy.clone())
                        .map_err(|e| PolicyError::Schema(e.to_string()))?;
                }
            }
            actions.push(ActionPolicies {
                action,
                uid: action_uid,
                policies,
            });
        }
        Ok(PolicyEngine {
            schema,
            #[cfg(test)]
            policies: set,
            meta,
            authorizer: Authorizer::new(),
            types,
            actions,
        })
    }

    /// The policy ids, in file order.
    pub fn policy_ids(&self) -> Vec<&'static str> {
        let mut all: Vec<&PolicyMeta> = self.meta.values().collect();
        all.sort_by_key(|m| m.order);
        all.into_iter().map(|m| m.id).collect()
    }

    /// Decide one request. Fails closed: any error in preparing or evaluating is a denial.
    pub fn decide(&self, facts: &Facts, action: Action) -> Decision {
        match self.prepare(facts, action) {
            Ok(prepared) => self.decide_prepared(&prepared),
            Err(e) => Decision::failed(vec![e.to_string()]),
        }
    }

    /// Build the schema-checked entity store and request for `facts` (the per-request cost
    /// besides the decision itself).
    pub fn prepare(&self, facts: &Facts, action: Action) -> Result<Prepared, PolicyError> {
        let t = &self.types;
        let bad = |e: &dyn std::fmt::Display| PolicyError::Facts(e.to_string());
        let now = facts.now;
        let principal = &facts.principal;
        let principal_uid = uid(&t.user, principal.user.as_str());
        let mut entities: Vec<Entity> = Vec::with_capacity(8 + facts.groups.len());

        // The principal, in its groups.
        let groups: HashSet<&str> = facts.groups.iter().map(String::as_str).collect();
        let mut attrs = HashMap::from([(
            "role".to_owned(),
            RestrictedExpression::new_string(principal.role.as_str().to_owned()),
        )]);
        if let Some(vendor) = &principal.vendor {
            attrs.insert(
                "vendor".to_owned(),
                RestrictedExpression::new_entity_uid(uid(&t.vendor, vendor.as_str())),
            );
        }
        let parents = groups.iter().map(|g| uid(&t.group, g)).collect();
        entities.push(Entity::new(principal_uid.clone(), attrs, parents).map_err(|e| bad(&e))?);
        for g in &groups {
            entities.push(Entity::new_no_attrs(uid(&t.group, g), HashSet::new()));
        }

        let users = |names: &mut dyn Iterator<Item = &str>| {
            RestrictedExpression::new_set(
                names.map(|n| RestrictedExpression::new_entity_uid(uid(&t.user, n))),
            )
        };

        let resource_uid = match &facts.resource {
            ResourceFacts::Service => uid(&t.service, "custody"),
            ResourceFacts::Vendor(v) => {
                let vendor_uid = uid(&t.vendor, v.name.as_str());
                let attrs = HashMap::from([
                    (
                        "excluded".to_owned(),
                        users(&mut v.excluded.iter().map(|u| u.as_str())),
                    ),
                    (
                        "readers".to_owned(),
                        users(&mut v.readers.iter().map(|u| u.as_str())),
                    ),
                ]);
                entities.push(
                    Entity::new(vendor_uid.clone(), attrs, HashSet::new()).map_err(|e| bad(&e))?,
                );
                vendor_uid
            }
            ResourceFacts::Model(m) => {
                let vendor_uid = uid(&t.vendor, m.vendor.as_str());
                // A model's decision never reads the vendor's readers: the model has its own.
                let vendor_attrs = HashMap::from([
                    (
                        "excluded".to_owned(),
                        users(&mut m.vendor_excluded.iter().map(|u| u.as_str())),
                    ),
                    ("readers".to_owned(), users(&mut std::iter::empty())),
                ]);
                entities.push(
                    Entity::new(vendor_uid.clone(), vendor_attrs, HashSet::new())
                        .map_err(|e| bad(&e))?,
                );
                let model_uid = uid(&t.model, &m.id);
                let mut attrs =
                    HashMap::from([
                        (
                            "vendor".to_owned(),
                            RestrictedExpression::new_entity_uid(vendor_uid.clone()),
                        ),
                        (
                            "readers".to_owned(),
                            users(
                                &mut m
                                    .readers
                                    .iter()
                                    .filter(|g| g.is_live(now))
                                    .map(|g| g.to.as_str()),
                            ),
                        ),
                        (
                            "reader_groups".to_owned(),
                            RestrictedExpression::new_set(
                                m.reader_groups.iter().filter(|g| g.is_live(now)).map(|g| {
                                    RestrictedExpression::new_entity_uid(uid(&t.group, &g.to))
                                }),
                            ),
                        ),
                        (
                            "excluded".to_owned(),
                            users(&mut m.excluded.iter().map(|u| u.as_str())),
                        ),
                        (
                            "host_groups".to_owned(),
                            RestrictedExpression::new_set(m.host_groups.iter().map(|g| {
                                RestrictedExpression::new_entity_uid(uid(&t.host_group, g))
                            })),
                        ),
                    ]);
                if let Some(nb) = m.not_before {
                    attrs.insert("not_before".to_owned(), RestrictedExpression::new_long(nb));
                }
                if let Some(na) = m.not_after {
                    attrs.insert("not_after".to_owned(), RestrictedExpression::new_long(na));
                }
                entities.push(
                    Entity::new(model_uid.clone(), attrs, HashSet::from([vendor_uid]))
                        .map_err(|e| bad(&e))?,
                );
                model_uid
            }
        };

        let mut context = vec![
            ("now".to_owned(), RestrictedExpression::new_long(now)),
            (
                "credential_counts".to_owned(),
                RestrictedExpression::new_bool(facts.credential_counts),
            ),
        ];
        if let Some(host) = &facts.host {
            let host_uid = uid(&t.host, &host.name);
            let attrs = HashMap::from([
                (
                    "revoked".to_owned(),
                    RestrictedExpression::new_bool(host.revoked),
                ),
                (
                    "vendor_approved".to_owned(),
                    RestrictedExpression::new_bool(host.vendor_approved),
                ),
            ]);
            let parents = host.groups.iter().map(|g| uid(&t.host_group, g)).collect();
            entities.push(Entity::new(host_uid.clone(), attrs, parents).map_err(|e| bad(&e))?);
            context.push((
                "host".to_owned(),
                RestrictedExpression::new_entity_uid(host_uid),
            ));
        }

        let action_uid = self.action_policies(action)?.uid.clone();
        let context = Context::from_pairs(context).map_err(|e| bad(&e))?;
        let request = Request::new(
            principal_uid,
            action_uid,
            resource_uid,
            context,
            Some(&self.schema),
        )
        .map_err(|e| bad(&e))?;
        let entities =
            Entities::from_entities(entities, Some(&self.schema)).map_err(|e| bad(&e))?;
        Ok(Prepared {
            request,
            entities,
            role: principal.role,
            action,
        })
    }

    fn action_policies(&self, action: Action) -> Result<&ActionPolicies, PolicyError> {
        self.actions
            .iter()
            .find(|a| a.action == action)
            .ok_or_else(|| PolicyError::Facts(format!("unknown action {}", action.as_str())))
    }

    /// Decide a prepared request. Allowed only when Cedar allows and reports no error.
    pub fn decide_prepared(&self, prepared: &Prepared) -> Decision {
        let policies = match self.action_policies(prepared.action) {
            Ok(found) => &found.policies,
            Err(e) => return Decision::failed(vec![e.to_string()]),
        };
        self.decide_with(prepared, policies)
    }

    /// Decide a prepared request against every policy, not only those of its action (the
    /// tests check that both agree).
    #[cfg(test)]
    pub(crate) fn decide_prepared_all_policies(&self, prepared: &Prepared) -> Decision {
        self.decide_with(prepared, &self.policies)
    }

    fn decide_with(&self, prepared: &Prepared, policies: &PolicySet) -> Decision {
        let response =
            self.authorizer
                .is_authorized(&prepared.request, policies, &prepared.entities);
        let diagnostics = response.diagnostics();
        let errors: Vec<String> = diagnostics.errors().map(|e| e.to_string()).collect();
        let mut deciding: Vec<&PolicyMeta> = diagnostics
            .reason()
            .filter_map(|id| self.meta.get(id))
            .collect();
        deciding.sort_by_key(|m| m.order);
        let policies: Vec<String> = deciding.iter().map(|m| m.id.to_owned()).collect();

        if !errors.is_empty() {
            return Decision {
                policies,
                ..Decision::failed(errors)
            };
        }
        let allowed = response.decision() == CedarDecision::Allow;
        let policy = deciding.first().map_or("default-deny", |m| m.id);
        let reason = if allowed {
            String::new()
        } else {
            let reasons: Vec<&str> = deciding
                .iter()
                .filter_map(|m| m.reason.as_deref())
                .collect();
            if reasons.is_empty() {
                format!(
                    "{} {} may not {} here",
                    article(prepared.role),
                    prepared.role,
                    prepared.action.as_str()
                )
            } else {
                reasons.join("; ")
            }
        };
        Decision {
            allowed,
            policy,
            policies,
            reason,
            errors,
        }
    }
}
