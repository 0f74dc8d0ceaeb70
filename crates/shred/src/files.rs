//! Files: careful writing of root key files, and the formats of a layout-v2 key store
//! directory (epoch keys in files, before the epoch ledger), read only to import one.
//!
//! Epoch file `epoch-N.key`, version 2 (all integers big-endian):
//!
//! ```text
//! "custody-epoch" (13) || 0x02 || epoch (u64) || root kind (u8: 1 file, 2 aws-kms)
//!   || root name length (u16) || root name (UTF-8) || wrapped length (u16) || wrapped key
//! ```
//!
//! Intent file `epoch-N.intent`, version 1: `"custody-intent" (14) || 0x01 || epoch (u64) ||
//! root kind (u8) || root name length (u16) || root name` (length 0: not created yet).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{
    EPOCH_FILE_MAGIC, EPOCH_FILE_VERSION, INTENT_FILE_MAGIC, INTENT_FILE_VERSION, KeyError,
    RootKind, RootRef,
};

/// An epoch file's content (the wrapped key is not secret without its root).
pub(crate) struct EpochFile {
    pub root_kind: RootKind,
    pub root: RootRef,
    pub wrapped: Vec<u8>,
}

#[cfg(test)]
fn push_str16(out: &mut Vec<u8>, bytes: &[u8]) {
    // Root names are short (an ARN is at most 2048 bytes); longer ones are refused upstream.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

#[cfg(test)]
pub(crate) fn epoch_bytes(epoch: u64, kind: RootKind, root: &RootRef, wrapped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + root.as_str().len() + wrapped.len());
    out.extend_from_slice(EPOCH_FILE_MAGIC);
    out.push(EPOCH_FILE_VERSION);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(kind.code());
    push_str16(&mut out, root.as_str().as_bytes());
    push_str16(&mut out, wrapped);
    out
}

#[cfg(test)]
pub(crate) fn intent_bytes(epoch: u64, kind: RootKind, root: Option<&RootRef>) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(INTENT_FILE_MAGIC);
    out.push(INTENT_FILE_VERSION);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(kind.code());
    push_str16(&mut out, root.map_or("", RootRef::as_str).as_bytes());
    out
}

/// A cursor over a file's bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_be_bytes(a))
    }
    fn str16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

fn parse_epoch(bytes: &[u8], epoch: u64) -> Option<EpochFile> {
    let mut r = Reader(bytes);
    if r.take(EPOCH_FILE_MAGIC.len())? != EPOCH_FILE_MAGIC || r.u8()? != EPOCH_FILE_VERSION {
        return None;
    }
    if r.u64()? != epoch {
        return None;
    }
    let root_kind = RootKind::from_code(r.u8()?)?;
    let root = RootRef::new(std::str::from_utf8(r.str16()?).ok()?)?;
    let wrapped = r.str16()?.to_vec();
    if !r.0.is_empty() || wrapped.is_empty() {
        return None;
    }
    Some(EpochFile {
        root_kind,
        root,
        wrapped,
    })
}

