//! The audit log's Merkle tree and checkpoints in SQL, and the group-committing appender.
//!
//! Tree: `audit_tree` holds every completed (perfect) subtree hash, level 0 being the leaf
//! hashes (RFC 9162; the algorithms live in `audit::merkle`). An append reads the right edge
//! of the tree (one node per set bit of the size), computes the new nodes in memory and
//! inserts them, in the transaction that inserts the entries: O(log n) rows read and about
//! two rows written per entry. `audit_head.tree_size` moves with them, guarded by its old
//! value, so the tree can never silently diverge from the log.
//!
//! Group commit: [`Store::record`] (refusals and reads, the most frequent entries) queues its
//! entry; whoever holds the commit lock takes everything queued, claims that many sequence
//! numbers with one `audit_head` update, writes entries and tree nodes, commits, and hands
//! each caller its sequence number. A caller returns only after the commit that holds its
//! entry (durable: SQLite runs WAL with `synchronous=FULL`). The commit lock only batches;
//! correctness comes from the database (the `audit_head` row orders every writer).
//!
//! Checkpoints are signatures over the log, derived data: saving one needs no entry of its
//! own (an entry per checkpoint would grow the log on every checkpoint).

use std::collections::HashMap;
use std::sync::Arc;

use audit::leaf::{self, Tag};
use audit::merkle::{self, Hash};
use crypto::mac::TagKey;
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::oneshot;

use crate::convert::{db_int, get_uint, uint};
use crate::{Result, Store, StoreError, corrupt};

/// Most entries in one group commit.
const MAX_BATCH: usize = 4096;
/// Rows per multi-row INSERT (SQLite allows 32766 bound values, PostgreSQL 65535).
const ROWS_PER_INSERT: usize = 500;
/// Node keys per SELECT.
const KEYS_PER_SELECT: usize = 400;

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The signed note (C2SP), exactly as signed.
    pub note: String,
    pub created_at: i64,
}

/// The vendors named by `entries`, by name: their id and, once they have one, their audit tag
/// key. Read inside the appending transaction, so a key is the one committed with the vendor.
async fn vendor_keys(
    conn: &mut AnyConnection,
    entries: &[audit::Entry],
) -> Result<HashMap<String, (String, Option<TagKey>)>> {
    let mut out = HashMap::new();
    for name in entries.iter().filter_map(|e| e.vendor.as_deref()) {
        if out.contains_key(name) {
            continue;
        }
        let row = sqlx::query("SELECT id, audit_tag_key FROM vendors WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = row {
            let key: Option<Vec<u8>> = row.try_get("audit_tag_key")?;
            let key = key
                .map(|k| TagKey::from_slice(&k))
                .transpose()
                .map_err(|_| corrupt("a vendor's audit tag key is not 32 bytes"))?;
            out.insert(name.to_owned(), (row.try_get("id")?, key));
        }
    }
    Ok(out)
}

