//! Background work, as one supervised layer.
//!
//! Four jobs run beside the request handlers, each a singleton across every instance on the
//! database, each under its own database lease:
//!
//! | job | lease | what |
//! |---|---|---|
//! | deletions | `deletions` | the deletion service: the shred state machine and the `delete_after` scheduler (`deletion` crate) |
//! | checkpoints | `checkpoints` | signing audit checkpoints when the log grew (`checkpointer.rs`) |
//! | upload sweep | `upload-sweep` | expiring abandoned uploads (`sweep.rs`) |
//! | webhooks | `webhooks` | sending vendors' events to their webhooks (`webhooks.rs`) |
//!
//! Two more run on every instance, without a lease: writing the aggregated counts of refused
//! authentications (`refusals.rs`) and of fetches refused for an egress budget
//! (`budgets.rs`), for the minutes that closed.
//!
//! Every instance runs a keeper per job: it takes the lease when it is free or expired, runs
//! the job while renewing the lease, and stops the job the moment a renewal fails or finds the
//! lease taken over (writes made under the lease are fenced by its token anyway, so a holder
//! that was only paused writes nothing after it lost the lease). The bound: a holder renews
//! every [`RENEW_EVERY`]; a lease lives [`LEASE_TTL`] after its last renewal; others try every
//! [`POLL_EVERY`]. When the holder dies (kill -9), another instance takes over at most
//! `LEASE_TTL + POLL_EVERY` = 12 s later and resumes from the persisted state.
//!
//! Supervision: the keepers never end. If one ends or panics anyway, that is a bug: the error
//! is logged and [`Supervisor::failure`] resolves, which stops the server with a non-zero exit
//! (a supervisor such as systemd restarts it), rather than letting it serve on with, say, no
//! deletion runner.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::Fence;
use tokio::task::{Id, JoinSet};

use crate::state::App;

/// How long a lease lives after its last renewal.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the holder renews.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often the other instances try to take a lease.
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(2);

/// The running background jobs.
pub(crate) struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

impl Supervisor {
    fn spawn(&mut self, name: &'static str, job: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(job);
        self.names.insert(handle.id(), name);
    }

    /// Resolves when a job ended or panicked (which they never should), after logging it.
    pub(crate) async fn failure(mut self) -> anyhow::Error {
        let (id, why) = match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => (Some(id), "ended".to_owned()),
            Some(Err(e)) => (
                Some(e.id()),
                if e.is_panic() {
                    format!("panicked: {}", panic_message(e.into_panic()))
                } else {
                    format!("was cancelled: {e}")
                },
            ),
            None => (None, "no background job is running".to_owned()),
        };
        let name = id
            .and_then(|id| self.names.get(&id).copied())
            .unwrap_or("background work");
        tracing::error!(
            job = name,
            "background job {name} {why}: stopping the server"
        );
        anyhow::anyhow!("background job {name} {why}")
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// Starts every background job.
pub(crate) fn start(app: Arc<App>) -> Supervisor {
    let mut supervisor = Supervisor {
        tasks: JoinSet::new(),
        names: HashMap::new(),
    };
    supervisor.spawn(
        "deletions",
        leased(app.clone(), "deletions", |app: Arc<App>, fence| {
            app.deletion.clone().work(fence)
        }),
    );
    supervisor.spawn(
        "checkpoints",
        leased(app.clone(), "checkpoints", crate::checkpointer::work),
    );
    supervisor.spawn(
        "upload sweep",
        leased(app.clone(), "upload-sweep", crate::sweep::work),
    );
    supervisor.spawn(
        "webhooks",
        leased(app.clone(), "webhooks", crate::webhooks::work),
    );
    // Per instance, no lease: each instance writes the refusals it counted.
    supervisor.spawn("refusal counts", crate::refusals::work(app.clone()));
    supervisor.spawn("budget refusal counts", crate::budgets::work(app));
    supervisor
}

/// A test hook, compiled only with the `test-hooks` feature (never the release binary):
/// `CUSTODY_FAILPOINT_BACKGROUND=LEASE` makes that job panic once it holds its lease, to prove
/// that the server does not run on without it.
#[cfg(feature = "test-hooks")]
fn failpoint(lease: &str) {
    if std::env::var("CUSTODY_FAILPOINT_BACKGROUND").is_ok_and(|l| l == lease) {
        #[allow(clippy::panic, reason = "the failpoint's whole point")]
        {
            panic!("failpoint: background job {lease}");
        }
    }
}

#[cfg(not(feature = "test-hooks"))]
fn failpoint(_lease: &str) {}

/// Keeps trying to take `lease`; while it holds it, runs `job` (which never returns) and
/// renews the lease, and stops the job when the lease is lost.
async fn leased<F, Fut>(app: Arc<App>, lease: &'static str, job: F)
where
    F: Fn(Arc<App>, Fence) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let ttl_ms = LEASE_TTL.as_millis() as i64;
    loop {
        match app.store.acquire_lease(lease, &app.instance, ttl_ms).await {
            Ok(Some(fence)) => {
                tracing::info!(
                    lease,
                    token = fence.token,
                    "took the lease: running it here"
                );
                failpoint(lease);
                tokio::select! {
                    () = keep(&app, &fence) => {
                        tracing::warn!(lease, "lost the lease: stopping this job here");
                    }
                    () = job(app.clone(), fence.clone()) => {
                        // Jobs never return; the supervisor notices that this one did.
                        return;
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(lease, error = %e, "could not try to take the lease"),
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Renews the lease until that fails; returns once it is lost (taken over, or not renewed
/// for so long that it may have expired).
async fn keep(app: &App, fence: &Fence) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match app
            .store
            .renew_lease(fence, &app.instance, LEASE_TTL.as_millis() as i64)
            .await
        {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(lease = %fence.lease, error = %e, "could not renew the lease");
                // Stop before it can have expired: another instance may take it then.
                if renewed.elapsed() + RENEW_EVERY >= LEASE_TTL {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_that_panics_or_ends_is_reported_by_name() {
        let mut supervisor = Supervisor {
            tasks: JoinSet::new(),
            names: HashMap::new(),
        };
        supervisor.spawn("forever", std::future::pending());
        supervisor.spawn("broken", async {
            #[allow(clippy::panic, reason = "the test's point")]
            {
                panic!("boom");
            }
        });
        let err = supervisor.failure().await.to_string();
        assert!(
            err.contains("broken") && err.contains("panicked: boom"),
            "{err}"
        );

        let mut supervisor = Supervisor {
            tasks: JoinSet::new(),
            names: HashMap::new(),
        };
        supervisor.spawn("forever", std::future::pending());
        supervisor.spawn("short", async {});
        let err = supervisor.failure().await.to_string();
        assert!(err.contains("short ended"), "{err}");
    }
}
