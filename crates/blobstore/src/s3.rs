//! The [`Backend`] contract on Amazon S3 or an S3-compatible server, through aws-sdk-s3.
//!
//! Design notes:
//!
//! * **Checksums only "when required".** Since early 2025 the AWS SDKs by default add a CRC
//!   checksum to every upload, sent as an `aws-chunked` trailer, and validate checksums of
//!   responses. S3-compatible servers handle that encoding unevenly: radosgw refused such bodies
//!   (`XAmzContentSHA256Mismatch`) and s3rver stored the chunk framing as if it were object
//!   bytes. With `WhenRequired` the SDK adds a checksum only where an operation's API demands
//!   one, which every server we tried accepts. Little is lost: each segment is AEAD-sealed above
//!   this layer, so a corrupted, truncated or swapped byte fails `BlobStore::open_range`.
//! * **Delete walks versions.** The contract says `delete` leaves no ciphertext behind (shredding
//!   relies on it). On a versioned bucket a plain DeleteObject only adds a delete marker and
//!   keeps every older version readable, so `delete` first aborts the key's unfinished multipart
//!   uploads (their parts are ciphertext too), then lists every version and delete marker of the
//!   exact key (ListObjectVersions, paginated) and deletes each by version id. On an
//!   unversioned bucket the one version is listed with version id `null`, which S3 accepts, so
//!   the same walk works everywhere. It needs `s3:ListBucketVersions`, `s3:DeleteObjectVersion`,
//!   `s3:ListBucketMultipartUploads` and `s3:AbortMultipartUpload`; Object Lock or MFA delete
//!   make it fail loudly rather than leave a version behind quietly.
//! * **TLS on ring**, credentials and region: the shared set-up of the `cloud` crate.
//! * Keys are checked to be opaque hex ids like the filesystem backend's, then get the
//!   configured prefix. S3 makes its own upload ids; they are passed through unchecked.

use std::fmt;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Part};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use crate::backend::check_opaque;
use crate::{Backend, BlobError, PartReceipt};

/// S3 numbers parts from 1 to 10,000.
const MAX_PART_NUMBER: u32 = 10_000;

/// Where the objects live and how to reach them: the server configuration's `[s3]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// An S3-compatible server such as `http://127.0.0.1:9000`; `None` means AWS (or the
    /// endpoint the standard AWS configuration names).
    pub endpoint_url: Option<String>,
    pub region: String,
    pub bucket: String,
    /// `host/bucket/key` instead of `bucket.host/key`; most S3-compatible servers need it.
    #[serde(default)]
    pub force_path_style: bool,
    /// Static credentials, both or neither. Without them the standard AWS chain applies:
    /// environment, `~/.aws/config` and `~/.aws/credentials` (profiles, SSO, `credential_process`),
    /// web identity, container and instance metadata.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<S3Secret>,
    /// Put before every key, such as `objects/`.
    #[serde(default)]
    pub prefix: String,
}

/// A secret access key (`cloud::Secret`): its `Debug` prints `***`.
pub type S3Secret = cloud::Secret;

