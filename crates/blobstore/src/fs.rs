use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::check_opaque;
use crate::{Backend, BlobError, PartReceipt};

/// Objects as directories of part files under one directory.
///
/// Layout: an unfinished upload is `uploads/<key>/<upload id>/` holding one file per part
/// (`000001`, `000002`, …), each written to a `.tmp` name, synced and renamed, so a part is
/// whole or absent. Completion writes an index of the parts' lengths (see [`PartIndex`]) into
/// that directory, syncs it, and renames the whole directory to `objects/<ab>/<key>/`: one
/// rename, no byte copied, and the object is whole or absent after a crash. (Earlier versions
/// concatenated the parts into one file, writing every byte twice; such single-file objects
/// are still read and deleted.)
///
/// A part's ETag is its file's inode number and length: cheap (the ciphertext is
/// authenticated above this layer, so hashing it again here bought nothing) and still
/// different for a part written again, so completion notices a part replaced behind it.
#[derive(Debug, Clone)]
pub struct FsBackend {
    root: PathBuf,
}

/// The name of the part index inside a completed object's directory.
const INDEX: &str = "index";

/// The lengths of an object's parts, in order: version byte 1, then each length as a
/// big-endian u64. Part `n` (from 1) is the file named `n` with six digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartIndex {
    pub(crate) lengths: Vec<u64>,
}

