-- Deletion (issue 6): the persisted shred state machine, the copies exclusive hosts hold, and
-- their wipe confirmations. A model under deletion keeps its row (names stay visible to its
-- vendor and auditors) but answers "deleted" from the first step on.

ALTER TABLE models ADD COLUMN delete_after BIGINT;
ALTER TABLE models ADD COLUMN deleted_at BIGINT;
ALTER TABLE models ADD COLUMN deletion_id TEXT;

-- A revision made by a committer from another revision's weights (converted, quantized,
-- test logs): encrypted under the same model key, shredded with it.
ALTER TABLE revisions ADD COLUMN derived_from TEXT;

-- One deletion request and its progress. `state` moves forward only:
-- requested -> access_revoked -> keys_destroyed -> epoch_destroyed -> objects_deleted
-- -> checked -> certified. `work` holds what later steps need (JSON: objects, epochs).
CREATE TABLE deletions (
    id            TEXT PRIMARY KEY,
    vendor_id     TEXT NOT NULL REFERENCES vendors(id),
    model_id      TEXT,
    state         TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    approved_by   TEXT,
    requested_at  BIGINT NOT NULL,
    completed_at  BIGINT,
    work          TEXT NOT NULL,
    certificate   TEXT
);
CREATE INDEX deletions_by_state ON deletions (state);

-- Which exclusive host received which file (recorded with each fetch).
CREATE TABLE host_copies (
    host_name   TEXT NOT NULL,
    model_id    TEXT NOT NULL,
    commit_id   TEXT NOT NULL,
    path        TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    fetched_at  BIGINT NOT NULL,
    PRIMARY KEY (host_name, model_id, commit_id, path)
);
CREATE INDEX host_copies_by_model ON host_copies (model_id);

-- A host's confirmation that it deleted its local copies of a shredded model.
CREATE TABLE wipe_confirmations (
    deletion_id  TEXT NOT NULL,
    host_name    TEXT NOT NULL,
    model_id     TEXT NOT NULL,
    confirmed_at BIGINT NOT NULL,
    files        BIGINT NOT NULL,
    PRIMARY KEY (deletion_id, host_name, model_id)
);
