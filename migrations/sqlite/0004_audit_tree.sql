-- The audit log's Merkle tree (RFC 9162) and its signed checkpoints (issue 5).
--
-- `audit_tree` holds the hash of every *completed* (perfect) subtree: node (level, idx) covers
-- leaves [idx * 2^level, (idx + 1) * 2^level); level 0 holds the leaf hashes. Completed
-- subtrees never change, so rows are only ever inserted, in the same transaction as the
-- entries they cover. `audit_head.tree_size` is the number of leaves in the tree; it always
-- equals `next_seq` after a commit (an installation upgraded from an older schema is
-- backfilled from `audit_log` when the store opens).
CREATE TABLE audit_tree (
    level       BIGINT NOT NULL,
    idx         BIGINT NOT NULL,
    hash        BLOB NOT NULL,
    PRIMARY KEY (level, idx)
);
ALTER TABLE audit_head ADD COLUMN tree_size BIGINT NOT NULL DEFAULT 0;

-- Signed checkpoints (C2SP signed notes), by tree size. A copy of the last one signed is also
-- kept outside the database, in the key store: a restored database cannot roll it back.
CREATE TABLE audit_checkpoints (
    size        BIGINT PRIMARY KEY,
    root        BLOB NOT NULL,
    note        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
