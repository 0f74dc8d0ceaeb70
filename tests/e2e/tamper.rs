//! Stored ciphertext that was modified, swapped or truncated never comes back as a file.

use std::path::{Path, PathBuf};

use crate::support::*;

/// Uploads `files` (name, size, seed) as `acme/MODEL`, grants alice, and returns the stored
/// objects the upload created, in the order of `files`' sizes (sizes are made distinct by the
/// callers where order matters).
fn upload(
    world: &World,
    model: &str,
    files: &[(&str, u64, u64)],
) -> (tempfile::TempDir, Vec<PathBuf>) {
    let before = stored_objects(&world.server);
    let src = tempfile::tempdir().unwrap();
    for (name, size, seed) in files {
        write_data(&src.path().join(name), *size, *seed);
    }
    world.upload(src.path(), model);
    world
        .server
        .ok(&world.admin, &["grant", model, "--to", "alice"]);
    let created: Vec<PathBuf> = stored_objects(&world.server)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(created.len(), files.len());
    (src, created)
}

fn fetch_fails(world: &World, model: &str, fragment: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let run = world.server.custody(
        &world.alice,
        &["fetch", model, "--out", out.path().to_str().unwrap()],
    );
    assert!(!run.success, "fetch of tampered {model} succeeded");
    assert!(run.stderr.contains(fragment), "{model}: {}", run.stderr);
    out
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn no_finished_file(out: &Path, name: &str) {
    let files = list_files(out);
    assert!(
        !files.iter().any(|f| f == name),
        "{name} left as if complete: {files:?}"
    );
    assert!(
        !files.iter().any(|f| f.ends_with(".custody-partial")),
        "partial download left behind: {files:?}"
    );
}

#[test]
fn a_flipped_byte_in_the_first_segment_is_an_integrity_error() {
    let world = World::new();
    let (_, objects) = upload(&world, "acme/flip", &[("w.bin", 5000, 1)]);
    flip_byte(&objects[0], 2000);
    let out = fetch_fails(&world, "acme/flip", "integrity");
    no_finished_file(out.path(), "w.bin");
}

#[test]
fn a_flipped_byte_deep_in_a_large_file_cuts_the_download() {
    let world = World::new();
    let (_, objects) = upload(&world, "acme/deep", &[("big.bin", (3 << 20) + 5, 2)]);
    // Inside the third segment: the first two are already on their way when it is found.
    flip_byte(&objects[0], 40 + 2 * ((1 << 20) + 16) + 100);
    let out = fetch_fails(&world, "acme/deep", "integrity");
    no_finished_file(out.path(), "big.bin");
}

#[test]
fn swapped_objects_are_an_integrity_error() {
    let world = World::new();
    let (_, objects) = upload(
        &world,
        "acme/swap",
        &[("a.bin", 7000, 3), ("b.bin", 7000, 4)],
    );
    let (a, b) = (
        std::fs::read(&objects[0]).unwrap(),
        std::fs::read(&objects[1]).unwrap(),
    );
    std::fs::write(&objects[0], &b).unwrap();
    std::fs::write(&objects[1], &a).unwrap();
    let out = fetch_fails(&world, "acme/swap", "integrity");
    no_finished_file(out.path(), "a.bin");
    no_finished_file(out.path(), "b.bin");
}

#[test]
fn an_object_moved_to_another_model_does_not_open() {
    let world = World::new();
    let (_, victim) = upload(&world, "acme/victim", &[("w.bin", 6000, 5)]);
    let (_, other) = upload(&world, "acme/other", &[("w.bin", 6000, 6)]);
    std::fs::copy(&victim[0], &other[0]).unwrap();
    fetch_fails(&world, "acme/other", "integrity");
}

#[test]
fn truncated_objects_are_an_integrity_error() {
    let world = World::new();
    let (_, objects) = upload(&world, "acme/trunc", &[("t.bin", (2 << 20) + 77, 7)]);
    let len = std::fs::metadata(&objects[0]).unwrap().len();
    // Dropping the whole last segment, and dropping a few bytes.
    for cut in [77 + 16, 3] {
        let original = std::fs::read(&objects[0]).unwrap();
        std::fs::write(&objects[0], &original[..(len - cut) as usize]).unwrap();
        let out = fetch_fails(&world, "acme/trunc", "integrity");
        no_finished_file(out.path(), "t.bin");
        std::fs::write(&objects[0], &original).unwrap();
    }
    // Restored, it fetches again: the refusals above were about the damage.
    let out = tempfile::tempdir().unwrap();
    world.server.ok(
        &world.alice,
        &["fetch", "acme/trunc", "--out", out.path().to_str().unwrap()],
    );
}
