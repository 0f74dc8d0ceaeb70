//! The two migration folders define one schema (migrations/README.md): applied to real
//! databases, SQLite and a throwaway PostgreSQL cluster, they make the same tables with the
//! same columns and the same constraints (primary keys, foreign keys, CHECKs), and the folders
//! hold the same file names. A database whose rows break a constraint a migration adds refuses
//! to start and is left as it was.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
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

fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 command is needed by this test (tests/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sqlite_columns(db: &Path) -> BTreeSet<String> {
    columns(&sqlite3(
        db,
        "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY 1, 2",
    ))
}

/// The columns of `table` that a CHECK expression names (as whole identifiers).
fn checked_columns(table: &str, expression: &str, columns: &BTreeSet<String>) -> Vec<String> {
    let words: BTreeSet<&str> = expression
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    columns
        .iter()
        .filter_map(|c| c.strip_prefix(&format!("{table}.")))
        .filter(|c| words.contains(c))
        .map(|c| format!("check {table}.{c}"))
        .collect()
}

/// The CHECK expressions in a CREATE TABLE statement: the text inside each `CHECK (...)`.
fn check_expressions(create: &str) -> Vec<String> {
    let mut found = Vec::new();
    let upper = create.to_ascii_uppercase();
    let mut from = 0;
    while let Some(at) = upper[from..].find("CHECK") {
        let start = from + at + "CHECK".len();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        // A word of its own: not the CHECK in "audit_checkpoints".
        if word(upper[..from + at].chars().next_back()) || word(upper[start..].chars().next()) {
            from = start;
            continue;
        }
        let Some(open) = create[start..].find('(').map(|i| start + i) else {
            break;
        };
        let mut depth = 0;
        let mut end = open;
        for (i, c) in create[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = open + i;
                break;
            }
        }
        found.push(create[open + 1..end].to_owned());
        from = end;
    }
    found
}

/// Primary keys, foreign keys and CHECKs, as `pk t.c`, `fk t.c -> r.c` and `check t.c`.
fn sqlite_constraints(db: &Path, columns: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let tables = "m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name != '_sqlx_migrations'";
    for row in sqlite3(
        db,
        &format!(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE {tables} AND p.pk > 0"
        ),
    )
    .lines()
    {
        out.insert(format!("pk {}", row.replacen('|', ".", 1)));
    }
    for row in sqlite3(
        db,
        &format!(
            "SELECT m.name, f.\"from\", f.\"table\", f.\"to\" \
             FROM sqlite_master m, pragma_foreign_key_list(m.name) f WHERE {tables}"
        ),
    )
    .lines()
    {
        let f: Vec<&str> = row.split('|').collect();
        out.insert(format!("fk {}.{} -> {}.{}", f[0], f[1], f[2], f[3]));
    }
    // One statement per table; its text may span lines, so each is read separately.
    for table in sqlite3(
        db,
        &format!("SELECT m.name FROM sqlite_master m WHERE {tables}"),
    )
    .lines()
    {
        let create = sqlite3(
            db,
            &format!("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '{table}'"),
        );
        for expression in check_expressions(&create) {
            out.extend(checked_columns(table, &expression, columns));
        }
    }
    out
}

fn postgres_constraints(
    cluster: &testkit::PgCluster,
    db: &str,
    columns: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let rows = cluster
        .psql(
            db,
            "SELECT c.conrelid::regclass, a.attname FROM pg_constraint c \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) \
             WHERE c.contype = 'p' AND c.connamespace = 'public'::regnamespace \
             AND c.conrelid::regclass::text != '_sqlx_migrations'",
        )
        .unwrap();
    for row in rows.lines().filter(|l| !l.is_empty()) {
        out.insert(format!("pk {}", row.replacen('|', ".", 1)));
    }
    let rows = cluster
        .psql(
            db,
            "SELECT c.conrelid::regclass, a.attname, c.confrelid::regclass, r.attname \
             FROM pg_constraint c \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
             JOIN pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = c.confkey[1] \
             WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace",
        )
        .unwrap();
    for row in rows.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = row.split('|').collect();
        out.insert(format!("fk {}.{} -> {}.{}", f[0], f[1], f[2], f[3]));
    }
    let rows = cluster
        .psql(
            db,
            "SELECT c.conrelid::regclass, pg_get_constraintdef(c.oid) FROM pg_constraint c \
             WHERE c.contype = 'c' AND c.connamespace = 'public'::regnamespace",
        )
        .unwrap();
    let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows.lines().filter(|l| !l.is_empty()) {
        let (table, definition) = row.split_once('|').unwrap();
        by_table
            .entry(table.to_owned())
            .or_default()
            .push(definition.to_owned());
    }
    for (table, definitions) in by_table {
        for definition in definitions {
            out.extend(checked_columns(&table, &definition, columns));
        }
    }
    out
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
async fn sqlite_and_postgres_migrations_make_the_same_tables_columns_and_constraints() {
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

    let constraints_sqlite = sqlite_constraints(&db, &on_sqlite);
    let constraints_postgres = postgres_constraints(cluster, name, &on_postgres);
    // What issue 18 added must be there, so the comparison below compares something.
    for expected in [
        "check tokens.role",
        "check audit_head.id",
        "check key_head.id",
        "check deletions.state",
        "check pending_requests.state",
        "fk wipe_confirmations.deletion_id -> deletions.id",
        "fk upload_parts.session_id -> upload_sessions.id",
        "pk revision_files.path",
    ] {
        assert!(
            constraints_sqlite.contains(expected),
            "{expected} missing: {constraints_sqlite:?}"
        );
    }
    let only_sqlite: Vec<_> = constraints_sqlite
        .difference(&constraints_postgres)
        .collect();
    let only_postgres: Vec<_> = constraints_postgres
        .difference(&constraints_sqlite)
        .collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the constraints drifted: only in SQLite {only_sqlite:?}, only in PostgreSQL {only_postgres:?}"
    );
}