/// Objects in one bucket, under one key prefix.
#[derive(Clone)]
pub struct S3Backend {
    client: Client,
    bucket: String,
    prefix: String,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What a 404 means for the operation that got it.
#[derive(Clone, Copy)]
enum Missing<'a> {
    /// The object `key` (the caller's key, without prefix).
    Object(&'a str),
    /// The multipart upload with this id.
    Upload(&'a str),
    /// Nothing in particular: a 404 is an error like any other (a listing, a delete).
    Nothing,
}

impl S3Backend {
    /// Builds the client and checks that the bucket answers (HeadBucket), so a wrong bucket,
    /// endpoint or credential fails at start-up rather than at the first upload.
    pub async fn connect(config: &S3Config) -> Result<S3Backend, BlobError> {
        if config.bucket.is_empty() || config.region.is_empty() {
            return Err(BlobError::Backend(
                "s3 configuration needs a bucket and a region".into(),
            ));
        }
        let shared = cloud::sdk_config(
            "s3",
            &config.region,
            config.access_key_id.as_deref(),
            config.secret_access_key.as_ref(),
        )
        .await
        .map_err(BlobError::Backend)?;
        let mut s3 = aws_sdk_s3::config::Builder::from(&shared)
            .behavior_version(BehaviorVersion::latest())
            .force_path_style(config.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(url) = &config.endpoint_url {
            s3 = s3.endpoint_url(url);
        }
        let backend = S3Backend {
            client: Client::from_conf(s3.build()),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
        };
        backend
            .client
            .head_bucket()
            .bucket(&backend.bucket)
            .send()
            .await
            .map_err(|e| {
                BlobError::Backend(format!(
                    "s3 bucket {:?} is not usable: {}",
                    backend.bucket,
                    describe(&e)
                ))
            })?;
        Ok(backend)
    }

    /// The S3 object name of `key`: checked, then prefixed.
    fn object_name(&self, key: &str) -> Result<String, BlobError> {
        check_opaque(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// NoSuchUpload is `UploadNotFound`, NoSuchKey or another 404 is `NotFound` (a missing
    /// bucket is not), anything else a `Backend` error naming the operation and the object.
    fn error<E>(&self, op: &str, name: &str, missing: Missing<'_>, err: SdkError<E>) -> BlobError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code();
        let status = err.raw_response().map(|r| r.status().as_u16());
        match (missing, code) {
            (Missing::Upload(id), Some("NoSuchUpload")) => BlobError::UploadNotFound(id.to_owned()),
            (Missing::Object(key), Some("NoSuchKey")) => BlobError::NotFound(key.to_owned()),
            (Missing::Object(key), code)
                if status == Some(404) && !matches!(code, Some("NoSuchBucket")) =>
            {
                BlobError::NotFound(key.to_owned())
            }
            _ => BlobError::Backend(format!(
                "s3 {op} {}/{name}: {}",
                self.bucket,
                describe(&err)
            )),
        }
    }

    /// The error for a read that did not get its `len` bytes: `BadRange` when the range runs
    /// past the end of the object, `NotFound` when it is gone, else `SizeMismatch`.
    async fn short_read(&self, key: &str, offset: u64, len: u64, got: u64) -> BlobError {
        match self.size(key).await {
            Err(e) => e,
            Ok(None) => BlobError::NotFound(key.to_owned()),
            Ok(Some(size)) if offset.checked_add(len).is_none_or(|end| end > size) => {
                BlobError::BadRange {
                    start: offset,
                    end: offset.saturating_add(len),
                    len: size,
                }
            }
            Ok(Some(_)) => BlobError::SizeMismatch {
                expected: len,
                actual: got,
            },
        }
    }

    async fn abort(&self, name: &str, upload_id: &str) -> Result<(), BlobError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(name)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: aborting is idempotent, like the filesystem backend's.
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(self.error("abort upload", name, Missing::Upload(upload_id), e)),
        }
    }

    /// Ids of the unfinished multipart uploads of exactly `name`.
    async fn open_uploads(&self, name: &str) -> Result<Vec<String>, BlobError> {
        let mut ids = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(name)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.error("list uploads", name, Missing::Nothing, e))?;
            ids.extend(
                out.uploads()
                    .iter()
                    .filter(|u| u.key() == Some(name))
                    .filter_map(|u| u.upload_id().map(str::to_owned)),
            );
            if out.is_truncated() != Some(true) {
                return Ok(ids);
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return Err(truncated("list uploads", name));
            }
        }
    }

    /// Version ids of every version and delete marker of exactly `name`; `None` for a server
    /// that lists a version without an id.
    async fn versions(&self, name: &str) -> Result<Vec<Option<String>>, BlobError> {
        let mut versions = Vec::new();
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(name)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.error("list versions", name, Missing::Nothing, e))?;
            for v in out.versions().iter().filter(|v| v.key() == Some(name)) {
                versions.push(v.version_id().map(str::to_owned));
            }
            for m in out
                .delete_markers()
                .iter()
                .filter(|m| m.key() == Some(name))
            {
                versions.push(m.version_id().map(str::to_owned));
            }
            if out.is_truncated() != Some(true) {
                return Ok(versions);
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            version_marker = out.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() && version_marker.is_none() {
                return Err(truncated("list versions", name));
            }
        }
    }
}

