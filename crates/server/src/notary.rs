//! The audit log's notary as the deletion service sees it ([`deletion::Notary`]): this
//! instance's checkpointer signs, and the configured witnesses cosign over HTTPS.

use std::sync::Arc;
use std::time::Duration;

use deletion::{Cosigned, SignedCheckpoint};
use futures::future::BoxFuture;
use store::Store;

use crate::checkpointer::Checkpointer;
use crate::witnesses::Witnesses;

pub(crate) struct AuditNotary {
    pub store: Store,
    pub checkpointer: Arc<Checkpointer>,
    pub witnesses: Arc<Witnesses>,
}

impl deletion::Notary for AuditNotary {
    fn sign(&self) -> BoxFuture<'_, Result<SignedCheckpoint, String>> {
        Box::pin(async move {
            let signed = self
                .checkpointer
                .sign(&self.store)
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(SignedCheckpoint {
                checkpoint: signed.checkpoint,
                note: signed.note,
            })
        })
    }

    fn witness_wait(&self) -> Option<Duration> {
        (!self.witnesses.is_empty()).then_some(self.witnesses.wait)
    }

    fn cosign<'a>(
        &'a self,
        signed: &'a SignedCheckpoint,
    ) -> BoxFuture<'a, Result<Cosigned, String>> {
        Box::pin(async move {
            let (note, quorum) = self
                .witnesses
                .round(&self.store, &signed.checkpoint, &signed.note)
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(Cosigned {
                note,
                quorum_met: quorum.met(),
                quorum: quorum.to_string(),
            })
        })
    }
}