/// Appends `entries` (their `seq` already set, the first being `first`) to the log and its
/// tree, inside the caller's transaction, which must already have claimed those numbers. Each
/// leaf carries its vendor's tag (`audit::leaf`), computed here from the key in the same
/// transaction.
pub(crate) async fn append_entries(
    conn: &mut AnyConnection,
    first: u64,
    entries: &[audit::Entry],
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    if entries
        .iter()
        .enumerate()
        .any(|(i, e)| e.seq != first + i as u64)
    {
        return Err(corrupt("audit entries to append are not numbered in order"));
    }
    let vendors = vendor_keys(conn, entries).await?;
    let rows: Vec<(Vec<u8>, Tag, Option<&str>)> = entries
        .iter()
        .map(|e| {
            let vendor = e.vendor.as_deref().and_then(|name| vendors.get(name));
            let tag = match vendor {
                Some((_, Some(key))) => leaf::vendor_tag(key, e.seq),
                _ => leaf::NO_VENDOR,
            };
            (
                e.to_canonical_bytes(),
                tag,
                vendor.map(|(id, _)| id.as_str()),
            )
        })
        .collect();
    let end = first + entries.len() as u64;
    let moved = sqlx::query("UPDATE audit_head SET tree_size = $1 WHERE id = 1 AND tree_size = $2")
        .bind(db_int(end)?)
        .bind(db_int(first)?)
        .execute(&mut *conn)
        .await?;
    if moved.rows_affected() != 1 {
        return Err(StoreError::Corrupt(format!(
            "the audit tree does not end where entry {first} goes: tree and log disagree"
        )));
    }
    let edge = edge_hashes(conn, first).await?;
    let leaves: Vec<Hash> = rows
        .iter()
        .map(|(bytes, tag, _)| leaf::entry_leaf(bytes, tag))
        .collect();
    let nodes = merkle::append_leaves(first, &edge, &leaves).map_err(corrupt)?;

    for (chunk_index, chunk) in rows.chunks(ROWS_PER_INSERT).enumerate() {
        let base = first + (chunk_index * ROWS_PER_INSERT) as u64;
        let sql = values_sql(
            "INSERT INTO audit_log (seq, entry, tag, vendor_id) VALUES ",
            chunk.len(),
            4,
        );
        let mut query = sqlx::query(&sql);
        for (i, (bytes, tag, vendor_id)) in chunk.iter().enumerate() {
            query = query
                .bind(db_int(base + i as u64)?)
                .bind(bytes.clone())
                .bind(tag.to_vec())
                .bind(vendor_id.map(str::to_owned));
        }
        query.execute(&mut *conn).await?;
    }
    for chunk in nodes.chunks(ROWS_PER_INSERT) {
        let sql = values_sql(
            "INSERT INTO audit_tree (level, idx, hash) VALUES ",
            chunk.len(),
            3,
        );
        let mut query = sqlx::query(&sql);
        for (level, index, hash) in chunk {
            query = query
                .bind(i64::from(*level))
                .bind(db_int(*index)?)
                .bind(hash.to_vec());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A row's stored vendor tag ([`leaf::NO_VENDOR`] for entries of format 1, which have none).
pub(crate) fn stored_tag(row: &sqlx::any::AnyRow) -> Result<Tag> {
    match row.try_get::<Option<Vec<u8>>, _>("tag")? {
        None => Ok(leaf::NO_VENDOR),
        Some(bytes) => Tag::try_from(bytes.as_slice())
            .map_err(|_| corrupt("an audit entry's stored tag is not 32 bytes")),
    }
}

/// `prefix ($1, $2), ($3, $4), …` for `rows` rows of `cols` values.
fn values_sql(prefix: &str, rows: usize, cols: usize) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * cols * 6);
    sql.push_str(prefix);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(r * cols + c + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// The stored hashes of `keys`; every one must exist.
async fn fetch_nodes(
    conn: &mut AnyConnection,
    keys: &[(u8, u64)],
) -> Result<HashMap<(u8, u64), Hash>> {
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut found = HashMap::with_capacity(sorted.len());
    for chunk in sorted.chunks(KEYS_PER_SELECT) {
        // `(level = $1 AND idx IN ($2, …)) OR …`, one group per level.
        let mut by_level: Vec<(u8, Vec<u64>)> = Vec::new();
        for &(level, index) in chunk {
            match by_level.last_mut() {
                Some((l, indices)) if *l == level => indices.push(index),
                _ => by_level.push((level, vec![index])),
            }
        }
        let mut sql = String::from("SELECT level, idx, hash FROM audit_tree WHERE ");
        let mut n = 0;
        for (g, (_, indices)) in by_level.iter().enumerate() {
            if g > 0 {
                sql.push_str(" OR ");
            }
            n += 1;
            sql.push_str(&format!("(level = ${n} AND idx IN ("));
            for i in 0..indices.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                sql.push_str(&format!("${n}"));
            }
            sql.push_str("))");
        }
        let mut query = sqlx::query(&sql);
        for (level, indices) in &by_level {
            query = query.bind(i64::from(*level));
            for index in indices {
                query = query.bind(db_int(*index)?);
            }
        }
        for row in query.fetch_all(&mut *conn).await? {
            let level: u8 = get_uint(&row, "level")?;
            let index: u64 = get_uint(&row, "idx")?;
            let hash: Vec<u8> = row.try_get("hash")?;
            let hash = Hash::try_from(hash.as_slice())
                .map_err(|_| corrupt("an audit tree hash is not 32 bytes"))?;
            found.insert((level, index), hash);
        }
    }
    if let Some((level, index)) = keys.iter().find(|k| !found.contains_key(k)) {
        return Err(StoreError::Corrupt(format!(
            "audit tree node missing: level {level}, index {index}"
        )));
    }
    Ok(found)
}

/// The right edge of the tree of `size` leaves (see `audit::merkle::edge_nodes`).
async fn edge_hashes(conn: &mut AnyConnection, size: u64) -> Result<Vec<Hash>> {
    let keys = merkle::edge_nodes(size);
    let found = fetch_nodes(conn, &keys).await?;
    Ok(keys.iter().filter_map(|k| found.get(k).copied()).collect())
}

/// A memory tree holding the nodes at `keys`, read from the database.
async fn memory_tree(
    conn: &mut AnyConnection,
    keys: &[(u8, u64)],
) -> Result<merkle::MemoryTreeStore> {
    let mut tree = merkle::MemoryTreeStore::new();
    for ((level, index), hash) in fetch_nodes(conn, keys).await? {
        merkle::TreeStore::put(&mut tree, level, index, hash);
    }
    Ok(tree)
}

/// Brings a log written before the tree existed (schema 0004) up to date: appends every entry
/// the tree does not cover yet. A no-op on every later start.
pub(crate) async fn backfill_tree(pool: &AnyPool) -> Result<()> {
    let mut tx = pool.begin().await?;
    // Taking the audit_head row first orders this with every writer (as AuditedTx does).
    let row = sqlx::query(
        "UPDATE audit_head SET next_seq = next_seq WHERE id = 1 RETURNING next_seq, tree_size",
    )
    .fetch_one(&mut *tx)
    .await?;
    let next: u64 = get_uint(&row, "next_seq")?;
    let mut size: u64 = get_uint(&row, "tree_size")?;
    if size > next {
        return Err(StoreError::Corrupt(format!(
            "the audit tree has {size} leaves but the log only {next} entries"
        )));
    }
    if size == next {
        return Ok(());
    }
    tracing::info!(
        from = size,
        to = next,
        "building the audit log's Merkle tree over existing entries"
    );
    while size < next {
        let to = (size + 10_000).min(next);
        let rows = sqlx::query(
            "SELECT seq, entry, tag FROM audit_log WHERE seq >= $1 AND seq < $2 ORDER BY seq",
        )
        .bind(db_int(size)?)
        .bind(db_int(to)?)
        .fetch_all(&mut *tx)
        .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let seq: u64 = get_uint(row, "seq")?;
            if seq != size + i as u64 {
                return Err(StoreError::Corrupt(format!(
                    "audit entry {} is missing",
                    size + i as u64
                )));
            }
            entries.push(leaf::entry_leaf(
                &row.try_get::<Vec<u8>, _>("entry")?,
                &stored_tag(row)?,
            ));
        }
        if entries.len() as u64 != to - size {
            return Err(StoreError::Corrupt(format!(
                "audit entries {size}..{to} are incomplete"
            )));
        }
        // Rows already exist: only the tree and its size are written.
        let edge = edge_hashes(&mut tx, size).await?;
        let nodes = merkle::append_leaves(size, &edge, &entries).map_err(corrupt)?;
        for chunk in nodes.chunks(ROWS_PER_INSERT) {
            let sql = values_sql(
                "INSERT INTO audit_tree (level, idx, hash) VALUES ",
                chunk.len(),
                3,
            );
            let mut query = sqlx::query(&sql);
            for (level, index, hash) in chunk {
                query = query
                    .bind(i64::from(*level))
                    .bind(db_int(*index)?)
                    .bind(hash.to_vec());
            }
            query.execute(&mut *tx).await?;
        }
        size = to;
    }
    sqlx::query("UPDATE audit_head SET tree_size = $1 WHERE id = 1")
        .bind(db_int(size)?)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The group-commit queue behind [`Store::record`].
#[derive(Default)]
pub(crate) struct Appender {
    queue: std::sync::Mutex<Vec<Pending>>,
    /// Held by the caller that commits a batch. Batching only: the database orders writers.
    commit: tokio::sync::Mutex<()>,
    /// Committed batches and the entries in them, for tests and the benchmark.
    batches: std::sync::atomic::AtomicU64,
    entries: std::sync::atomic::AtomicU64,
}

struct Pending {
    entry: audit::Entry,
    done: oneshot::Sender<std::result::Result<u64, String>>,
}

impl Appender {
    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // A panic while holding this lock cannot leave the queue half-changed (push/take).
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `entry` and returns its sequence number once the transaction holding it has
    /// committed, committing it (with whatever else is queued) when no one else does.
    async fn append(&self, pool: &AnyPool, entry: audit::Entry) -> Result<u64> {
        let (done, mut result) = oneshot::channel();
        self.queue().push(Pending { entry, done });
        // Whoever commits next may take this entry along: wait for that, or for the turn to
        // commit it ourselves, whichever comes first.
        let _turn = tokio::select! {
            biased;
            r = &mut result => {
                return match r {
                    Ok(r) => r.map_err(batch_failed),
                    Err(_) => Err(batch_failed("the batch holding the entry was abandoned".into())),
                };
            }
            turn = self.commit.lock() => turn,
        };
        loop {
            match result.try_recv() {
                Ok(r) => return r.map_err(batch_failed),
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(batch_failed(
                        "the batch holding the entry was abandoned".into(),
                    ));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            // A failed batch has told its callers, this one included.
            let _ = self.commit_next(pool).await;
        }
    }

    /// Takes up to [`MAX_BATCH`] queued entries, commits them and answers their callers.
    /// Call with the commit lock held. Returns how many entries it took.
    async fn commit_next(&self, pool: &AnyPool) -> std::result::Result<usize, String> {
        let batch: Vec<Pending> = {
            let mut queue = self.queue();
            let take = queue.len().min(MAX_BATCH);
            queue.drain(..take).collect()
        };
        let taken = batch.len();
        if taken == 0 {
            return Ok(0);
        }
        let (entries, senders): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.entry, p.done)).unzip();
        match commit_batch(pool, entries).await {
            Ok(first) => {
                use std::sync::atomic::Ordering::Relaxed;
                self.batches.fetch_add(1, Relaxed);
                self.entries.fetch_add(senders.len() as u64, Relaxed);
                for (i, done) in senders.into_iter().enumerate() {
                    let _ = done.send(Ok(first + i as u64));
                }
                Ok(taken)
            }
            Err(e) => {
                let message = e.to_string();
                for done in senders {
                    let _ = done.send(Err(message.clone()));
                }
                Err(message)
            }
        }
    }

    /// Waits for the batch in progress and commits everything still queued.
    async fn flush(&self, pool: &AnyPool) -> Result<()> {
        let _turn = self.commit.lock().await;
        while self.commit_next(pool).await.map_err(batch_failed)? > 0 {}
        Ok(())
    }
}

fn batch_failed(message: String) -> StoreError {
    StoreError::Db(sqlx::Error::Io(std::io::Error::other(format!(
        "appending to the audit log: {message}"
    ))))
}

/// One transaction: claims `entries.len()` sequence numbers, writes entries and tree. Returns
/// the first sequence number.
async fn commit_batch(pool: &AnyPool, mut entries: Vec<audit::Entry>) -> Result<u64> {
    let started = std::time::Instant::now();
    let n = entries.len() as u64;
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "UPDATE audit_head SET next_seq = next_seq + $1 WHERE id = 1 RETURNING next_seq",
    )
    .bind(db_int(n)?)
    .fetch_one(&mut *tx)
    .await?;
    let next: i64 = row.try_get("next_seq")?;
    let first = uint::<u64>(next, "audit_head.next_seq")?
        .checked_sub(n)
        .ok_or_else(|| corrupt("audit_head.next_seq is negative"))?;
    for (i, e) in entries.iter_mut().enumerate() {
        e.seq = first + i as u64;
    }
    append_entries(&mut tx, first, &entries).await?;
    tx.commit().await?;
    observe_append(n, started);
    Ok(first)
}

