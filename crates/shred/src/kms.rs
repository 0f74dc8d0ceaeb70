//! AWS KMS as the root of trust: one symmetric KMS key per epoch.
//!
//! * Creating epoch N's root is CreateKey (symmetric, encrypt/decrypt, tagged
//!   `custody:epoch=N` and `custody:attempt=ID`); its ARN is recorded in the epoch ledger. The epoch key is made locally
//!   and sealed with Encrypt under that key, with the encryption context
//!   `{custody:purpose: epoch-key, custody:epoch: N}`, so a blob cannot be passed off as
//!   another epoch's.
//! * Wrapping and opening check the key's state first (DescribeKey) and only use an `Enabled`
//!   key: one pending deletion is reported as gone, even by a KMS that would still use it
//!   (AWS refuses; moto 5.1, which the tests run on, does not check key states).
//! * Destroying is ScheduleKeyDeletion with the configured waiting period (7 to 30 days, 7 by
//!   default). The key is unusable from that moment; AWS deletes its material when the period
//!   ends. Until then an AWS principal allowed `kms:CancelKeyDeletion` could bring it back:
//!   the certificate states this residual risk and the deletion date.
//! * The ARN's region must be the configured one: a misconfigured region would otherwise make
//!   live keys look deleted.
//! * TLS on ring (like the S3 client in blobstore): the SDK's default HTTPS client would
//!   compile rustls with aws-lc.
//! * The SDK holds decrypted epoch keys briefly in its own buffers, which we cannot wipe; as
//!   with ring's key schedules, we accept that for a value that exists once per start.

use std::fmt;

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::BehaviorVersion;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::{Blob, DateTime, DateTimeFormat};
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, Tag};
use crypto::SecretKey;
use serde::Deserialize;

use crate::{KeyError, RootDestruction, RootKind, RootProvider, RootRef, RootStatus};

const CONTEXT_PURPOSE: (&str, &str) = ("custody:purpose", "epoch-key");
const CONTEXT_EPOCH: &str = "custody:epoch";
/// Tags a root with the creation attempt that made it (see `EpochRecord::attempt`).
const CONTEXT_ATTEMPT: &str = "custody:attempt";

fn default_window() -> i32 {
    7
}

/// `[root]` with `kind = "kms"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// A KMS-compatible endpoint such as `http://127.0.0.1:5000`; `None` means AWS.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    pub region: String,
    /// Static credentials, both or neither; without them the standard AWS chain applies.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<KmsSecret>,
    /// Waiting period of ScheduleKeyDeletion, 7 to 30 days (AWS's bounds).
    #[serde(default = "default_window")]
    pub pending_window_days: i32,
}

impl KmsConfig {
    /// A configuration with the defaults and no static credentials.
    pub fn new(region: impl Into<String>) -> Self {
        KmsConfig {
            endpoint_url: None,
            region: region.into(),
            access_key_id: None,
            secret_access_key: None,
            pending_window_days: default_window(),
        }
    }
}

/// A secret access key (`cloud::Secret`): its `Debug` prints `***`.
pub type KmsSecret = cloud::Secret;

/// One KMS key per epoch, in one account and region.
pub struct KmsRoot {
    client: Client,
    region: String,
    endpoint: Option<String>,
    pending_window_days: i32,
}

impl fmt::Debug for KmsRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsRoot")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The error code and message of an SDK error, without request details.
fn describe<E: ProvideErrorMetadata + std::error::Error>(err: &SdkError<E>) -> String {
    match err {
        SdkError::ServiceError(e) => {
            let e = e.err();
            format!(
                "{}: {}",
                e.code().unwrap_or("error"),
                e.message().unwrap_or("(no message)")
            )
        }
        other => format!("{other}"),
    }
}

fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    err.code() == Some("NotFoundException")
}

impl KmsRoot {
    /// Builds the client. Nothing is called yet: the key store's first use (CreateKey on a new
    /// store, DescribeKey and Decrypt on an existing one) checks endpoint and credentials.
    pub async fn connect(config: &KmsConfig) -> Result<KmsRoot, KeyError> {
        if config.region.is_empty() {
            return Err(KeyError::Provider(
                "kms configuration needs a region".into(),
            ));
        }
        if !(7..=30).contains(&config.pending_window_days) {
            return Err(KeyError::Provider(
                "kms pending_window_days must be between 7 and 30".into(),
            ));
        }
        let shared = cloud::sdk_config(
            "kms",
            &config.region,
            config.access_key_id.as_deref(),
            config.secret_access_key.as_ref(),
        )
        .await
        .map_err(KeyError::Provider)?;
        let mut kms =
            aws_sdk_kms::config::Builder::from(&shared).behavior_version(BehaviorVersion::latest());
        if let Some(url) = &config.endpoint_url {
            kms = kms.endpoint_url(url);
        }
        Ok(KmsRoot {
            client: Client::from_conf(kms.build()),
            region: config.region.clone(),
            endpoint: config.endpoint_url.clone(),
            pending_window_days: config.pending_window_days,
        })
    }

