-- Constraints the code always kept, now kept by the database too (issue 18): CHECK
-- constraints on enumerated columns and single-row tables, and the foreign keys that were
-- missing. The PostgreSQL twin adds the same constraints with ALTER TABLE.
--
-- SQLite cannot add a constraint to an existing table: the tables are rebuilt. A table that
-- others reference cannot be dropped while their rows point at it, and the foreign-keys pragma
-- cannot be turned off inside the migration's transaction, so: every table concerned (the
-- ones that gain a constraint and the ones that reference them) is set aside in a plain copy,
-- dropped children first, created again with its constraints parents first, and filled from
-- its copy. Foreign keys are deferred to the commit, where every row put back is checked: a
-- row that breaks a constraint fails the migration and nothing changes.

PRAGMA defer_foreign_keys = ON;

CREATE TEMP TABLE keep_token_endorsements AS SELECT * FROM token_endorsements;
CREATE TEMP TABLE keep_pending_approvals AS SELECT * FROM pending_approvals;
CREATE TEMP TABLE keep_wipe_confirmations AS SELECT * FROM wipe_confirmations;
CREATE TEMP TABLE keep_revision_files AS SELECT * FROM revision_files;
CREATE TEMP TABLE keep_host_copies AS SELECT * FROM host_copies;
CREATE TEMP TABLE keep_upload_parts AS SELECT * FROM upload_parts;
CREATE TEMP TABLE keep_upload_files AS SELECT * FROM upload_files;
CREATE TEMP TABLE keep_upload_sessions AS SELECT * FROM upload_sessions;
CREATE TEMP TABLE keep_deletions AS SELECT * FROM deletions;
CREATE TEMP TABLE keep_tokens AS SELECT * FROM tokens;
CREATE TEMP TABLE keep_pending_requests AS SELECT * FROM pending_requests;
CREATE TEMP TABLE keep_revisions AS SELECT * FROM revisions;
CREATE TEMP TABLE keep_audit_head AS SELECT * FROM audit_head;
CREATE TEMP TABLE keep_key_head AS SELECT * FROM key_head;
CREATE TEMP TABLE keep_key_epochs AS SELECT * FROM key_epochs;

DROP TABLE token_endorsements;
DROP TABLE pending_approvals;
DROP TABLE wipe_confirmations;
DROP TABLE revision_files;
DROP TABLE host_copies;
DROP TABLE upload_parts;
DROP TABLE upload_files;
DROP TABLE upload_sessions;
DROP TABLE deletions;
DROP TABLE tokens;
DROP TABLE pending_requests;
DROP TABLE revisions;
DROP TABLE audit_head;
DROP TABLE key_head;
DROP TABLE key_epochs;

CREATE TABLE audit_head (
    id          BIGINT PRIMARY KEY CONSTRAINT audit_head_single_row CHECK (id = 1),
    next_seq    BIGINT NOT NULL,
    tree_size   BIGINT NOT NULL DEFAULT 0
);
INSERT INTO audit_head (id, next_seq, tree_size)
    SELECT id, next_seq, tree_size FROM keep_audit_head;

CREATE TABLE key_head (
    id             BIGINT PRIMARY KEY CONSTRAINT key_head_single_row CHECK (id = 1),
    current_epoch  BIGINT NOT NULL,
    generation     BIGINT NOT NULL
);
INSERT INTO key_head (id, current_epoch, generation)
    SELECT id, current_epoch, generation FROM keep_key_head;

CREATE TABLE key_epochs (
    epoch         BIGINT PRIMARY KEY,
    root_kind     TEXT NOT NULL CONSTRAINT key_epochs_root_kind_known
                      CHECK (root_kind IN ('file', 'aws-kms')),
    attempt       TEXT NOT NULL,
    root          TEXT,
    wrapped_key   BLOB,
    state         TEXT NOT NULL CONSTRAINT key_epochs_state_known
                      CHECK (state IN ('creating', 'live', 'destroying', 'destroyed')),
    created_at    BIGINT NOT NULL,
    destroyed_at  BIGINT
);
INSERT INTO key_epochs (epoch, root_kind, attempt, root, wrapped_key, state, created_at,
        destroyed_at)
    SELECT epoch, root_kind, attempt, root, wrapped_key, state, created_at, destroyed_at
    FROM keep_key_epochs;

CREATE TABLE revisions (
    commit_id    TEXT PRIMARY KEY,
    model_id     TEXT NOT NULL REFERENCES models(id),
    seq          BIGINT NOT NULL,
    message      TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    derived_from TEXT REFERENCES revisions(commit_id),
    UNIQUE (model_id, seq)
);
INSERT INTO revisions (commit_id, model_id, seq, message, created_by, created_at,
        derived_from)
    SELECT commit_id, model_id, seq, message, created_by, created_at, derived_from
    FROM keep_revisions;