/// One line for an operator: the server's error code, status, message and request id when it
/// answered with an error, else the chain of causes (connection refused, no credentials, ...).
/// Not `DisplayErrorContext`, which appends a `Debug` dump of the raw response.
fn describe<E>(err: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let Some(code) = err.code() else {
        return chain(err);
    };
    let mut out = code.to_owned();
    if let Some(status) = err.raw_response().map(|r| r.status().as_u16()) {
        out.push_str(&format!(" (HTTP {status})"));
    }
    if let Some(message) = err.message().filter(|m| !m.is_empty()) {
        out.push_str(&format!(": {message}"));
    }
    if let Some(id) = err.request_id() {
        out.push_str(&format!(" [request id {id}]"));
    }
    out
}

/// An error and its sources, `: `-separated, skipping a source whose text the line already ends
/// with.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

fn truncated(op: &str, name: &str) -> BlobError {
    BlobError::Backend(format!(
        "s3 {op} {name}: the listing is truncated but names no next marker"
    ))
}

fn part_number(n: u32) -> Result<i32, BlobError> {
    if (1..=MAX_PART_NUMBER).contains(&n) {
        i32::try_from(n).map_err(|_| BlobError::Backend("part number out of range".into()))
    } else {
        Err(BlobError::Backend(format!(
            "part numbers run from 1 to {MAX_PART_NUMBER}, got {n}"
        )))
    }
}

fn receipt(part: &Part) -> Result<PartReceipt, BlobError> {
    let incomplete =
        || BlobError::Backend("s3 list parts: a part without number, etag or size".into());
    Ok(PartReceipt {
        part_number: part
            .part_number()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(incomplete)?,
        etag: part.e_tag().ok_or_else(incomplete)?.to_owned(),
        size: part
            .size()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(incomplete)?,
    })
}

