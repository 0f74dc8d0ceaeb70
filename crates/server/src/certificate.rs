//! The last step of a deletion: the signed certificate (format and verification live in the
//! `deletion` crate). Placeholder until the audit log's checkpoints are wired: see `certify`.

use crate::App;
use crate::deletion::DeletionError;
use store::DeletionRecord;

pub(crate) async fn certify(_app: &App, d: &DeletionRecord) -> Result<&'static str, DeletionError> {
    Err(DeletionError::Other(format!(
        "deletion {}: certificates need signed audit checkpoints, not available yet",
        d.id
    )))
}