/// A database of either dialect migrated up to (not including) migration `upto`, as an
/// installation of an earlier version has it.
async fn database_before(upto: u32, dialect: &str, url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    for name in file_names(dialect) {
        let number: u32 = name[..4].parse().unwrap();
        if number < upto {
            std::fs::copy(
                Path::new(ROOT).join(dialect).join(&name),
                dir.path().join(&name),
            )
            .unwrap();
        }
    }
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(dir.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool
}

/// Rows of every table migration 0017 rebuilds, each pointing where its new constraints say
/// it must, plus one upload part whose upload is gone (bookkeeping the migration drops).
const ROWS_BEFORE_0017: &[&str] = &[
    "INSERT INTO users (id, name, created_by, created_at) VALUES ('u1', 'alice', 'op', 0)",
    "INSERT INTO vendors (id, name, created_at) VALUES ('v1', 'acme', 0)",
    "INSERT INTO models (id, vendor_id, name, key_epoch, wrapped_key, created_at) \
     VALUES ('m1', 'v1', 'llama', 1, $1, 0)",
    "INSERT INTO objects (id, model_id, size, sha256, stored_size, created_at) \
     VALUES ('o1', 'm1', 1, 'x', 1, 0)",
    "INSERT INTO revisions (commit_id, model_id, seq, message, created_by, created_at) \
     VALUES ('r1', 'm1', 1, 'first', 'x', 0)",
    "INSERT INTO revisions (commit_id, model_id, seq, message, created_by, created_at, \
     derived_from) VALUES ('r2', 'm1', 2, 'derived', 'x', 0, 'r1')",
    "INSERT INTO revision_files (commit_id, path, object_id, size, sha256) \
     VALUES ('r1', 'config.json', 'o1', 1, 'x')",
    "INSERT INTO tokens (id, secret_hash, role, user_name, created_at) \
     VALUES ('t1', $1, 'operator', 'op', 0)",
    "INSERT INTO tokens (id, secret_hash, role, user_name, created_at, user_id, parent_id) \
     VALUES ('t2', $1, 'committer', 'alice', 0, 'u1', 't1')",
    "INSERT INTO token_endorsements (token_id, vendor_id, how, endorsed_at) \
     VALUES ('t2', 'v1', 'admin', 0)",
    "INSERT INTO pending_requests (id, vendor_id, model_id, kind, payload, requested_by, \
     created_at, state) VALUES ('p1', 'v1', 'm1', 'grant', '{}', 'x', 0, 'pending')",
    "INSERT INTO pending_approvals (request_id, user_id, approver, approved_at) \
     VALUES ('p1', 'u1', 'alice', 0)",
    "INSERT INTO hosts (id, name, host_group, cert_sha256, not_after, enrolled_by, created_at) \
     VALUES ('h1', 'gpu-01', 'default', 'c', 0, 'op', 0)",
    "INSERT INTO deletions (id, vendor_id, model_id, state, requested_by, requested_at, work) \
     VALUES ('d1', 'v1', 'm1', 'certified', 'x', 0, '{}')",
    "INSERT INTO wipe_confirmations (deletion_id, host_id, model_id, confirmed_at, files) \
     VALUES ('d1', 'h1', 'm1', 0, 1)",
    "INSERT INTO host_copies (host_id, model_id, commit_id, path, bytes, fetched_at) \
     VALUES ('h1', 'm1', 'r1', 'config.json', 1, 0)",
    "INSERT INTO upload_sessions (id, model_id, created_by, message, created_at, expires_at, \
     derived_from) VALUES ('s1', 'm1', 'x', 'm', 0, 9, 'r1')",
    "INSERT INTO upload_files (session_id, idx, path, size, sha256, object_id, done) \
     VALUES ('s1', 0, 'a', 1, 'x', 'o9', 0)",
    "INSERT INTO upload_parts (session_id, idx, part_number, etag, size) \
     VALUES ('s1', 0, 1, 'e', 1)",
    "INSERT INTO upload_parts (session_id, idx, part_number, etag, size) \
     VALUES ('gone', 0, 1, 'e', 1)",
    "INSERT INTO key_epochs (epoch, root_kind, attempt, root, wrapped_key, state, created_at) \
     VALUES (1, 'file', 'a', 'root-1', $1, 'live', 0)",
];

/// Rows per table after the upgrade (the orphaned upload part dropped).
const COUNTS_AFTER_0017: &[(&str, i64)] = &[
    ("revisions", 2),
    ("revision_files", 1),
    ("tokens", 2),
    ("token_endorsements", 1),
    ("pending_requests", 1),
    ("pending_approvals", 1),
    ("deletions", 1),
    ("wipe_confirmations", 1),
    ("host_copies", 1),
    ("upload_sessions", 1),
    ("upload_files", 1),
    ("upload_parts", 1),
    ("key_epochs", 1),
    ("audit_head", 1),
    ("key_head", 1),
];

async fn fill(pool: &sqlx::AnyPool, extra: Option<&str>) {
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(pool)
        .await
        .ok();
    for sql in ROWS_BEFORE_0017.iter().copied().chain(extra) {
        let query = sqlx::query(sql);
        let query = if sql.contains("$1") {
            query.bind(vec![7u8; 8])
        } else {
            query
        };
        query
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .try_get::<i64, _>(0)
        .unwrap()
}

/// An installation of the previous version, with rows in every table the constraints
/// migration rebuilds, upgrades with every row kept; the same installation with one row that
/// breaks a new constraint refuses to start, says why, and is left exactly as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_to_the_constraints_keeps_every_row_or_changes_nothing() {
    let cluster = testkit::PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    for (dialect, bad) in [
        ("sqlite", None),
        ("sqlite", Some("role")),
        ("sqlite", Some("orphan")),
        ("postgres", None),
        ("postgres", Some("role")),
        ("postgres", Some("orphan")),
    ] {
        let url = match dialect {
            "sqlite" => format!(
                "sqlite://{}?mode=rwc",
                dir.path().join(format!("{bad:?}.db")).display()
            ),
            _ => cluster.fresh_database().unwrap(),
        };
        let pool = database_before(17, dialect, &url).await;
        let extra = match bad {
            None => None,
            Some("role") => Some(
                "INSERT INTO tokens (id, secret_hash, role, user_name, created_at) \
                 VALUES ('t9', $1, 'root', 'mallory', 0)",
            ),
            _ => Some(
                "INSERT INTO host_copies (host_id, model_id, commit_id, path, bytes, \
                 fetched_at) VALUES ('h1', 'm1', 'no-such-revision', 'a', 1, 0)",
            ),
        };
        fill(&pool, extra).await;
        drop(pool);
        let opened = Store::connect(&url).await;
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        let applied = count(
            &pool,
            "SELECT count(*) FROM _sqlx_migrations WHERE version = 17",
        )
        .await;
        match bad {
            None => {
                assert!(opened.is_ok(), "{dialect}: {:?}", opened.err());
                assert_eq!(applied, 1, "{dialect}");
                for (table, n) in COUNTS_AFTER_0017 {
                    let found = count(&pool, &format!("SELECT count(*) FROM {table}")).await;
                    assert_eq!(found, *n, "{dialect}: rows of {table}");
                }
                // The constraints hold from now on.
                let refused = sqlx::query("UPDATE tokens SET role = 'root' WHERE id = 't1'")
                    .execute(&pool)
                    .await;
                assert!(refused.is_err(), "{dialect}: an unknown role was stored");
            }
            Some(what) => {
                let err = opened.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    err.contains("migration") && err.to_lowercase().contains("constraint"),
                    "{dialect}, {what}: {err}"
                );
                assert_eq!(applied, 0, "{dialect}, {what}: recorded as applied");
                assert_eq!(
                    count(&pool, "SELECT count(*) FROM upload_parts").await,
                    2,
                    "{dialect}, {what}: rows changed"
                );
                assert_eq!(
                    count(&pool, "SELECT count(*) FROM tokens").await,
                    if what == "role" { 3 } else { 2 },
                    "{dialect}, {what}"
                );
            }
        }
    }
}
