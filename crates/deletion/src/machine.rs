//! The shred state machine: carrying out a deletion so that no copy, backups included, can be
//! read again.
//!
//! ```text
//! access_revoked   the request's transaction marked the models deleted: from then on every
//!   │              fetch answers 410 and no new key is unwrapped for them
//!   ├─ (prepare)   record the models' wrapped keys, their objects and the current epoch N
//!   ▼
//! keys_destroyed   epoch N+1 exists (new root, new epoch key); in ONE transaction the deleted
//!   │              models' wrapped keys are erased and every surviving key re-wrapped to N+1
//!   ▼
//! epoch_destroyed  epoch N's root is destroyed (file overwritten and removed, or KMS key
//!   │              scheduled for deletion), then its epoch file: every backup is now inert
//!   ▼
//! objects_deleted  every stored version of every object removed, unfinished uploads aborted
//!   ▼
//! checked          post-checks, each asking the authority itself and able to fail: the record
//!   │              covers what the database marks deleted; storage reports each object gone;
//!   │              the root of trust reports every destroyed root gone; the recorded wrapped
//!   │              keys open under no epoch whose key the ledger still holds
//!   ▼
//! certified        the signed certificate is stored
//! ```
//!
//! The states are `store::DeletionState` (a CHECK constraint in the database); the work record
//! each step writes is versioned and read strictly (`work.rs`).
//!
//! Each arrow is a compare-and-set of the state in the same transaction as its audit entry,
//! and each step is idempotent, so a crash anywhere resumes where it stopped and repeats at
//! most the interrupted step. The runner is a singleton across instances: it runs under the
//! `deletions` lease (the server's background layer), and every write it makes (state moves, the key ledger)
//! is fenced by the lease's token, so a runner that lost its lease changes nothing.
//!
//! Deletions fail independently. Each pass first takes every due deletion through key
//! destruction (up to `epoch_destroyed`), then each one through the rest, so no deletion's
//! keys wait for another deletion's storage or certificate. A step that fails is logged at
//! error level, recorded in the deletion (attempts, the error, when it is retried: shown in
//! its status) and retried with exponential backoff (5 s doubling up to 5 minutes), while the
//! other deletions go on.
//!
//! Rotations: the models' keys were wrapped under some epoch E (recorded when the deletion is
//! prepared). The key step makes sure the current epoch is newer than E (rotating when it is
//! not, which another deletion may already have done), erases the deleted keys and re-wraps
//! every other key under the current epoch; the epoch step then destroys every epoch older
//! than the current one, E included. So a deletion never depends on another's progress, and
//! after any key step only the current epoch wraps live keys.

use shred::WrappedModelKey;
use store::{DeletionRecord, DeletionState, Fence, Rewrapped};
use types::ObjectId;

use crate::work::{PostCheck, RootDestroyed, Work, WorkModel, WorkObject};
use crate::{DeletionError, Service};

/// The state after which a deletion's keys are destroyed: reached for every deletion before
/// any goes further.
const KEYS_GONE: DeletionState = DeletionState::EpochDestroyed;
/// How often the runner looks for new work (requests may arrive on any instance).
const POLL: std::time::Duration = std::time::Duration::from_secs(3);
/// Backoff after a failed step: 5 s, doubling, at most 5 minutes.
const BACKOFF_FIRST_SECS: i64 = 5;
const BACKOFF_MAX_SECS: i64 = 300;

/// A test hook, compiled only with the `failpoints` feature (test builds; never the release
/// binary): `CUSTODY_FAILPOINT_DELETION=STATE[,STATE...]` kills the process (SIGKILL, as
/// `kill -9` would: no clean-up, no lease released) right after a deletion reaches one of the
/// states, to prove that a restart, or another instance, completes the work.
#[cfg(feature = "failpoints")]
fn failpoint(state: DeletionState) {
    let state = state.as_str();
    if std::env::var("CUSTODY_FAILPOINT_DELETION").is_ok_and(|s| s.split(',').any(|s| s == state)) {
        tracing::error!(state, "failpoint: killing the process after deletion step");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::process::exit(86);
    }
}