/// Counts `entries` appended by one committed transaction and how long it took from its
/// start to its commit (`server::metrics` describes and exports both).
pub(crate) fn observe_append(entries: u64, started: std::time::Instant) {
    metrics::counter!("custody_audit_entries_appended_total").increment(entries);
    metrics::histogram!("custody_audit_append_duration_seconds")
        .record(started.elapsed().as_secs_f64());
}

impl Store {
    /// Records an entry on its own (refusals and reads, which change no other state), group
    /// committed with concurrent ones. Returns its sequence number once it is durable.
    pub(crate) async fn record_grouped(&self, entry: audit::Entry) -> Result<u64> {
        let appender = Arc::clone(&self.appender);
        let pool = self.pool.clone();
        // On its own task: a caller that goes away (a dropped request) must not abandon a
        // batch that holds other callers' entries halfway.
        tokio::spawn(async move { appender.append(&pool, entry).await })
            .await
            .map_err(|e| batch_failed(e.to_string()))?
    }

    /// Commits every entry still queued for the group commit (at shutdown: a request whose
    /// client went away may have left its entry queued, on its own task).
    pub async fn flush_audit(&self) -> Result<()> {
        self.appender.flush(&self.pool).await
    }

    /// Group commits of [`Store::record`] so far through this handle (and its clones):
    /// `(transactions, entries)`.
    pub fn audit_group_commits(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.appender.batches.load(Relaxed),
            self.appender.entries.load(Relaxed),
        )
    }

    /// Number of entries in the log (= leaves in the tree).
    pub async fn audit_size(&self) -> Result<u64> {
        let row = sqlx::query("SELECT tree_size FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        get_uint::<u64>(&row, "tree_size")
    }

    /// The current tree size and root, read together.
    pub async fn audit_head(&self) -> Result<(u64, Hash)> {
        // Nodes of a committed size never change, so the size read first fixes the root.
        let size = self.audit_size().await?;
        Ok((size, self.audit_root(size).await?))
    }

    fn check_size(size: u64, log: u64) -> Result<()> {
        if size > log {
            return Err(StoreError::NotFound("audit tree of that size"));
        }
        Ok(())
    }

    /// The root of the tree of the first `size` entries.
    pub async fn audit_root(&self, size: u64) -> Result<Hash> {
        Self::check_size(size, self.audit_size().await?)?;
        let mut conn = self.pool.acquire().await?;
        let tree = memory_tree(&mut conn, &merkle::root_nodes(size)).await?;
        merkle::root(&tree, size).map_err(corrupt)
    }

    /// The stored leaf hash of entry `index` and its inclusion proof in the tree of `size`.
    pub async fn audit_inclusion_proof(&self, index: u64, size: u64) -> Result<(Hash, Vec<Hash>)> {
        Self::check_size(size, self.audit_size().await?)?;
        if index >= size {
            return Err(StoreError::NotFound("audit entry in a tree of that size"));
        }
        let mut keys = merkle::inclusion_nodes(index, size).map_err(corrupt)?;
        keys.push((0, index));
        let mut conn = self.pool.acquire().await?;
        let tree = memory_tree(&mut conn, &keys).await?;
        let proof = merkle::inclusion_proof(&tree, index, size).map_err(corrupt)?;
        let leaf =
            merkle::TreeStore::get(&tree, 0, index).ok_or_else(|| corrupt("audit leaf missing"))?;
        Ok((leaf, proof))
    }

    /// The consistency proof from the tree of `old` entries to the tree of `new`.
    pub async fn audit_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        Self::check_size(new, self.audit_size().await?)?;
        if old > new {
            return Err(StoreError::Conflict(format!(
                "old size {old} is larger than new size {new}"
            )));
        }
        let keys = merkle::consistency_nodes(old, new).map_err(corrupt)?;
        let mut conn = self.pool.acquire().await?;
        let tree = memory_tree(&mut conn, &keys).await?;
        merkle::consistency_proof(&tree, old, new).map_err(corrupt)
    }

    /// The right edge of the tree of `size` entries (`audit::merkle::edge_nodes` order): what
    /// an export starting at entry `size` carries to continue from an auditor's checkpoint.
    pub async fn audit_edge(&self, size: u64) -> Result<Vec<Hash>> {
        Self::check_size(size, self.audit_size().await?)?;
        let mut conn = self.pool.acquire().await?;
        edge_hashes(&mut conn, size).await
    }

    /// The stored leaf hashes of entries `from..to`.
    pub async fn audit_leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<Hash>> {
        let rows = sqlx::query(
            "SELECT idx, hash FROM audit_tree WHERE level = 0 AND idx >= $1 AND idx < $2 ORDER BY idx",
        )
        .bind(db_int(from)?)
        .bind(db_int(to)?)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let index: u64 = get_uint(row, "idx")?;
            if index != from + i as u64 {
                return Err(StoreError::Corrupt(format!(
                    "audit leaf {} missing",
                    from + i as u64
                )));
            }
            let hash: Vec<u8> = row.try_get("hash")?;
            out.push(
                Hash::try_from(hash.as_slice())
                    .map_err(|_| corrupt("an audit leaf hash is not 32 bytes"))?,
            );
        }
        Ok(out)
    }

    /// Keeps a signed checkpoint. Saving the same note twice is fine; another note for a size
    /// that already has one is refused.
    pub async fn save_checkpoint(&self, size: u64, root: &Hash, note: &str) -> Result<()> {
        if let Some(existing) = self.checkpoint(size).await? {
            if existing.note == note {
                return Ok(());
            }
            return Err(StoreError::Conflict(format!(
                "another checkpoint of size {size} is already stored"
            )));
        }
        sqlx::query(
            "INSERT INTO audit_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(db_int(size)?)
        .bind(root.to_vec())
        .bind(note)
        .bind(self.clock.now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored checkpoint of `size`, if any.
    pub async fn checkpoint(&self, size: u64) -> Result<Option<StoredCheckpoint>> {
        let row = sqlx::query(
            "SELECT size, root, note, created_at FROM audit_checkpoints WHERE size = $1",
        )
        .bind(db_int(size)?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    /// The largest stored checkpoint.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        let row = sqlx::query(
            "SELECT size, root, note, created_at FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    /// Stored checkpoints with `from <= size <= to`, smallest first, at most `limit`.
    pub async fn checkpoints(
        &self,
        from: u64,
        to: u64,
        limit: u64,
    ) -> Result<Vec<StoredCheckpoint>> {
        let rows = sqlx::query(
            "SELECT size, root, note, created_at FROM audit_checkpoints \
             WHERE size >= $1 AND size <= $2 ORDER BY size LIMIT $3",
        )
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::try_from(to).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }
}

fn checkpoint_from_row(r: &sqlx::any::AnyRow) -> Result<StoredCheckpoint> {
    let root: Vec<u8> = r.try_get("root")?;
    Ok(StoredCheckpoint {
        size: get_uint::<u64>(r, "size")?,
        root: Hash::try_from(root.as_slice())
            .map_err(|_| corrupt("a checkpoint root is not 32 bytes"))?,
        note: r.try_get("note")?,
        created_at: r.try_get("created_at")?,
    })
}