#[async_trait]
impl Backend for S3Backend {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn probe(&self) -> Result<(), BlobError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                BlobError::Backend(format!("s3 bucket {:?}: {}", self.bucket, describe(&e)))
            })
    }

    async fn create_upload(&self, key: &str) -> Result<String, BlobError> {
        let name = self.object_name(key)?;
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&name)
            .content_type("application/octet-stream")
            .send()
            .await
            .map_err(|e| self.error("create upload", &name, Missing::Nothing, e))?;
        out.upload_id().map(str::to_owned).ok_or_else(|| {
            BlobError::Backend(format!(
                "s3 create upload {name}: no upload id in the answer"
            ))
        })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> Result<PartReceipt, BlobError> {
        let name = self.object_name(key)?;
        let number = self::part_number(part_number)?;
        let size = data.len() as u64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&name)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.error("upload part", &name, Missing::Upload(upload_id), e))?;
        let etag = out.e_tag().ok_or_else(|| {
            BlobError::Backend(format!("s3 upload part {name}: no ETag in the answer"))
        })?;
        Ok(PartReceipt {
            part_number,
            etag: etag.to_owned(),
            size,
        })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        mut parts: Vec<PartReceipt>,
    ) -> Result<(), BlobError> {
        let name = self.object_name(key)?;
        parts.sort_by_key(|p| p.part_number);
        let completed = parts
            .iter()
            .map(|p| {
                Ok(CompletedPart::builder()
                    .part_number(self::part_number(p.part_number)?)
                    .e_tag(&p.etag)
                    .build())
            })
            .collect::<Result<Vec<_>, BlobError>>()?;
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&name)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("complete upload", &name, Missing::Upload(upload_id), e))?;
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), BlobError> {
        let name = self.object_name(key)?;
        self.abort(&name, upload_id).await
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartReceipt>, BlobError> {
        let name = self.object_name(key)?;
        let mut parts = Vec::new();
        let mut marker = None;
        loop {
            let out = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(&name)
                .upload_id(upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(|e| self.error("list parts", &name, Missing::Upload(upload_id), e))?;
            for part in out.parts() {
                parts.push(receipt(part)?);
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            marker = out.next_part_number_marker().map(str::to_owned);
            if marker.is_none() {
                return Err(truncated("list parts", &name));
            }
        }
        parts.sort_by_key(|p| p.part_number);
        Ok(parts)
    }

    async fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, BlobError> {
        let name = self.object_name(key)?;
        if len == 0 {
            // No request: unlike the filesystem backend, an empty read of an absent object or
            // past the end succeeds.
            return Ok(Bytes::new());
        }
        let (Some(last), Ok(want)) = (offset.checked_add(len - 1), usize::try_from(len)) else {
            return Err(self.short_read(key, offset, len, 0).await);
        };
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&name)
            .range(format!("bytes={offset}-{last}"))
            .send()
            .await
        {
            Ok(out) => out,
            // 416: the range starts at or past the end.
            Err(e)
                if e.code() == Some("InvalidRange")
                    || e.raw_response().map(|r| r.status().as_u16()) == Some(416) =>
            {
                return Err(self.short_read(key, offset, len, 0).await);
            }
            Err(e) => return Err(self.error("read", &name, Missing::Object(key), e)),
        };
        let mut body = out.body;
        let mut buf = BytesMut::with_capacity(want);
        while let Some(chunk) = body.try_next().await.map_err(|e| {
            BlobError::Backend(format!("s3 read {}/{name}: {}", self.bucket, chain(&e)))
        })? {
            if buf.len() + chunk.len() > want {
                return Err(BlobError::Backend(format!(
                    "s3 read {}/{name}: the server sent more than the {len} bytes asked for \
                     (does it ignore Range?)",
                    self.bucket
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        if buf.len() != want {
            // S3 cuts a range that runs past the end short instead of refusing it.
            return Err(self.short_read(key, offset, len, buf.len() as u64).await);
        }
        Ok(buf.freeze())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError> {
        let name = self.object_name(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&name)
            .send()
            .await
        {
            Ok(out) => out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    BlobError::Backend(format!("s3 size {name}: no Content-Length in the answer"))
                }),
            Err(e) => match self.error("size", &name, Missing::Object(key), e) {
                BlobError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let name = self.object_name(key)?;
        // Uploads first: one completing meanwhile then leaves a version the walk below finds.
        let uploads = self.open_uploads(&name).await?;
        for upload_id in &uploads {
            self.abort(&name, upload_id).await?;
        }
        let versions = self.versions(&name).await?;
        for version in &versions {
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&name)
                .set_version_id(version.clone())
                .send()
                .await
            {
                Ok(_) => {}
                // Deleted meanwhile by someone else: the goal is reached.
                Err(e) if e.code() == Some("NoSuchVersion") => {}
                Err(e) => return Err(self.error("delete", &name, Missing::Nothing, e)),
            }
        }
        tracing::debug!(
            bucket = %self.bucket,
            key = %name,
            versions = versions.len(),
            uploads = uploads.len(),
            "s3 delete"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_from_toml_and_hides_the_secret_key() {
        let config: S3Config = toml::from_str(
            r#"
            endpoint_url = "http://127.0.0.1:9000"
            region = "us-east-1"
            bucket = "weights"
            force_path_style = true
            access_key_id = "AKIAEXAMPLE"
            secret_access_key = "wJalrXUtnFEMI/K7MDENG"
            prefix = "objects/"
            "#,
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
        assert_eq!(
            config.secret_access_key.as_ref().map(S3Secret::expose),
            Some("wJalrXUtnFEMI/K7MDENG")
        );
        assert_eq!(config.prefix, "objects/");

        let minimal: S3Config = toml::from_str("region = \"eu-west-1\"\nbucket = \"b\"").unwrap();
        assert!(minimal.endpoint_url.is_none() && minimal.access_key_id.is_none());
        assert!(!minimal.force_path_style && minimal.prefix.is_empty());

        let typo = toml::from_str::<S3Config>("region = \"r\"\nbucket = \"b\"\nendpoint = \"x\"");
        assert!(typo.is_err(), "unknown fields are refused");
    }

    #[tokio::test]
    async fn half_given_credentials_are_refused() {
        let config = S3Config {
            endpoint_url: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            bucket: "b".into(),
            force_path_style: true,
            access_key_id: Some("id".into()),
            secret_access_key: None,
            prefix: String::new(),
        };
        let err = S3Backend::connect(&config).await.unwrap_err();
        assert!(err.to_string().contains("together"), "{err}");
    }
}
