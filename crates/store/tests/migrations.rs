//! The two migration folders define one schema (migrations/README.md): applied to real
//! databases, SQLite and a throwaway PostgreSQL cluster, they make the same tables with the
//! same columns, and the folders hold the same file names.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use store::Store;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");

/// `table.column` of every table the migrations made, sqlx's own bookkeeping left out.
fn columns(rows: &str) -> BTreeSet<String> {
    rows.lines()
        .filter(|l| !l.is_empty() && !l.starts_with("_sqlx_migrations|"))
        .map(|l| l.replacen('|', ".", 1))
        .collect()
}

fn sqlite_columns(db: &Path) -> BTreeSet<String> {
    let out = Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(db)
        .arg(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY 1, 2",
        )
        .output()
        .expect("the sqlite3 command is needed by this test (tests/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    columns(&String::from_utf8(out.stdout).unwrap())
}

fn file_names(dialect: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(ROOT).join(dialect))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn both_folders_hold_the_same_migrations_each_number_once() {
    let sqlite = file_names("sqlite");
    assert_eq!(sqlite, file_names("postgres"));
    let mut numbers = BTreeSet::new();
    for name in &sqlite {
        let (number, rest) = name
            .split_once('_')
            .unwrap_or_else(|| panic!("{name}: NNNN_name.sql"));
        assert!(
            number.len() == 4 && number.bytes().all(|b| b.is_ascii_digit()),
            "{name}"
        );
        assert!(rest.ends_with(".sql"), "{name}");
        assert!(
            numbers.insert(number.to_owned()),
            "number {number} used twice"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_postgres_migrations_make_the_same_tables_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    drop(
        Store::connect(&format!("sqlite://{}?mode=rwc", db.display()))
            .await
            .unwrap(),
    );
    let on_sqlite = sqlite_columns(&db);

    let cluster = testkit::PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.fresh_database().unwrap();
    drop(Store::connect(&url).await.unwrap());
    let name = url.rsplit('/').next().unwrap();
    let rows = cluster
        .psql(
            name,
            "SELECT table_name, column_name FROM information_schema.columns \
             WHERE table_schema = 'public' ORDER BY 1, 2",
        )
        .unwrap();
    let on_postgres = columns(&rows);

    assert!(on_sqlite.len() > 50, "too few columns read: {on_sqlite:?}");
    let only_sqlite: Vec<_> = on_sqlite.difference(&on_postgres).collect();
    let only_postgres: Vec<_> = on_postgres.difference(&on_sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the schemas drifted: only in SQLite {only_sqlite:?}, only in PostgreSQL {only_postgres:?}"
    );
}