CREATE TABLE revision_files (
    commit_id   TEXT NOT NULL REFERENCES revisions(commit_id),
    path        TEXT NOT NULL,
    object_id   TEXT NOT NULL REFERENCES objects(id),
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (commit_id, path)
);
INSERT INTO revision_files (commit_id, path, object_id, size, sha256)
    SELECT commit_id, path, object_id, size, sha256 FROM keep_revision_files;

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    role        TEXT NOT NULL CONSTRAINT tokens_role_known
                    CHECK (role IN ('operator', 'vendor-admin', 'committer', 'auditor')),
    vendor_id   TEXT REFERENCES vendors(id),
    user_name   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    user_id     TEXT REFERENCES users(id),
    all_vendors BIGINT NOT NULL DEFAULT 1 CONSTRAINT tokens_all_vendors_flag
                    CHECK (all_vendors IN (0, 1)),
    parent_id   TEXT REFERENCES tokens(id),
    created_by  TEXT NOT NULL DEFAULT '',
    bootstrap   INTEGER NOT NULL DEFAULT 0 CHECK (bootstrap IN (0, 1))
);
INSERT INTO tokens (id, secret_hash, role, vendor_id, user_name, created_at, expires_at,
        revoked_at, user_id, all_vendors, parent_id, created_by, bootstrap)
    SELECT id, secret_hash, role, vendor_id, user_name, created_at, expires_at, revoked_at,
        user_id, all_vendors, parent_id, created_by, bootstrap
    FROM keep_tokens;
CREATE INDEX tokens_by_user ON tokens (user_id);

CREATE TABLE token_endorsements (
    token_id    TEXT NOT NULL REFERENCES tokens(id),
    vendor_id   TEXT NOT NULL REFERENCES vendors(id),
    how         TEXT NOT NULL,
    endorsed_at BIGINT NOT NULL,
    PRIMARY KEY (token_id, vendor_id)
);
INSERT INTO token_endorsements (token_id, vendor_id, how, endorsed_at)
    SELECT token_id, vendor_id, how, endorsed_at FROM keep_token_endorsements;

CREATE TABLE pending_requests (
    id               TEXT PRIMARY KEY,
    vendor_id        TEXT NOT NULL REFERENCES vendors(id),
    model_id         TEXT REFERENCES models(id),
    kind             TEXT NOT NULL CONSTRAINT pending_requests_kind_known CHECK (kind IN (
                         'grant', 'delete', 'disable-two-person', 'unexclude', 'embargo',
                         'allow-host-group', 'approve-host', 'delete-after',
                         'add-group-member', 'endorse-credential', 'budget')),
    payload          TEXT NOT NULL,
    requested_by     TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    state            TEXT NOT NULL CONSTRAINT pending_requests_state_known
                         CHECK (state IN ('pending', 'approved', 'rejected', 'cancelled')),
    decided_by       TEXT,
    decided_at       BIGINT,
    requester_id     TEXT,
    subject_id       TEXT,
    approvals_needed BIGINT NOT NULL DEFAULT 1,
    expires_at       BIGINT NOT NULL DEFAULT 0
);
INSERT INTO pending_requests (id, vendor_id, model_id, kind, payload, requested_by,
        created_at, state, decided_by, decided_at, requester_id, subject_id, approvals_needed,
        expires_at)
    SELECT id, vendor_id, model_id, kind, payload, requested_by, created_at, state, decided_by,
        decided_at, requester_id, subject_id, approvals_needed, expires_at
    FROM keep_pending_requests;
CREATE INDEX pending_by_vendor ON pending_requests (vendor_id, state);

