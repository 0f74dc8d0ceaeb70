use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::check_opaque;
use crate::{Backend, BlobError, PartReceipt};

/// Objects as files under one directory: `objects/ab/abcdef…`, unfinished uploads as part
/// files under `uploads/<key>/<upload id>/`. Completion concatenates the parts into a temporary file,
/// syncs it and renames it into place, so an object is either whole or absent after a crash.
#[derive(Debug, Clone)]
pub struct FsBackend {
    root: PathBuf,
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
            let etag = hex::encode(crypto::hash::sha256(&data));
            let size = data.len() as u64;
            let tmp = dir.join(format!("{part_number:06}.tmp"));
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&data)?;
            file.sync_data()?;
            std::fs::rename(&tmp, dir.join(format!("{part_number:06}")))?;
            Ok(PartReceipt {
                part_number,
                etag,
                size,
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
        let tmp = self.root.join("tmp").join(upload_id);
        let upload_id = upload_id.to_owned();
        blocking(move || {
            if !dir.is_dir() {
                return Err(BlobError::UploadNotFound(upload_id));
            }
            parts.sort_by_key(|p| p.part_number);
            let mut out = std::fs::File::create(&tmp)?;
            let mut buf = vec![0u8; 1 << 20];
            for part in &parts {
                let mut input = std::fs::File::open(dir.join(format!("{:06}", part.part_number)))?;
                loop {
                    let n = input.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])?;
                }
            }
            out.sync_all()?;
            drop(out);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&tmp, &target)?;
            if let Some(parent) = target.parent() {
                sync_dir(parent)?;
            }
            std::fs::remove_dir_all(&dir)?;
            if let Some(key_dir) = dir.parent() {
                // Empty unless another upload of the same key is open; then it stays.
                let _ = std::fs::remove_dir(key_dir);
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
                let data = std::fs::read(entry.path())?;
                parts.push(PartReceipt {
                    part_number,
                    etag: hex::encode(crypto::hash::sha256(&data)),
                    size: data.len() as u64,
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
            let mut file = match std::fs::File::open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(BlobError::NotFound(key));
                }
                other => other?,
            };
            let size = file.metadata()?.len();
            if offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(BlobError::BadRange {
                    start: offset,
                    end: offset.saturating_add(len),
                    len: size,
                });
            }
            let len =
                usize::try_from(len).map_err(|_| BlobError::Backend("range too large".into()))?;
            let mut buf = vec![0u8; len];
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut buf)?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError> {
        let path = self.object_path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.object_path(key)?;
        let uploads = self.root.join("uploads").join(key);
        blocking(move || {
            for result in [
                std::fs::remove_file(&path),
                std::fs::remove_dir_all(&uploads),
            ] {
                if let Err(e) = result
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(e.into());
                }
            }
            Ok(())
        })
        .await
    }
}