fn parse_intent(bytes: &[u8], epoch: u64) -> Option<(RootKind, Option<RootRef>)> {
    let mut r = Reader(bytes);
    if r.take(INTENT_FILE_MAGIC.len())? != INTENT_FILE_MAGIC || r.u8()? != INTENT_FILE_VERSION {
        return None;
    }
    if r.u64()? != epoch {
        return None;
    }
    let kind = RootKind::from_code(r.u8()?)?;
    let name = std::str::from_utf8(r.str16()?).ok()?;
    if !r.0.is_empty() {
        return None;
    }
    let root = if name.is_empty() {
        None
    } else {
        Some(RootRef::new(name)?)
    };
    Some((kind, root))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn read_epoch_file(path: &Path, epoch: u64) -> Result<EpochFile, KeyError> {
    let bytes = fs::read(path).map_err(io(path))?;
    parse_epoch(&bytes, epoch).ok_or_else(|| KeyError::BadKeyFile(path.to_owned()))
}

pub(crate) fn read_intent_file(
    path: &Path,
    epoch: u64,
) -> Result<(RootKind, Option<RootRef>), KeyError> {
    let bytes = fs::read(path).map_err(io(path))?;
    parse_intent(&bytes, epoch).ok_or_else(|| KeyError::BadKeyFile(path.to_owned()))
}

/// Files named `{prefix}{N}{suffix}` in `dir` (N a canonical decimal), sorted by N.
pub(crate) fn list_numbered(
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> Result<Vec<(u64, PathBuf)>, KeyError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_suffix(suffix))
        else {
            continue;
        };
        let canonical = !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'));
        match n.parse::<u64>() {
            Ok(epoch) if canonical => out.push((epoch, entry.path())),
            _ => return Err(KeyError::BadKeyFile(entry.path())),
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

fn sync_parent(path: &Path) -> Result<(), KeyError> {
    if let Some(parent) = path.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(parent))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` whole: temp file (0600), fsync, rename, fsync of the directory.
#[cfg(test)]
pub(crate) fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let _ = fs::remove_file(&tmp);
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    sync_parent(path)
}

/// Like [`write_secret_file`], but fails if `path` exists (no rename over it).
pub(crate) fn create_secret_file(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io(path))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // A partly written root must not stay behind looking like a damaged one.
        let _ = fs::remove_file(path);
        return Err(io(path)(e));
    }
    sync_parent(path)
}

pub(crate) fn remove_file(path: &Path) -> Result<(), KeyError> {
    match fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Overwrites the file's bytes in place with random data (fsync), then removes it (fsync of
/// the directory). Returns false when the file did not exist. On SSDs and copy-on-write file
/// systems the overwrite may land elsewhere: it is a best effort beside the removal.
pub(crate) fn overwrite_and_remove(path: &Path) -> Result<bool, KeyError> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(path)(e)),
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let mut left = usize::try_from(len).unwrap_or(usize::MAX);
    while left > 0 {
        let chunk: [u8; 256] = crypto::random_bytes()?;
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).map_err(io(path))?;
        left -= n;
    }
    file.sync_all().map_err(io(path))?;
    drop(file);
    remove_file(path)?;
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn epoch_file_round_trips_and_rejects_damage() {
        let root = RootRef::new("arn:aws:kms:us-east-1:123456789012:key/abc").unwrap();
        let bytes = epoch_bytes(7, RootKind::Kms, &root, &[1, 2, 3]);
        let file = parse_epoch(&bytes, 7).unwrap();
        assert_eq!(file.root_kind, RootKind::Kms);
        assert_eq!(file.root, root);
        assert_eq!(file.wrapped, vec![1, 2, 3]);
        // Another epoch number, any truncation, trailing bytes, another version.
        assert!(parse_epoch(&bytes, 8).is_none());
        for n in 0..bytes.len() {
            assert!(parse_epoch(&bytes[..n], 7).is_none(), "{n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(parse_epoch(&long, 7).is_none());
        let mut v1 = bytes.clone();
        v1[EPOCH_FILE_MAGIC.len()] = 1;
        assert!(parse_epoch(&v1, 7).is_none());
        let mut kind = bytes.clone();
        kind[EPOCH_FILE_MAGIC.len() + 9] = 9;
        assert!(parse_epoch(&kind, 7).is_none());
    }

    #[test]
    fn intent_file_round_trips() {
        let bytes = intent_bytes(3, RootKind::File, None);
        assert_eq!(parse_intent(&bytes, 3), Some((RootKind::File, None)));
        let root = RootRef::new("root-3.key").unwrap();
        let bytes = intent_bytes(3, RootKind::File, Some(&root));
        assert_eq!(parse_intent(&bytes, 3), Some((RootKind::File, Some(root))));
        assert!(parse_intent(&bytes, 4).is_none());
        assert!(parse_intent(&bytes[..bytes.len() - 1], 3).is_none());
    }

    #[test]
    fn numbered_names_must_be_canonical() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("epoch-2.key"), b"").unwrap();
        fs::write(dir.path().join("epoch-10.key"), b"").unwrap();
        fs::write(dir.path().join("other.key"), b"").unwrap();
        let found: Vec<u64> = list_numbered(dir.path(), "epoch-", ".key")
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(found, vec![2, 10]);
        fs::write(dir.path().join("epoch-02.key"), b"").unwrap();
        assert!(matches!(
            list_numbered(dir.path(), "epoch-", ".key"),
            Err(KeyError::BadKeyFile(_))
        ));
    }

    #[test]
    fn overwrite_and_remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_secret_file(&path, &[7u8; 1000]).unwrap();
        assert!(overwrite_and_remove(&path).unwrap());
        assert!(!path.exists());
        assert!(!overwrite_and_remove(&path).unwrap());
    }
}
