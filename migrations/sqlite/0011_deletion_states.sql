-- Deletion that proves what it says (issue 13): the state column admits only the shred state
-- machine's states (store::DeletionState), and the work record carries a version.
--
-- SQLite cannot add a CHECK constraint to an existing table: the table is rebuilt (nothing
-- references it, so no foreign key is in the way).

CREATE TABLE deletions_checked (
    id            TEXT PRIMARY KEY,
    vendor_id     TEXT NOT NULL REFERENCES vendors(id),
    model_id      TEXT,
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
INSERT INTO deletions_checked (id, vendor_id, model_id, state, requested_by, approved_by,
        requested_at, completed_at, work, certificate, attempts, last_error, retry_at)
    SELECT id, vendor_id, model_id, state, requested_by, approved_by, requested_at,
        completed_at, work, certificate, attempts, last_error, retry_at
    FROM deletions;
DROP TABLE deletions;
ALTER TABLE deletions_checked RENAME TO deletions;
CREATE INDEX deletions_by_state ON deletions (state);

-- Work records written before versions existed become version 1: the root's destruction,
-- a sentence until now, becomes a record (kind, id, epoch, KMS deletion date).
UPDATE deletions SET work = json_set(work, '$.version', 1);
UPDATE deletions SET work = json_remove(json_set(work, '$.root_destroyed', json_object(
        'kind', json_extract(work, '$.root_kind'),
        'id', coalesce(json_extract(work, '$.root'),
                       'root-' || json_extract(work, '$.from_epoch')),
        'epoch', json_extract(work, '$.from_epoch'),
        'deletion_date', CASE
            WHEN json_extract(work, '$.root_destruction')
                 LIKE 'KMS key scheduled for deletion on %;%'
            THEN substr(json_extract(work, '$.root_destruction'), 35,
                        instr(json_extract(work, '$.root_destruction'), ';') - 35)
            ELSE NULL END)), '$.root_destruction')
    WHERE json_type(work, '$.root_destruction') = 'text';
