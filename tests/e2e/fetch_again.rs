//! Fetching into a folder that already holds the revision (issue 19): complete files are
//! checked (size and SHA-256) and kept, not downloaded again; a file that differs, or one
//! that is not privately ours, is replaced; files of another revision stay unless
//! `--delete-extra`; and the progress bar of a resumed fetch says so, never passes 100% and
//! counts only what this run transfers (its rate and time left too).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::Value;

use crate::support::*;

fn fetch_json(s: &TestServer, token: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json", "fetch"];
    all.extend(args);
    let out = s.ok(token, &all);
    serde_json::from_str(out.trim()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn a_complete_folder_is_checked_not_downloaded_again() {
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    write_data(&src.path().join("weights.bin"), 3 << 20, 1);
    std::fs::write(src.path().join("config.json"), b"{\"v\": 1}").unwrap();
    write_data(&src.path().join("sub/b.txt"), 1000, 2);
    world.upload(src.path(), "acme/m");
    s.ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    let dest = tempfile::tempdir().unwrap();
    let out = dest.path().to_str().unwrap();
    let first = fetch_json(s, &world.alice, &["acme/m", "--out", out]);
    assert!(strings(&first["already_complete"]).is_empty());
    let weights = dest.path().join("weights.bin");
    let before = inode(&weights);

    // Again: nothing downloaded, every file kept as it was.
    let again = s.ok(&world.alice, &["fetch", "acme/m", "--out", out]);
    assert!(
        again.contains("3 files already complete (size and SHA-256 match), not downloaded again"),
        "{again}"
    );
    let report = fetch_json(s, &world.alice, &["acme/m", "--out", out]);
    assert_eq!(report["bytes_received"], 0, "{report}");
    assert_eq!(
        strings(&report["already_complete"]),
        ["config.json", "sub/b.txt", "weights.bin"]
    );
    assert_eq!(inode(&weights), before, "a complete file was written again");

    // Same size, other bytes: downloaded again, and only that file.
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[12345] ^= 1;
    std::fs::write(&weights, &bytes).unwrap();
    // Right bytes in a file others can read: not trusted to stay private, replaced.
    let config = dest.path().join("config.json");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let report = fetch_json(s, &world.alice, &["acme/m", "--out", out]);
    assert_eq!(
        strings(&report["already_complete"]),
        ["sub/b.txt"],
        "{report}"
    );
    assert_eq!(report["bytes_received"], (3 << 20) + 8, "{report}");
    assert_same_file(&src.path().join("weights.bin"), &weights);
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn files_of_another_revision_go_only_when_asked() {
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), b"{\"v\": 1}").unwrap();
    std::fs::write(src.path().join("old.txt"), b"old").unwrap();
    world.upload(src.path(), "acme/m");
    s.ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    let dest = tempfile::tempdir().unwrap();
    let out = dest.path().to_str().unwrap();
    fetch_json(s, &world.alice, &["acme/m", "--out", out]);
    // The Hugging Face client's bookkeeping (what `custody wipe` reads) is never "extra".
    std::fs::create_dir_all(dest.path().join(".cache/huggingface")).unwrap();
    std::fs::write(dest.path().join(".cache/huggingface/marker"), b"x").unwrap();

    let v2 = tempfile::tempdir().unwrap();
    std::fs::write(v2.path().join("config.json"), b"{\"v\": 2}").unwrap();
    std::fs::write(v2.path().join("new.txt"), b"new").unwrap();
    world.upload(v2.path(), "acme/m");

    let text = s.ok(&world.alice, &["fetch", "acme/m", "--out", out]);
    assert!(
        text.contains("1 files in ")
            && text.contains("are not in this revision (--delete-extra removes them): old.txt"),
        "{text}"
    );
    assert!(dest.path().join("old.txt").exists());
    assert_eq!(
        std::fs::read(dest.path().join("config.json")).unwrap(),
        b"{\"v\": 2}"
    );

    let report = fetch_json(s, &world.alice, &["acme/m", "--out", out, "--delete-extra"]);
    assert_eq!(strings(&report["removed"]), ["old.txt"], "{report}");
    assert_eq!(
        list_files(dest.path()),
        [".cache/huggingface/marker", "config.json", "new.txt"]
    );
}

/// The bar as a person sees it on a terminal (`script` gives the command one).
#[test]
fn a_resumed_fetch_says_so_and_never_passes_its_total() {
    let world = World::new();
    let s = &world.server;
    let src = tempfile::tempdir().unwrap();
    write_data(&src.path().join("a.bin"), 60 << 20, 3);
    write_data(&src.path().join("b.bin"), 4 << 20, 4);
    world.upload(src.path(), "acme/m");
    s.ok(&world.admin, &["grant", "acme/m", "--to", "alice"]);
    let dest = tempfile::tempdir().unwrap();
    let out = dest.path().to_str().unwrap();
    fetch_json(s, &world.alice, &["acme/m", "--out", out]);
    std::fs::remove_file(dest.path().join("b.bin")).unwrap();

    let host = s.host.as_ref().unwrap();
    let command = format!("{BIN} fetch acme/m --out {out}");
    let run = Run::from(
        std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("CUSTODY_SERVER", &s.url)
            .env("CUSTODY_TOKEN", &world.alice)
            .env("CUSTODY_CA", &s.ca)
            .env("CUSTODY_HOST_CERT", &host.cert)
            .env("CUSTODY_HOST_KEY", &host.key)
            .env("CUSTODY_HOST_STATE", host.host_state())
            .env("COLUMNS", "160")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap(),
    );
    assert!(run.success, "{}{}", run.stdout, run.stderr);
    let screen = run.stdout.replace('\r', "\n");
    assert!(screen.contains("resuming"), "{screen}");
    assert!(screen.contains("1 files already complete"), "{screen}");
    let mib = |s: &str| -> f64 {
        let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap());
        let n: f64 = n.trim().parse().unwrap();
        n * match unit.trim() {
            "B" => 1.0 / 1048576.0,
            "KiB" => 1.0 / 1024.0,
            "MiB" => 1.0,
            "GiB" => 1024.0,
            "TiB" => 1048576.0,
            other => panic!("unit {other}"),
        }
    };
    let mut frames = 0;
    for line in screen
        .lines()
        .filter(|l| l.contains("resuming") && l.contains('/'))
    {
        // `resuming [===] 60.00 MiB/64.00 MiB 120.00 MiB/s eta 0s`
        let Some(after) = line.split(']').nth(1) else {
            continue;
        };
        let words: Vec<&str> = after.split_whitespace().collect();
        let Some(slash) = words
            .iter()
            .position(|w| w.contains('/') && !w.ends_with("/s"))
        else {
            continue;
        };
        let (done, total) = (
            format!(
                "{} {}",
                words[slash - 1],
                words[slash].split('/').next().unwrap()
            ),
            format!(
                "{} {}",
                words[slash].split('/').nth(1).unwrap(),
                words[slash + 1]
            ),
        );
        assert!(mib(&done) <= mib(&total), "past 100%: {line}");
        // Only the 4 MiB this run transfers: the 60 MiB already there, counted as received at
        // once, would inflate the rate and shorten the time left.
        assert_eq!(mib(&total), 4.0, "{line}");
        frames += 1;
    }
    assert!(frames > 0, "no progress frame:\n{screen}");
    assert_same_file(&src.path().join("b.bin"), &dest.path().join("b.bin"));
}