impl PartIndex {
    const VERSION: u8 = 1;

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 * self.lengths.len());
        out.push(Self::VERSION);
        for len in &self.lengths {
            out.extend_from_slice(&len.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, BlobError> {
        let corrupt = || BlobError::Backend("the part index of a stored object is corrupt".into());
        let (&version, rest) = bytes.split_first().ok_or_else(corrupt)?;
        if version != Self::VERSION {
            return Err(BlobError::Backend(format!(
                "the part index of a stored object has version {version}; this custody reads version {}",
                Self::VERSION
            )));
        }
        if rest.is_empty() || rest.len() % 8 != 0 {
            return Err(corrupt());
        }
        let lengths = rest
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
            .collect::<Vec<_>>();
        lengths
            .iter()
            .try_fold(0u64, |sum, len| sum.checked_add(*len))
            .ok_or_else(corrupt)?;
        Ok(PartIndex { lengths })
    }

    fn total(&self) -> u64 {
        self.lengths.iter().sum()
    }
}

fn part_name(part_number: u32) -> String {
    format!("{part_number:06}")
}

fn etag_of(meta: &std::fs::Metadata) -> String {
    format!("{:x}-{:x}", meta.ino(), meta.len())
}

/// A stored object as found on disk.
enum Stored {
    /// A directory of parts with its index (this version).
    Parts { dir: PathBuf, index: PartIndex },
    /// One file (objects completed by earlier versions).
    File(PathBuf),
}

impl FsBackend {
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        for sub in ["objects", "uploads", "tmp"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(FsBackend {
            root: root.to_owned(),
        })
    }

    fn object_path(&self, key: &str) -> Result<PathBuf, BlobError> {
        check_opaque(key)?;
        Ok(self.root.join("objects").join(&key[..2]).join(key))
    }

    fn upload_dir(&self, key: &str, upload_id: &str) -> Result<PathBuf, BlobError> {
        check_opaque(key)?;
        check_opaque(upload_id)?;
        Ok(self.root.join("uploads").join(key).join(upload_id))
    }
}

/// The object at `path`, or `None` when there is none.
fn find(path: &Path) -> Result<Option<Stored>, BlobError> {
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    if !meta.is_dir() {
        return Ok(Some(Stored::File(path.to_owned())));
    }
    let index = PartIndex::decode(&std::fs::read(path.join(INDEX))?)?;
    Ok(Some(Stored::Parts {
        dir: path.to_owned(),
        index,
    }))
}

/// Appends exactly `len` bytes of `file` from `offset` to `out`, without zero-filling `out`
/// first; a file that ends sooner was truncated behind custody's back.
fn read_exact_at(
    file: &mut std::fs::File,
    offset: u64,
    len: u64,
    out: &mut Vec<u8>,
) -> Result<(), BlobError> {
    file.seek(SeekFrom::Start(offset))?;
    let got = file.take(len).read_to_end(out)?;
    if got as u64 != len {
        return Err(BlobError::Integrity);
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlobError::Backend(format!("storage task failed: {e}")))?
}

#[async_trait]
impl Backend for FsBackend {
    fn kind(&self) -> &'static str {
        "filesystem"
    }

    async fn probe(&self) -> Result<(), BlobError> {
        let dirs = ["objects", "uploads", "tmp"].map(|sub| self.root.join(sub));
        blocking(move || {
            for dir in dirs {
                if !std::fs::metadata(&dir)?.is_dir() {
                    return Err(BlobError::Backend(format!(
                        "{} is not a directory",
                        dir.display()
                    )));
                }
            }
            Ok(())
        })
        .await
    }

    async fn create_upload(&self, key: &str) -> Result<String, BlobError> {
        let upload_id = hex::encode(crypto::random_bytes::<16>()?);
        let dir = self.upload_dir(key, &upload_id)?;
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            Ok(upload_id)
        })
        .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> Result<PartReceipt, BlobError> {
        if part_number == 0 {
            return Err(BlobError::Backend("part numbers start at 1".into()));
        }
        let dir = self.upload_dir(key, upload_id)?;
        let upload_id = upload_id.to_owned();
        blocking(move || {
            if !dir.is_dir() {
                return Err(BlobError::UploadNotFound(upload_id));
            }
            let tmp = dir.join(format!("{}.tmp", part_name(part_number)));
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&data)?;
            file.sync_data()?;
            let meta = file.metadata()?;
            std::fs::rename(&tmp, dir.join(part_name(part_number)))?;
            Ok(PartReceipt {
                part_number,
                etag: etag_of(&meta),
                size: meta.len(),
            })
        })
        .await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        mut parts: Vec<PartReceipt>,
    ) -> Result<(), BlobError> {
        let target = self.object_path(key)?;
        let dir = self.upload_dir(key, upload_id)?;
        let displaced = self.root.join("tmp").join(upload_id);
        let upload_id = upload_id.to_owned();
        blocking(move || {
            parts.sort_by_key(|p| p.part_number);
            if parts.is_empty()
                || parts
                    .windows(2)
                    .any(|w| w[0].part_number == w[1].part_number)
            {
                return Err(BlobError::Backend(
                    "a completion lists each part once, and at least one".into(),
                ));
            }
            let index = PartIndex {
                lengths: parts.iter().map(|p| p.size).collect(),
            };
            if !dir.is_dir() {
                // Completed already, and asked again after a crash lost the answer.
                if let Some(Stored::Parts { index: found, .. }) = find(&target)?
                    && found == index
                {
                    return Ok(());
                }
                return Err(BlobError::UploadNotFound(upload_id));
            }
            for part in &parts {
                let meta = match std::fs::metadata(dir.join(part_name(part.part_number))) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(BlobError::Backend(format!(
                            "part {} of upload {upload_id} is not stored",
                            part.part_number
                        )));
                    }
                    other => other?,
                };
                // Receipts of earlier versions carried a SHA-256 of the part: only the length
                // can be checked against those.
                let legacy = part.etag.len() == 64;
                if meta.len() != part.size || (!legacy && etag_of(&meta) != part.etag) {
                    return Err(BlobError::Backend(format!(
                        "part {} of upload {upload_id} changed since its receipt was issued",
                        part.part_number
                    )));
                }
            }
            // Whatever the completion does not list goes: other parts, interrupted writes.
            let listed: std::collections::BTreeSet<String> =
                parts.iter().map(|p| part_name(p.part_number)).collect();
            for entry in std::fs::read_dir(&dir)? {
                let name = entry?.file_name();
                if !name.to_str().is_some_and(|n| listed.contains(n)) {
                    std::fs::remove_file(dir.join(&name))?;
                }
            }
            // Parts numbered with gaps become 1..=n; ascending, so no rename lands on a
            // listed part not yet moved.
            for (position, part) in (1u32..).zip(&parts) {
                if part.part_number != position {
                    std::fs::rename(
                        dir.join(part_name(part.part_number)),
                        dir.join(part_name(position)),
                    )?;
                }
            }
            let index_tmp = dir.join(format!("{INDEX}.tmp"));
            let mut file = std::fs::File::create(&index_tmp)?;
            file.write_all(&index.encode())?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&index_tmp, dir.join(INDEX))?;
            sync_dir(&dir)?;
            let parent = target.parent().ok_or_else(|| {
                BlobError::Backend("an object path without a parent directory".into())
            })?;
            std::fs::create_dir_all(parent)?;
            // S3 replaces an object completed again under its key: move the old one aside
            // first (a directory cannot be renamed over a full one), remove it after.
            let replaced = match std::fs::symlink_metadata(&target) {
                Ok(_) => {
                    std::fs::rename(&target, &displaced)?;
                    true
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(e.into()),
            };
            std::fs::rename(&dir, &target)?;
            sync_dir(parent)?;
            if let Some(key_dir) = dir.parent() {
                sync_dir(key_dir)?;
                // Empty unless another upload of the same key is open; then it stays.
                let _ = std::fs::remove_dir(key_dir);
            }
            if replaced {
                remove_any(&displaced)?;
            }
            Ok(())
        })
        .await
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), BlobError> {
        let dir = self.upload_dir(key, upload_id)?;
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartReceipt>, BlobError> {
        let dir = self.upload_dir(key, upload_id)?;
        let upload_id = upload_id.to_owned();
        blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(BlobError::UploadNotFound(upload_id));
                }
                other => other?,
            };
            let mut parts = Vec::new();
            for entry in entries {
                let entry = entry?;
                let Some(part_number) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue; // a .tmp of an interrupted write
                };
                let meta = entry.metadata()?;
                parts.push(PartReceipt {
                    part_number,
                    etag: etag_of(&meta),
                    size: meta.len(),
                });
            }
            parts.sort_by_key(|p| p.part_number);
            Ok(parts)
        })
        .await
    }

    async fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, BlobError> {
        let path = self.object_path(key)?;
        let key = key.to_owned();
        blocking(move || {
            let stored = find(&path)?.ok_or_else(|| BlobError::NotFound(key.clone()))?;
            let size = match &stored {
                Stored::Parts { index, .. } => index.total(),
                Stored::File(file) => std::fs::metadata(file)?.len(),
            };
            let end =
                offset
                    .checked_add(len)
                    .filter(|end| *end <= size)
                    .ok_or(BlobError::BadRange {
                        start: offset,
                        end: offset.saturating_add(len),
                        len: size,
                    })?;
            let capacity =
                usize::try_from(len).map_err(|_| BlobError::Backend("range too large".into()))?;
            let mut out = Vec::with_capacity(capacity);
            match stored {
                Stored::File(file) => {
                    read_exact_at(&mut std::fs::File::open(file)?, offset, len, &mut out)?;
                }
                Stored::Parts { dir, index } => {
                    let mut part_start = 0u64;
                    for (number, part_len) in (1u32..).zip(&index.lengths) {
                        let part_end = part_start + part_len;
                        if part_end > offset && part_start < end {
                            let from = offset.max(part_start);
                            let to = end.min(part_end);
                            let mut part = match std::fs::File::open(dir.join(part_name(number))) {
                                // Gone with its object (deleted meanwhile), or removed alone.
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                    return Err(if dir.exists() {
                                        BlobError::Integrity
                                    } else {
                                        BlobError::NotFound(key)
                                    });
                                }
                                other => other?,
                            };
                            read_exact_at(&mut part, from - part_start, to - from, &mut out)?;
                        }
                        if part_end >= end {
                            break;
                        }
                        part_start = part_end;
                    }
                }
            }
            Ok(Bytes::from(out))
        })
        .await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError> {
        let path = self.object_path(key)?;
        blocking(move || {
            Ok(match find(&path)? {
                None => None,
                Some(Stored::Parts { index, .. }) => Some(index.total()),
                Some(Stored::File(file)) => Some(std::fs::metadata(file)?.len()),
            })
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.object_path(key)?;
        let uploads = self.root.join("uploads").join(key);
        blocking(move || {
            remove_any(&path)?;
            remove_any(&uploads)
        })
        .await
    }
}

/// Removes a file or a directory tree; absent is fine.
fn remove_any(path: &Path) -> Result<(), BlobError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY: &str = "a0112233445566778899aabbccddeeff";

    #[test]
    fn the_part_index_has_a_version_byte_and_fixed_bytes() {
        let index = PartIndex {
            lengths: vec![8_388_736, 5],
        };
        let bytes = index.encode();
        assert_eq!(
            hex::encode(&bytes),
            "01\
             0000000000800080\
             0000000000000005"
        );
        assert_eq!(PartIndex::decode(&bytes).unwrap(), index);
        for bad in [
            &b""[..],
            &[1],
            &[2, 0, 0, 0, 0, 0, 0, 0, 5],
            &[1, 0, 0, 0, 0, 0, 0, 5],
            &[
                1, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 1,
            ],
        ] {
            assert!(PartIndex::decode(bad).is_err(), "{bad:?}");
        }
    }

    async fn stored(backend: &FsBackend, parts: &[&'static [u8]]) -> String {
        let upload = backend.create_upload(KEY).await.unwrap();
        let mut receipts = Vec::new();
        for (number, data) in (1u32..).zip(parts) {
            receipts.push(
                backend
                    .upload_part(KEY, &upload, number, Bytes::from_static(data))
                    .await
                    .unwrap(),
            );
        }
        backend
            .complete_upload(KEY, &upload, receipts.clone())
            .await
            .unwrap();
        // Asked again (the answer was lost in a crash): done already, not an error.
        backend
            .complete_upload(KEY, &upload, receipts)
            .await
            .unwrap();
        upload
    }

    #[tokio::test]
    async fn completion_renames_the_parts_into_place_without_copying() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::open(dir.path()).unwrap();
        let upload = backend.create_upload(KEY).await.unwrap();
        let receipt = backend
            .upload_part(KEY, &upload, 1, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        let part = dir
            .path()
            .join("uploads")
            .join(KEY)
            .join(&upload)
            .join("000001");
        let inode = std::fs::metadata(&part).unwrap().ino();
        backend
            .complete_upload(KEY, &upload, vec![receipt])
            .await
            .unwrap();
        let object = backend.object_path(KEY).unwrap();
        assert_eq!(
            std::fs::metadata(object.join("000001")).unwrap().ino(),
            inode
        );
        assert!(!dir.path().join("uploads").join(KEY).exists());
        assert_eq!(&backend.read_range(KEY, 1, 3).await.unwrap()[..], b"ell");
    }

    #[tokio::test]
    async fn a_part_replaced_after_its_receipt_is_not_completed() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::open(dir.path()).unwrap();
        let upload = backend.create_upload(KEY).await.unwrap();
        let first = backend
            .upload_part(KEY, &upload, 1, Bytes::from_static(b"first"))
            .await
            .unwrap();
        backend
            .upload_part(KEY, &upload, 1, Bytes::from_static(b"other"))
            .await
            .unwrap();
        let err = backend
            .complete_upload(KEY, &upload, vec![first])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("changed"), "{err}");
        assert_eq!(backend.size(KEY).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_truncated_or_missing_part_is_an_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::open(dir.path()).unwrap();
        stored(&backend, &[b"abcdef", b"ghij"]).await;
        let object = backend.object_path(KEY).unwrap();
        std::fs::write(object.join("000002"), b"gh").unwrap();
        assert_eq!(&backend.read_range(KEY, 0, 6).await.unwrap()[..], b"abcdef");
        assert_eq!(&backend.read_range(KEY, 4, 4).await.unwrap()[..], b"efgh");
        assert!(matches!(
            backend.read_range(KEY, 4, 6).await,
            Err(BlobError::Integrity)
        ));
        std::fs::remove_file(object.join("000002")).unwrap();
        assert!(matches!(
            backend.read_range(KEY, 6, 1).await,
            Err(BlobError::Integrity)
        ));
        backend.delete(KEY).await.unwrap();
        assert!(matches!(
            backend.read_range(KEY, 0, 1).await,
            Err(BlobError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn objects_stored_as_one_file_by_earlier_versions_still_read_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::open(dir.path()).unwrap();
        let object = backend.object_path(KEY).unwrap();
        std::fs::create_dir_all(object.parent().unwrap()).unwrap();
        std::fs::write(&object, b"one flat file").unwrap();
        assert_eq!(backend.size(KEY).await.unwrap(), Some(13));
        assert_eq!(&backend.read_range(KEY, 4, 4).await.unwrap()[..], b"flat");
        assert!(matches!(
            backend.read_range(KEY, 10, 4).await,
            Err(BlobError::BadRange { .. })
        ));
        backend.delete(KEY).await.unwrap();
        assert!(!object.exists());
        assert_eq!(backend.size(KEY).await.unwrap(), None);
    }

    #[tokio::test]
    async fn completing_a_key_again_replaces_the_object_whole() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::open(dir.path()).unwrap();
        stored(&backend, &[b"old bytes"]).await;
        stored(&backend, &[b"new", b"er"]).await;
        assert_eq!(backend.size(KEY).await.unwrap(), Some(5));
        assert_eq!(&backend.read_range(KEY, 0, 5).await.unwrap()[..], b"newer");
        let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 0);
    }
}
