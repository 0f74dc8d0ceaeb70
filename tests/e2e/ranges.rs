//! Byte ranges of a file: exactly the slices of the original, only the covering segments read.

use rand::{Rng, SeedableRng};

use crate::support::*;

const SEG: u64 = 1 << 20;

fn setup(size: u64) -> (World, tempfile::TempDir, Vec<u8>, String) {
    let world = World::new();
    let src = tempfile::tempdir().unwrap();
    write_data(&src.path().join("w.bin"), size, 21);
    world.upload(src.path(), "acme/ranged");
    world
        .server
        .ok(&world.admin, &["grant", "acme/ranged", "--to", "alice"]);
    let original = std::fs::read(src.path().join("w.bin")).unwrap();
    let path = "/v1/models/acme/ranged/revisions/main/files/w.bin".to_owned();
    (world, src, original, path)
}

#[test]
fn random_ranges_equal_the_same_slices_of_the_original() {
    let size = 5 * SEG + 777;
    let (world, _src, original, path) = setup(size);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut cases: Vec<(String, u64, u64)> = vec![
        (
            format!("bytes={}-{}", SEG - 10, SEG + 10),
            SEG - 10,
            SEG + 11,
        ),
        (format!("bytes={}-", 5 * SEG + 100), 5 * SEG + 100, size),
        ("bytes=-777".into(), size - 777, size),
        ("bytes=-100000000".into(), 0, size),
        (format!("bytes=0-{}", size + 50), 0, size),
        ("bytes=0-0".into(), 0, 1),
        (format!("bytes={}-{}", size - 1, size - 1), size - 1, size),
    ];
    for _ in 0..40 {
        let a = rng.gen_range(0..size);
        let b = rng.gen_range(a..size);
        cases.push((format!("bytes={a}-{b}"), a, b + 1));
    }
    for (header, start, end) in cases {
        let (status, content_range, body) =
            world.server.get_range(&world.alice, &path, Some(&header));
        assert_eq!(status, 206, "{header}");
        assert_eq!(
            content_range.unwrap(),
            format!("bytes {start}-{}/{size}", end - 1)
        );
        let body = body.unwrap();
        assert!(
            body == original[start as usize..end as usize],
            "{header}: wrong bytes"
        );
    }

    for unsatisfiable in [format!("bytes={size}-"), "bytes=-0".to_owned()] {
        let (status, content_range, _) =
            world
                .server
                .get_range(&world.alice, &path, Some(&unsatisfiable));
        assert_eq!(status, 416, "{unsatisfiable}");
        assert_eq!(content_range.unwrap(), format!("bytes */{size}"));
    }
    // Without a range, or with one we do not serve, the whole file.
    for header in [None, Some("bytes=0-1,5-9")] {
        let (status, _, body) = world.server.get_range(&world.alice, &path, header);
        assert_eq!(status, 200);
        assert!(body.unwrap() == original);
    }
}

#[test]
fn a_corrupted_segment_fails_only_the_ranges_that_cover_it() {
    let size = 5 * SEG + 3;
    let (world, _src, original, path) = setup(size);
    let object = stored_objects(&world.server).pop().unwrap();
    // Damage segment 2.
    let mut stored = std::fs::read(&object).unwrap();
    stored[40 + 2 * (SEG as usize + 16) + 500] ^= 0x80;
    std::fs::write(&object, stored).unwrap();

    // Ranges that avoid segment 2 are served and correct.
    for (start, end) in [(0, 2 * SEG), (3 * SEG, size), (SEG + 5, 2 * SEG - 5)] {
        let header = format!("bytes={start}-{}", end - 1);
        let (status, _, body) = world.server.get_range(&world.alice, &path, Some(&header));
        assert_eq!(status, 206, "{header}");
        assert!(body.unwrap() == original[start as usize..end as usize]);
    }
    // A range that starts in it is refused with an integrity error.
    let (status, _, body) = world.server.get_range(
        &world.alice,
        &path,
        Some(&format!("bytes={}-{}", 2 * SEG + 10, 3 * SEG)),
    );
    assert_eq!(status, 500);
    let body: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "integrity_error");
    // A range that reaches it is cut off before the damaged bytes.
    let (status, _, body) = world.server.get_range(
        &world.alice,
        &path,
        Some(&format!("bytes={}-{}", SEG, 3 * SEG)),
    );
    assert_eq!(status, 206);
    assert!(body.is_err(), "a range over damaged data came back whole");
}
