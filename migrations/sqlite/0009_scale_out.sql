-- Scale-out (issue 12): the key hierarchy's epoch ledger, leases for singleton work, the
-- service identity's pinned fingerprints, and retries of failing deletions (issue 11).

-- The current key epoch, and a generation that every ledger change increments: instances
-- compare it before each use of the epoch keys they hold in memory. Model-key commits read
-- this row FOR SHARE, a rotation's commit takes it FOR UPDATE.
CREATE TABLE key_head (
    id             BIGINT PRIMARY KEY,
    current_epoch  BIGINT NOT NULL,
    generation     BIGINT NOT NULL
);
INSERT INTO key_head (id, current_epoch, generation) VALUES (1, 0, 0);

-- One row per key epoch: its root (a root key file name or a KMS key ARN, never a secret) and
-- its key wrapped under that root. state: creating -> live -> destroying -> destroyed.
CREATE TABLE key_epochs (
    epoch         BIGINT PRIMARY KEY,
    root_kind     TEXT NOT NULL,
    attempt       TEXT NOT NULL,
    root          TEXT,
    wrapped_key   BLOB,
    state         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    destroyed_at  BIGINT
);

-- Singleton work (deletion runner and scheduler, checkpointer, upload sweep): one holder at a
-- time, timed by the database's clock (milliseconds); every takeover increments the token
-- that the holder's writes are fenced with.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- The service identity every instance must share, pinned at first start: SHA-256
-- fingerprints of the TLS certificate, the host CA, the audit log key and the service key.
CREATE TABLE service_identity (
    kind         TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    pinned_at    BIGINT NOT NULL
);

-- A failing deletion is retried with backoff, and says why in its status.
ALTER TABLE deletions ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deletions ADD COLUMN last_error TEXT;
ALTER TABLE deletions ADD COLUMN retry_at BIGINT;