CREATE TABLE pending_approvals (
    request_id  TEXT NOT NULL REFERENCES pending_requests(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    approver    TEXT NOT NULL,
    approved_at BIGINT NOT NULL,
    PRIMARY KEY (request_id, user_id)
);
INSERT INTO pending_approvals (request_id, user_id, approver, approved_at)
    SELECT request_id, user_id, approver, approved_at FROM keep_pending_approvals;

CREATE TABLE deletions (
    id            TEXT PRIMARY KEY,
    vendor_id     TEXT NOT NULL REFERENCES vendors(id),
    model_id      TEXT REFERENCES models(id),
    state         TEXT NOT NULL CONSTRAINT deletions_state_known CHECK (state IN (
                      'access_revoked', 'keys_destroyed', 'epoch_destroyed',
                      'objects_deleted', 'checked', 'certified')),
    requested_by  TEXT NOT NULL,
    approved_by   TEXT,
    requested_at  BIGINT NOT NULL,
    completed_at  BIGINT,
    work          TEXT NOT NULL,
    certificate   TEXT,
    attempts      BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT,
    retry_at      BIGINT
);
INSERT INTO deletions (id, vendor_id, model_id, state, requested_by, approved_by,
        requested_at, completed_at, work, certificate, attempts, last_error, retry_at)
    SELECT id, vendor_id, model_id, state, requested_by, approved_by, requested_at,
        completed_at, work, certificate, attempts, last_error, retry_at
    FROM keep_deletions;
CREATE INDEX deletions_by_state ON deletions (state);

CREATE TABLE wipe_confirmations (
    deletion_id  TEXT NOT NULL REFERENCES deletions(id),
    host_id      TEXT NOT NULL REFERENCES hosts(id),
    model_id     TEXT NOT NULL REFERENCES models(id),
    confirmed_at BIGINT NOT NULL,
    files        BIGINT NOT NULL,
    PRIMARY KEY (deletion_id, host_id, model_id)
);
INSERT INTO wipe_confirmations (deletion_id, host_id, model_id, confirmed_at, files)
    SELECT deletion_id, host_id, model_id, confirmed_at, files FROM keep_wipe_confirmations;

CREATE TABLE host_copies (
    host_id     TEXT NOT NULL REFERENCES hosts(id),
    model_id    TEXT NOT NULL REFERENCES models(id),
    commit_id   TEXT NOT NULL REFERENCES revisions(commit_id),
    path        TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    fetched_at  BIGINT NOT NULL,
    PRIMARY KEY (host_id, model_id, commit_id, path)
);
INSERT INTO host_copies (host_id, model_id, commit_id, path, bytes, fetched_at)
    SELECT host_id, model_id, commit_id, path, bytes, fetched_at FROM keep_host_copies;
CREATE INDEX host_copies_by_model ON host_copies (model_id);

CREATE TABLE upload_sessions (
    id              TEXT PRIMARY KEY,
    model_id        TEXT NOT NULL REFERENCES models(id),
    created_by      TEXT NOT NULL,
    message         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    manifest_digest TEXT NOT NULL DEFAULT '',
    derived_from    TEXT REFERENCES revisions(commit_id)
);
INSERT INTO upload_sessions (id, model_id, created_by, message, created_at, expires_at,
        manifest_digest, derived_from)
    SELECT id, model_id, created_by, message, created_at, expires_at, manifest_digest,
        derived_from
    FROM keep_upload_sessions;
CREATE INDEX upload_sessions_by_manifest ON upload_sessions (model_id, created_by, manifest_digest);
CREATE INDEX upload_sessions_by_expiry ON upload_sessions (expires_at);

CREATE TABLE upload_files (
    session_id        TEXT NOT NULL REFERENCES upload_sessions(id),
    idx               BIGINT NOT NULL,
    path              TEXT NOT NULL,
    size              BIGINT NOT NULL,
    sha256            TEXT NOT NULL,
    object_id         TEXT NOT NULL,
    done              BIGINT NOT NULL,
    header            BLOB,
    backend_upload_id TEXT,
    parts_done        BIGINT NOT NULL DEFAULT 0,
    hash_state        BLOB,
    PRIMARY KEY (session_id, idx)
);
INSERT INTO upload_files (session_id, idx, path, size, sha256, object_id, done, header,
        backend_upload_id, parts_done, hash_state)
    SELECT session_id, idx, path, size, sha256, object_id, done, header, backend_upload_id,
        parts_done, hash_state
    FROM keep_upload_files;

-- Parts of uploads that no longer exist are bookkeeping left behind, not data: dropped.
CREATE TABLE upload_parts (
    session_id  TEXT NOT NULL REFERENCES upload_sessions(id),
    idx         BIGINT NOT NULL,
    part_number BIGINT NOT NULL,
    etag        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    PRIMARY KEY (session_id, idx, part_number)
);
INSERT INTO upload_parts (session_id, idx, part_number, etag, size)
    SELECT session_id, idx, part_number, etag, size FROM keep_upload_parts
    WHERE session_id IN (SELECT id FROM upload_sessions);

DROP TABLE keep_token_endorsements;
DROP TABLE keep_pending_approvals;
DROP TABLE keep_wipe_confirmations;
DROP TABLE keep_revision_files;
DROP TABLE keep_host_copies;
DROP TABLE keep_upload_parts;
DROP TABLE keep_upload_files;
DROP TABLE keep_upload_sessions;
DROP TABLE keep_deletions;
DROP TABLE keep_tokens;
DROP TABLE keep_pending_requests;
DROP TABLE keep_revisions;
DROP TABLE keep_audit_head;
DROP TABLE keep_key_head;
DROP TABLE keep_key_epochs;
