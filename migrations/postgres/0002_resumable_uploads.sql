-- Resumable uploads: each file of a session is one multipart upload at the storage backend,
-- stored part by part. `header` fixes the object's salt and nonce prefix for the session's
-- lifetime (public values); `parts_done` is the count of leading parts durably stored and
-- `hash_state` the SHA-256 state of the plaintext up to there, so a new process can continue
-- the same stream.
ALTER TABLE upload_sessions ADD COLUMN manifest_digest TEXT NOT NULL DEFAULT '';
CREATE INDEX upload_sessions_by_manifest ON upload_sessions (model_id, created_by, manifest_digest);
CREATE INDEX upload_sessions_by_expiry ON upload_sessions (expires_at);

ALTER TABLE upload_files ADD COLUMN header BYTEA;
ALTER TABLE upload_files ADD COLUMN backend_upload_id TEXT;
ALTER TABLE upload_files ADD COLUMN parts_done BIGINT NOT NULL DEFAULT 0;
ALTER TABLE upload_files ADD COLUMN hash_state BYTEA;

CREATE TABLE upload_parts (
    session_id  TEXT NOT NULL,
    idx         BIGINT NOT NULL,
    part_number BIGINT NOT NULL,
    etag        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    PRIMARY KEY (session_id, idx, part_number)
);
