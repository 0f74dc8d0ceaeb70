-- custody metadata, version 1. Times are Unix seconds. Key material appears only wrapped.
CREATE TABLE vendors (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE models (
    id          TEXT PRIMARY KEY,
    vendor_id   TEXT NOT NULL REFERENCES vendors(id),
    name        TEXT NOT NULL,
    -- the model key, wrapped under epoch key `key_epoch` of the key store
    key_epoch   BIGINT NOT NULL,
    wrapped_key BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (vendor_id, name)
);

CREATE TABLE objects (
    id          TEXT PRIMARY KEY,
    model_id    TEXT NOT NULL REFERENCES models(id),
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    stored_size BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX objects_by_model ON objects (model_id);

CREATE TABLE revisions (
    commit_id   TEXT PRIMARY KEY,
    model_id    TEXT NOT NULL REFERENCES models(id),
    seq         BIGINT NOT NULL,
    message     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (model_id, seq)
);

CREATE TABLE revision_files (
    commit_id   TEXT NOT NULL REFERENCES revisions(commit_id),
    path        TEXT NOT NULL,
    object_id   TEXT NOT NULL REFERENCES objects(id),
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (commit_id, path)
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    role        TEXT NOT NULL,
    vendor_id   TEXT REFERENCES vendors(id),
    user_name   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);

CREATE TABLE grants (
    model_id    TEXT NOT NULL REFERENCES models(id),
    user_name   TEXT NOT NULL,
    granted_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (model_id, user_name)
);

CREATE TABLE upload_sessions (
    id          TEXT PRIMARY KEY,
    model_id    TEXT NOT NULL REFERENCES models(id),
    created_by  TEXT NOT NULL,
    message     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE upload_files (
    session_id  TEXT NOT NULL REFERENCES upload_sessions(id),
    idx         BIGINT NOT NULL,
    path        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    done        BIGINT NOT NULL,
    PRIMARY KEY (session_id, idx)
);

-- The audit log: canonical entry bytes by sequence number. `audit_head` is a one-row table
-- whose update starts every state-changing transaction: it hands out the sequence number and
-- serialises writers, so entries are gap-free and in commit order.
CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY,
    entry       BLOB NOT NULL
);
CREATE TABLE audit_head (
    id          BIGINT PRIMARY KEY,
    next_seq    BIGINT NOT NULL
);
INSERT INTO audit_head (id, next_seq) VALUES (1, 0);
