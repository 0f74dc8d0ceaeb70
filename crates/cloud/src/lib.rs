//! The AWS SDK's shared set-up, for every service custody reaches on AWS or an S3/KMS-compatible
//! server: the S3 blob backend (`blobstore`) and the KMS root of trust (`shred`).
//!
//! Design note:
//!
//! * One way to build the SDK's configuration, so the two services cannot drift apart in how
//!   they find credentials or which TLS stack they use: a region, static credentials when the
//!   configuration gives both halves (never one), otherwise the standard AWS chain
//!   (environment, profiles, SSO, `credential_process`, web identity, container and instance
//!   metadata).
//! * TLS on ring: the SDK's default HTTPS client compiles rustls with aws-lc; the workspace
//!   keeps rustls on ring (see `crypto::tls`), so the client is built with rustls' ring
//!   provider.
//! * Each service applies its own endpoint and options to the result (the S3 client's path
//!   style and checksums, the KMS endpoint).
//! * A secret access key is a [`Secret`]: zeroized on drop, `Debug` prints `***`.
#![forbid(unsafe_code)]

use std::fmt;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use serde::Deserialize;
use zeroize::Zeroizing;

/// A secret access key from a configuration file. Its `Debug` prints `***`, so a logged
/// configuration shows no secret; zeroized on drop.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(Zeroizing::new(secret.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Secret::new(secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The SDK configuration for `region`, with static credentials when both halves are given.
/// `table` names the configuration table in the error (`s3`, `kms`): one half of the
/// credentials alone is refused rather than silently falling back to the standard chain.
pub async fn sdk_config(
    table: &str,
    region: &str,
    access_key_id: Option<&str>,
    secret_access_key: Option<&Secret>,
) -> Result<SdkConfig, String> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .http_client(http);
    match (access_key_id, secret_access_key) {
        (Some(id), Some(secret)) => {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret.expose(),
                None,
                None,
                "custody-config",
            ));
        }
        (None, None) => {}
        _ => {
            return Err(format!(
                "{table} configuration: give access_key_id and secret_access_key together, or \
                 neither to use the standard AWS credential chain"
            ));
        }
    }
    Ok(loader.load().await)
}
