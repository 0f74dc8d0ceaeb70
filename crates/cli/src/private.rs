//! Writing weights on a shared machine: folders 0700 and files 0600 that nobody else can open,
//! created without following a link someone planted, and never reusing a file someone else
//! could have opened first.
//!
//! Another local user (or a process of the same user running other code) may have planted a
//! symbolic link where `fetch` is about to write, to make it write the weights somewhere they
//! can read, or overwrite a file of the user's; or a world-readable `.custody-partial` file
//! whose open handle they keep. So:
//!
//! * folders below the output folder are created one component at a time with mode 0700; an
//!   existing component must be a real folder, never a link;
//! * a file is created with `O_CREAT | O_EXCL` and mode 0600, which fails on any existing
//!   name, a dangling link included: an existing name is removed (the link itself, never its
//!   target) and the file created fresh;
//! * an existing partial file is reused for a resumed download only when, opened with
//!   `O_NOFOLLOW`, it is a regular file of ours, with one link and no permission for group or
//!   others; anything else is removed and the download starts over.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path};

use anyhow::{Context, bail};

/// Creates `relative`'s folders below `root` (0700), refusing to go through a link.
pub fn create_dirs(root: &Path, relative: &Path) -> anyhow::Result<()> {
    if !root.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("creating {}", root.display()))?;
    }
    let mut dir = root.to_path_buf();
    for component in relative.components() {
        let Component::Normal(name) = component else {
            bail!("{}: not a plain relative path", relative.display());
        };
        dir.push(name);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => bail!(
                "refusing to write through {}: it is not a folder (a link or a file is in the way)",
                dir.display()
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("checking {}", dir.display())),
        }
    }
    Ok(())
}

/// Creates `path` afresh, 0600, for writing: whatever was at that name (a planted link, an
/// old partial file) is removed first, never followed.
pub fn create_new(path: &Path) -> anyhow::Result<File> {
    for attempt in 0..2 {
        match exclusive(path) {
            Ok(file) => return Ok(file),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt == 0 => {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing {} to write it afresh", path.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!(
        "{} keeps reappearing: another process is writing there",
        path.display()
    )
}

fn exclusive(path: &Path) -> std::io::Result<File> {
    // Read too: a ranged download hashes what it wrote, as it grows (`fetch.rs`).
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Opens an existing partial file to resume into, if it is safe to: a regular file of ours,
/// with one link, that only we can read. `None` when there is none or it is not; then the
/// caller starts over with [`create_new`].
pub fn reopen_own(path: &Path) -> anyhow::Result<Option<File>> {
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        // Missing, or a link (ELOOP), or not ours to open: not reusable.
        Err(_) => return Ok(None),
    };
    // The checks run on the opened file itself, so nothing can be swapped in between.
    let meta = file
        .metadata()
        .with_context(|| format!("checking {}", path.display()))?;
    let ours = meta.uid() == rustix::process::geteuid().as_raw();
    let private = meta.permissions().mode() & 0o077 == 0;
    if meta.file_type().is_file() && ours && private && meta.nlink() == 1 {
        Ok(Some(file))
    } else {
        tracing::warn!(path = %path.display(), "an existing partial file is not private; starting over");
        Ok(None)
    }
}

/// Opens a finished file to check whether it can stay (a fetch into a folder that already
/// has it): only a regular file of ours, with one link, that only we can read; `None`
/// otherwise (the caller downloads it again, replacing it).
pub fn open_own(path: &Path) -> Option<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let ours = meta.uid() == rustix::process::geteuid().as_raw();
    let private = meta.permissions().mode() & 0o077 == 0;
    (meta.file_type().is_file() && ours && private && meta.nlink() == 1).then_some(file)
}

/// Reads a small file we wrote (resume state), refusing a link or one others could write.
pub fn read_own(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    let ours = meta.uid() == rustix::process::geteuid().as_raw();
    if !meta.file_type().is_file() || !ours || meta.permissions().mode() & 0o022 != 0 {
        return None;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn a_planted_link_is_replaced_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let target = dir.path().join("out.bin");
        symlink(&victim, &target).unwrap();
        use std::io::Write;
        create_new(&target).unwrap().write_all(b"weights").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&target).unwrap(), b"weights");
        let meta = std::fs::symlink_metadata(&target).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(reopen_own(&target).unwrap().is_some());
    }

    #[test]
    fn folders_are_private_and_links_in_the_way_refused() {
        let dir = tempfile::tempdir().unwrap();
        create_dirs(dir.path(), Path::new("a/b")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), dir.path().join("c")).unwrap();
        let err = create_dirs(dir.path(), Path::new("c/d")).unwrap_err();
        assert!(err.to_string().contains("not a folder"), "{err}");
        assert!(!elsewhere.path().join("d").exists());
    }

    #[test]
    fn a_readable_or_linked_partial_file_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let readable = dir.path().join("p1");
        std::fs::write(&readable, b"x").unwrap();
        std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(reopen_own(&readable).unwrap().is_none());
        let linked = dir.path().join("p2");
        symlink(&readable, &linked).unwrap();
        assert!(reopen_own(&linked).unwrap().is_none());
        let hard = dir.path().join("p3");
        let own = create_new(&dir.path().join("p4")).unwrap();
        drop(own);
        std::fs::hard_link(dir.path().join("p4"), &hard).unwrap();
        assert!(
            reopen_own(&hard).unwrap().is_none(),
            "a second link lets another name read it"
        );
        assert!(reopen_own(&dir.path().join("missing")).unwrap().is_none());
    }
}