#[cfg(not(feature = "failpoints"))]
fn failpoint(_state: DeletionState) {}

impl DeletionError {
    /// The runner's lease was taken over: not this deletion's failure.
    fn fenced(&self) -> bool {
        matches!(
            self,
            DeletionError::Store(store::StoreError::Fenced(_))
                | DeletionError::Keys(shred::KeyError::Fenced(_))
        )
    }
}

fn entry(deletion: &DeletionRecord, action: &str, detail: String) -> audit::Entry {
    audit::Entry::new("system", action, format!("deletion/{}", deletion.id))
        .with_vendor(deletion.vendor.as_str())
        .with_detail(detail)
}

/// The deletion's work record, strictly: an error here stops the deletion (shown in its
/// status, retried with backoff), never a fresh start.
pub(crate) fn parse_work(d: &DeletionRecord) -> Result<Work, DeletionError> {
    Ok(Work::decode(&d.work, d.state)?)
}

/// The deletion runner and `delete_after` scheduler, while this instance holds the
/// `deletions` lease: resumes unfinished deletions, then wakes on local requests and every
/// few seconds (requests on other instances, `delete_after` times). Never returns.
pub(crate) async fn work(app: &Service, fence: &Fence) {
    loop {
        if let Err(e) = start_due(app).await {
            tracing::error!(error = %e, "starting scheduled deletions failed; will retry");
        }
        run_pass(app, fence).await;
        tokio::select! {
            () = app.wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Starts the deletion of every model whose `delete_after` has come. The deletion names who
/// scheduled it (and who approved that, under the two-person rule), never "system".
async fn start_due(app: &Service) -> Result<(), DeletionError> {
    for due in app
        .store
        .models_due_for_deletion(app.store.clock().now())
        .await?
    {
        let id = crypto::token::random_id().map_err(|e| DeletionError::Other(e.to_string()))?;
        let entry = audit::Entry::new(
            due.scheduled_by.as_str(),
            "deletion.request",
            format!("model/{}", due.model_id),
        )
        .with_vendor(due.vendor.as_str())
        .with_detail(format!("deletion {id}: delete_after reached"));
        app.store
            .start_deletion(
                &id,
                &due.vendor_id,
                Some(&due.model_id),
                &due.scheduled_by,
                due.approved_by.as_deref(),
                entry,
            )
            .await?;
        tracing::info!(deletion = %id, "deletion started: delete_after reached");
    }
    Ok(())
}

/// One pass over the due deletions: every one through key destruction first, then every one
/// to its certificate. A failure stays with its deletion.
async fn run_pass(app: &Service, fence: &Fence) {
    let due = match app.store.unfinished_deletions().await {
        Ok(deletions) => deletions,
        Err(e) => {
            tracing::error!(error = %e, "listing unfinished deletions failed; will retry");
            return;
        }
    };
    for until in [KEYS_GONE, DeletionState::Certified] {
        for id in &due {
            drive_or_record(app, fence, id, until).await;
        }
    }
}

async fn drive_or_record(app: &Service, fence: &Fence, id: &str, until: DeletionState) {
    let Err(e) = drive(app, fence, id, until).await else {
        return;
    };
    if e.fenced() {
        tracing::warn!(deletion = %id, "the deletions lease was taken over; stopping here");
        return;
    }
    let attempts = app
        .store
        .deletion(id)
        .await
        .ok()
        .flatten()
        .map_or(0, |d| d.attempts);
    let backoff = BACKOFF_FIRST_SECS
        .saturating_mul(1 << attempts.clamp(0, 16))
        .min(BACKOFF_MAX_SECS);
    let error = e.to_string();
    tracing::error!(
        deletion = %id,
        attempt = attempts + 1,
        retry_in_secs = backoff,
        error = %error,
        "deletion step failed; other deletions go on, this one is retried later"
    );
    if let Err(e) = app
        .store
        .deletion_failed(id, &error, app.store.clock().now() + backoff, Some(fence))
        .await
    {
        tracing::error!(deletion = %id, error = %e, "recording the deletion's failure failed");
    }
}

/// Takes deletion `id` step by step until it reaches `until` (unless it waits for a retry).
async fn drive(
    app: &Service,
    fence: &Fence,
    id: &str,
    until: DeletionState,
) -> Result<(), DeletionError> {
    loop {
        let d = app
            .store
            .deletion(id)
            .await?
            .ok_or_else(|| DeletionError::Other(format!("deletion {id} vanished")))?;
        if d.state >= until || d.retry_at.is_some_and(|at| at > app.store.clock().now()) {
            return Ok(());
        }
        let next = match d.state {
            DeletionState::AccessRevoked => destroy_keys(app, &d, fence).await?,
            DeletionState::KeysDestroyed => destroy_epoch(app, &d, fence).await?,
            DeletionState::EpochDestroyed => delete_objects(app, &d, fence).await?,
            DeletionState::ObjectsDeleted => post_check(app, &d, fence).await?,
            DeletionState::Checked => crate::certify::certify(app, &d, fence).await?,
            // Done (`until` is never later than this).
            DeletionState::Certified => return Ok(()),
        };
        tracing::info!(deletion = %id, state = %next, "deletion step done");
        failpoint(next);
    }
}

/// Records what the deletion covers, then makes sure a newer epoch than the one wrapping the
/// deleted keys is current, and erases the keys while re-wrapping every other one.
async fn destroy_keys(
    app: &Service,
    d: &DeletionRecord,
    fence: &Fence,
) -> Result<DeletionState, DeletionError> {
    let mut work = parse_work(d)?;
    if work.from_epoch.is_none() {
        app.keys.refresh().await?;
        let model_ids = app.store.deletion_models(&d.id).await?;
        for model_id in &model_ids {
            let Some(m) = app.store.model_by_id(model_id).await? else {
                continue;
            };
            let revisions = app.store.revisions(model_id).await?;
            work.models.push(WorkModel {
                id: m.id.clone(),
                vendor: m.vendor.to_string(),
                name: m.name.to_string(),
                revisions: revisions.iter().map(|r| r.commit.to_string()).collect(),
                key_epoch: m.key_epoch,
                wrapped_key: hex::encode(&m.wrapped_key),
            });
        }
        work.objects = app
            .store
            .objects_of_models(&model_ids)
            .await?
            .into_iter()
            .map(|o| WorkObject {
                id: o.id,
                model_id: o.model_id,
                size: o.size,
                sha256: o.sha256,
            })
            .collect();
        work.upload_objects = app.store.upload_objects_of_models(&model_ids).await?;
        // The epoch wrapping the deleted keys (they are no longer re-wrapped: the models are
        // marked deleted); without models, the current one.
        let from = work
            .models
            .iter()
            .map(|m| m.key_epoch)
            .max()
            .unwrap_or_else(|| app.keys.current_epoch());
        work.from_epoch = Some(from);
        if let Some(info) = app.keys.epoch_info(from) {
            work.root_kind = Some(info.root_kind.to_string());
            work.root = Some(info.root.as_str().to_owned());
        }
        app.store
            .advance_deletion(
                &d.id,
                DeletionState::AccessRevoked,
                DeletionState::AccessRevoked,
                &work.encode()?,
                entry(
                    d,
                    "deletion.prepare",
                    format!(
                        "{} models, {} objects, epoch {from}",
                        work.models.len(),
                        work.objects.len(),
                    ),
                ),
                Some(fence),
            )
            .await?;
    }
    let from = work
        .from_epoch
        .ok_or_else(|| DeletionError::Other("no starting epoch".into()))?;
    // A rotation committed after the keys were read makes the transaction refuse: read again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        app.keys.refresh().await?;
        let current = app.keys.current_epoch();
        let to = if current > from {
            // Another deletion (or an earlier run of this one) already rotated past it.
            current
        } else {
            app.keys.ensure_epoch_after(current, Some(fence)).await?
        };
        let mut rewrapped = Vec::new();
        for (model_id, epoch, wrapped) in app.store.live_model_keys().await? {
            let new =
                app.keys
                    .rewrap_model_key(&model_id, &WrappedModelKey { epoch, wrapped }, to)?;
            rewrapped.push(Rewrapped {
                model_id,
                epoch: new.epoch,
                wrapped: new.wrapped,
            });
        }
        work.to_epoch = Some(to);
        let stored = app
            .store
            .shred_model_keys(
                &d.id,
                to,
                &rewrapped,
                &work.encode()?,
                entry(
                    d,
                    "deletion.keys",
                    format!(
                        "model keys erased; {} surviving keys re-wrapped to epoch {to}",
                        rewrapped.len()
                    ),
                ),
                Some(fence),
            )
            .await;
        match stored {
            Ok(()) => return Ok(DeletionState::KeysDestroyed),
            Err(store::StoreError::Conflict(why)) if attempts < 3 => {
                tracing::info!(deletion = %d.id, %why, "re-wrapping again");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Destroys every epoch older than the current one: the one that wrapped the deleted keys,
/// and any an interrupted deletion left behind.
async fn destroy_epoch(
    app: &Service,
    d: &DeletionRecord,
    fence: &Fence,
) -> Result<DeletionState, DeletionError> {
    let mut work = parse_work(d)?;
    let from = work
        .from_epoch
        .ok_or_else(|| DeletionError::Other("no starting epoch".into()))?;
    app.keys.refresh().await?;
    let current = app.keys.current_epoch();
    if from >= current {
        return Err(DeletionError::Other(format!(
            "epoch {from} is still current: the key step did not rotate"
        )));
    }
    for older in app.keys.epochs() {
        if older.epoch < current && older.epoch != from {
            app.keys.destroy_epoch(older.epoch, Some(fence)).await?;
        }
    }
    let destroyed = app.keys.destroy_epoch(from, Some(fence)).await?;
    if let Some(root) = &destroyed.root {
        work.root = Some(root.as_str().to_owned());
    }
    work.root_kind = Some(destroyed.root_kind.to_string());
    // Destroyed by this deletion or, earlier, by another (or by an interrupted run of this
    // one): either way it is gone now, and the post-check asks the root provider again.
    let deletion_date = match &destroyed.root_destruction {
        shred::RootDestruction::KmsScheduled { deletion_date } => Some(deletion_date.clone()),
        shred::RootDestruction::FileRemoved | shred::RootDestruction::HsmKeyDestroyed => None,
        shred::RootDestruction::AlreadyGone => work
            .root_destroyed
            .as_ref()
            .and_then(|r| r.deletion_date.clone()),
    };
    let root = RootDestroyed {
        kind: destroyed.root_kind.into(),
        id: work.root.clone().unwrap_or_else(|| format!("root-{from}")),
        epoch: from,
        deletion_date,
    };
    let how = root.how();
    work.root_destroyed = Some(root);
    app.store
        .advance_deletion(
            &d.id,
            DeletionState::KeysDestroyed,
            DeletionState::EpochDestroyed,
            &work.encode()?,
            entry(
                d,
                "deletion.epoch",
                format!("epoch {from} destroyed: {how}"),
            ),
            Some(fence),
        )
        .await?;
    Ok(DeletionState::EpochDestroyed)
}

async fn delete_objects(
    app: &Service,
    d: &DeletionRecord,
    fence: &Fence,
) -> Result<DeletionState, DeletionError> {
    let work = parse_work(d)?;
    let ids = work
        .objects
        .iter()
        .map(|o| o.id.as_str())
        .chain(work.upload_objects.iter().map(String::as_str));
    let mut count = 0usize;
    for id in ids {
        let id = ObjectId::parse(id).map_err(|e| DeletionError::Other(e.to_string()))?;
        // Removes every version and aborts unfinished multipart uploads under the key.
        app.blobs.delete(&id).await?;
        count += 1;
    }
    app.store
        .advance_deletion(
            &d.id,
            DeletionState::EpochDestroyed,
            DeletionState::ObjectsDeleted,
            &work.encode()?,
            entry(
                d,
                "deletion.objects",
                format!("{count} stored objects and uploads removed"),
            ),
            Some(fence),
        )
        .await?;
    Ok(DeletionState::ObjectsDeleted)
}

/// The post-checks, each of which can fail: a failing one blocks the certificate, and the
/// deletion stays where it is (retried with backoff) with the reason in its status. Each asks
/// the authority itself (the database, storage, the root of trust, the epoch ledger), never
/// this instance's cache or the work record alone.
async fn post_check(
    app: &Service,
    d: &DeletionRecord,
    fence: &Fence,
) -> Result<DeletionState, DeletionError> {
    let mut work = parse_work(d)?;
    work.post_checks = vec![
        check_scope(app, d, &work).await?,
        check_storage(app, &work).await?,
        check_roots(app, &work).await,
        check_wrapped_keys(app, &work).await,
    ];
    let failed: Vec<String> = work
        .post_checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    if !failed.is_empty() {
        // Never certify unfinished work: record the failure and retry later.
        let detail = failed.join("; ");
        tracing::error!(deletion = %d.id, %detail, "deletion post-check failed");
        return Err(DeletionError::Other(format!("post-check failed: {detail}")));
    }
    app.store
        .advance_deletion(
            &d.id,
            DeletionState::ObjectsDeleted,
            DeletionState::Checked,
            &work.encode()?,
            entry(d, "deletion.check", "post-checks passed".into()),
            Some(fence),
        )
        .await?;
    Ok(DeletionState::Checked)
}

fn check(name: &str, problems: Vec<String>, passed: String) -> PostCheck {
    PostCheck {
        name: name.into(),
        passed: problems.is_empty(),
        detail: if problems.is_empty() {
            passed
        } else {
            problems.join(", ")
        },
    }
}

/// The work record covers what the database says the deletion covers: every model marked
/// with this deletion, and every stored object of those models. (A record edited to leave a
/// model out would otherwise be certified without it.)
async fn check_scope(
    app: &Service,
    d: &DeletionRecord,
    work: &Work,
) -> Result<PostCheck, DeletionError> {
    let in_db: std::collections::BTreeSet<String> = app
        .store
        .deletion_models(&d.id)
        .await?
        .into_iter()
        .collect();
    let recorded: std::collections::BTreeSet<String> =
        work.models.iter().map(|m| m.id.clone()).collect();
    let mut problems = Vec::new();
    for m in in_db.difference(&recorded) {
        problems.push(format!(
            "model {m} is under this deletion but not in its record"
        ));
    }
    for m in recorded.difference(&in_db) {
        problems.push(format!("model {m} is recorded but not under this deletion"));
    }
    let objects: std::collections::BTreeSet<&str> =
        work.objects.iter().map(|o| o.id.as_str()).collect();
    let ids: Vec<String> = in_db.iter().cloned().collect();
    for o in app.store.objects_of_models(&ids).await? {
        if !objects.contains(o.id.as_str()) {
            problems.push(format!(
                "object {} of model {} is not recorded",
                o.id, o.model_id
            ));
        }
    }
    Ok(check(
        "record_covers_the_deletion",
        problems,
        format!(
            "{} models and {} objects, as the database records the deletion",
            work.models.len(),
            work.objects.len()
        ),
    ))
}

async fn check_storage(app: &Service, work: &Work) -> Result<PostCheck, DeletionError> {
    let mut still_stored = Vec::new();
    for o in &work.objects {
        let id = ObjectId::parse(&o.id).map_err(|e| DeletionError::Other(e.to_string()))?;
        if app.blobs.exists(&id).await? {
            still_stored.push(format!("still stored: {}", o.id));
        }
    }
    Ok(check(
        "storage_reports_objects_gone",
        still_stored,
        format!("{} objects: none found in storage", work.objects.len()),
    ))
}

/// Every root of the deletion's epoch and of every older one is gone, as the root of trust
/// reports it now (file absent; KMS key pending deletion), and the ledger erased those epochs'
/// wrapped keys.
async fn check_roots(app: &Service, work: &Work) -> PostCheck {
    const NAME: &str = "root_of_trust_reports_roots_destroyed";
    let mut problems = Vec::new();
    let mut asked = 0usize;
    let result: Result<(), DeletionError> = async {
        let from = work
            .from_epoch
            .ok_or_else(|| DeletionError::Other("no starting epoch".into()))?;
        let mut roots = Vec::new();
        for record in app.keys.ledger_records().await? {
            if record.epoch > from {
                continue;
            }
            if record.state != shred::EpochState::Destroyed {
                problems.push(format!(
                    "epoch {} is {} in the ledger, not destroyed",
                    record.epoch,
                    record.state.as_str()
                ));
            }
            if let Some(root) = record.root {
                roots.push((record.epoch, root));
            }
        }
        // The root the record names, even if the ledger forgot it.
        if let Some(r) = &work.root_destroyed {
            let root = shred::RootRef::new(&r.id)
                .ok_or_else(|| DeletionError::Other(format!("root name {:?}", r.id)))?;
            if !roots
                .iter()
                .any(|(e, known)| *e == r.epoch && *known == root)
            {
                roots.push((r.epoch, root));
            }
        }
        for (epoch, root) in &roots {
            asked += 1;
            if let shred::RootStatus::Present(why) = app.keys.root_status(root, *epoch).await? {
                problems.push(format!("epoch {epoch}'s root is not gone: {why}"));
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        problems.push(format!("could not ask the root of trust: {e}"));
    }
    let (kind, _) = app.keys.root_provider();
    check(
        NAME,
        problems,
        format!(
            "the root of trust ({kind}) reports all {asked} roots of the destroyed epochs gone              (file absent, or KMS key pending deletion), and the ledger holds none of their keys"
        ),
    )
}

/// Every recorded wrapped model key is tried against every epoch whose key still exists in
/// the ledger (opened through the root of trust): none may open.
async fn check_wrapped_keys(app: &Service, work: &Work) -> PostCheck {
    const NAME: &str = "retained_ciphertext_does_not_decrypt";
    let mut problems = Vec::new();
    let mut recorded = Vec::new();
    for m in &work.models {
        match hex::decode(&m.wrapped_key) {
            Ok(key) if !key.is_empty() => recorded.push((m.id.clone(), key)),
            _ => problems.push(format!(
                "the recorded wrapped key of {}/{} cannot be tried",
                m.vendor, m.name
            )),
        }
    }
    match app.keys.epochs_that_open(&recorded).await {
        Ok(opens) => {
            for (model_id, epoch) in opens {
                let name = work
                    .models
                    .iter()
                    .find(|m| m.id == model_id)
                    .map_or(model_id.clone(), |m| format!("{}/{}", m.vendor, m.name));
                problems.push(format!("the key of {name} still opens under epoch {epoch}"));
            }
        }
        Err(e) => problems.push(format!("could not try the keys: {e}")),
    }
    check(
        NAME,
        problems,
        format!(
            "the {} recorded wrapped model keys open under no epoch whose key the ledger still              holds; their epoch and root are destroyed",
            recorded.len()
        ),
    )
}