    /// The key ARN must name the configured region (`arn:PARTITION:kms:REGION:...`).
    fn check_region(&self, root: &RootRef) -> Result<(), KeyError> {
        let region = root.as_str().split(':').nth(3);
        if region != Some(self.region.as_str()) {
            return Err(KeyError::Provider(format!(
                "KMS key {root} is not in the configured region {}",
                self.region
            )));
        }
        Ok(())
    }

    /// The key's id, state and deletion date, or `None` when KMS does not know it.
    async fn state(&self, root: &RootRef) -> Result<Option<KeyStatus>, KeyError> {
        self.check_region(root)?;
        match self
            .client
            .describe_key()
            .key_id(root.as_str())
            .send()
            .await
        {
            Ok(out) => {
                let meta = out.key_metadata().ok_or_else(|| {
                    KeyError::Provider(format!("DescribeKey {root}: no metadata"))
                })?;
                let state = meta.key_state().cloned().ok_or_else(|| {
                    KeyError::Provider(format!("DescribeKey {root}: no key state"))
                })?;
                Ok(Some(KeyStatus {
                    key_id: meta.key_id().to_owned(),
                    state,
                    deletion_date: meta.deletion_date().copied(),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(KeyError::Provider(format!(
                "DescribeKey {root}: {}",
                describe(&e)
            ))),
        }
    }

    /// Only an `Enabled` key is used, whether or not the service would refuse another.
    async fn require_enabled(&self, root: &RootRef, epoch: u64) -> Result<(), KeyError> {
        let gone = || KeyError::RootGone {
            epoch,
            root: root.to_string(),
        };
        match self.state(root).await? {
            None => Err(gone()),
            Some(status) if Self::gone(&status.state) => Err(gone()),
            Some(status) if status.state == KeyState::Enabled => Ok(()),
            Some(status) => Err(KeyError::Provider(format!(
                "KMS key {root} is {}: enable it to use epoch {epoch}",
                status.state.as_str()
            ))),
        }
    }

    /// A key scheduled for deletion (or gone) reports its date; anything else that is not
    /// `Enabled` is an error, never "gone": a disabled key may be enabled again.
    fn gone(state: &KeyState) -> bool {
        matches!(
            state,
            KeyState::PendingDeletion | KeyState::PendingReplicaDeletion
        )
    }
}

struct KeyStatus {
    key_id: String,
    state: KeyState,
    deletion_date: Option<DateTime>,
}

fn format_date(date: Option<DateTime>) -> String {
    date.and_then(|d| d.fmt(DateTimeFormat::DateTime).ok())
        .unwrap_or_else(|| "(date not reported)".to_owned())
}

#[async_trait]
impl RootProvider for KmsRoot {
    fn kind(&self) -> RootKind {
        RootKind::Kms
    }

    fn describe(&self) -> String {
        match &self.endpoint {
            Some(url) => format!("AWS KMS at {url}, region {}", self.region),
            None => format!("AWS KMS, region {}", self.region),
        }
    }

    async fn create_root(&self, epoch: u64, attempt: &str) -> Result<RootRef, KeyError> {
        let tag = |key: &str, value: String| {
            Tag::builder()
                .tag_key(key)
                .tag_value(value)
                .build()
                .map_err(|e| KeyError::Provider(format!("CreateKey tag: {e}")))
        };
        let out = self
            .client
            .create_key()
            .description(format!(
                "custody root of trust, key epoch {epoch} (scheduled for deletion when the \
                 epoch is shredded)"
            ))
            .key_usage(KeyUsageType::EncryptDecrypt)
            .key_spec(KeySpec::SymmetricDefault)
            .tags(tag(CONTEXT_EPOCH, epoch.to_string())?)
            .tags(tag(CONTEXT_ATTEMPT, attempt.to_owned())?)
            .send()
            .await
            .map_err(|e| KeyError::Provider(format!("CreateKey: {}", describe(&e))))?;
        let meta = out
            .key_metadata()
            .ok_or_else(|| KeyError::Provider("CreateKey: no key metadata".into()))?;
        let arn = meta
            .arn()
            .ok_or_else(|| KeyError::Provider("CreateKey: no key ARN".into()))?;
        let root = RootRef::new(arn)
            .ok_or_else(|| KeyError::Provider(format!("CreateKey: unusable key ARN {arn:?}")))?;
        self.check_region(&root)?;
        Ok(root)
    }

    async fn wrap(&self, root: &RootRef, epoch: u64, key: &SecretKey) -> Result<Vec<u8>, KeyError> {
        self.require_enabled(root, epoch).await?;
        let out = self
            .client
            .encrypt()
            .key_id(root.as_str())
            .plaintext(Blob::new(key.expose_secret().to_vec()))
            .encryption_context(CONTEXT_PURPOSE.0, CONTEXT_PURPOSE.1)
            .encryption_context(CONTEXT_EPOCH, epoch.to_string())
            .send()
            .await
            .map_err(|e| KeyError::Provider(format!("Encrypt under {root}: {}", describe(&e))))?;
        let blob = out
            .ciphertext_blob()
            .ok_or_else(|| KeyError::Provider(format!("Encrypt under {root}: no ciphertext")))?;
        Ok(blob.as_ref().to_vec())
    }

    async fn unwrap(
        &self,
        root: &RootRef,
        epoch: u64,
        wrapped: &[u8],
    ) -> Result<SecretKey, KeyError> {
        self.require_enabled(root, epoch).await?;
        let out = self
            .client
            .decrypt()
            .key_id(root.as_str())
            .ciphertext_blob(Blob::new(wrapped.to_vec()))
            .encryption_context(CONTEXT_PURPOSE.0, CONTEXT_PURPOSE.1)
            .encryption_context(CONTEXT_EPOCH, epoch.to_string())
            .send()
            .await
            .map_err(|e| {
                KeyError::Provider(format!(
                    "Decrypt of epoch {epoch}'s key under {root}: {}",
                    describe(&e)
                ))
            })?;
        let plaintext = out.plaintext().ok_or_else(|| {
            KeyError::Provider(format!("Decrypt under {root}: no plaintext returned"))
        })?;
        Ok(SecretKey::from_slice(plaintext.as_ref())?)
    }

    async fn destroy_root(&self, root: &RootRef, _epoch: u64) -> Result<RootDestruction, KeyError> {
        let key_id = match self.state(root).await? {
            None => return Ok(RootDestruction::AlreadyGone),
            Some(status) if Self::gone(&status.state) => {
                return Ok(RootDestruction::KmsScheduled {
                    deletion_date: format_date(status.deletion_date),
                });
            }
            Some(status) => status.key_id,
        };
        // By key id: AWS takes an id or an ARN here, moto (5.1) only an id.
        let out = self
            .client
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(self.pending_window_days)
            .send()
            .await
            .map_err(|e| {
                KeyError::Provider(format!("ScheduleKeyDeletion {root}: {}", describe(&e)))
            })?;
        Ok(RootDestruction::KmsScheduled {
            deletion_date: format_date(out.deletion_date().copied()),
        })
    }

    async fn root_status(&self, root: &RootRef, _epoch: u64) -> Result<RootStatus, KeyError> {
        Ok(match self.state(root).await? {
            None => RootStatus::Gone {
                deletion_date: None,
            },
            Some(status) if Self::gone(&status.state) => RootStatus::Gone {
                deletion_date: status
                    .deletion_date
                    .and_then(|d| d.fmt(DateTimeFormat::DateTime).ok()),
            },
            // Disabled included: a cancelled deletion leaves the key disabled, and anyone
            // allowed kms:EnableKey can bring it back.
            Some(status) => RootStatus::Present(format!(
                "KMS key {root} is {}, not pending deletion",
                status.state.as_str()
            )),
        })
    }

    async fn destroy_unrecorded(&self, epoch: u64, attempt: &str) -> Result<(), KeyError> {
        // A key created but never recorded never wrapped anything: nothing to shred. Say so,
        // so the operator can delete the stray key (its tags name the epoch and attempt).
        tracing::warn!(
            epoch,
            attempt,
            "a KMS key may have been created for an interrupted epoch {epoch} without being \
             recorded; it protects nothing and can be deleted (tag custody:attempt={attempt})"
        );
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_configurations_are_refused_before_any_call() {
        let mut config = KmsConfig::new("us-east-1");
        config.access_key_id = Some("id".into());
        let err = KmsRoot::connect(&config).await.err().unwrap();
        assert!(err.to_string().contains("together"), "{err}");
        let mut config = KmsConfig::new("us-east-1");
        config.pending_window_days = 6;
        assert!(KmsRoot::connect(&config).await.is_err());
        assert!(KmsRoot::connect(&KmsConfig::new("")).await.is_err());
    }

    #[tokio::test]
    async fn keys_of_another_region_are_refused() {
        let root = KmsRoot::connect(&KmsConfig::new("eu-west-1"))
            .await
            .unwrap();
        let arn = RootRef::new("arn:aws:kms:us-east-1:123456789012:key/abc").unwrap();
        assert!(root.check_region(&arn).is_err());
        let arn = RootRef::new("arn:aws:kms:eu-west-1:123456789012:key/abc").unwrap();
        assert!(root.check_region(&arn).is_ok());
    }
}
