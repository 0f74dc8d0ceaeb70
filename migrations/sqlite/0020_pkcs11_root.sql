-- A PKCS#11 token (an HSM) as the root of trust (issue 16): epochs may record root kind
-- 'pkcs11'. SQLite cannot change a CHECK constraint: key_epochs is rebuilt with the wider one
-- (no table references it).
CREATE TABLE key_epochs_new (
    epoch         BIGINT PRIMARY KEY,
    root_kind     TEXT NOT NULL CONSTRAINT key_epochs_root_kind_known
                      CHECK (root_kind IN ('file', 'aws-kms', 'pkcs11')),
    attempt       TEXT NOT NULL,
    root          TEXT,
    wrapped_key   BLOB,
    state         TEXT NOT NULL CONSTRAINT key_epochs_state_known
                      CHECK (state IN ('creating', 'live', 'destroying', 'destroyed')),
    created_at    BIGINT NOT NULL,
    destroyed_at  BIGINT
);
INSERT INTO key_epochs_new (epoch, root_kind, attempt, root, wrapped_key, state, created_at,
        destroyed_at)
    SELECT epoch, root_kind, attempt, root, wrapped_key, state, created_at, destroyed_at
    FROM key_epochs;
DROP TABLE key_epochs;
ALTER TABLE key_epochs_new RENAME TO key_epochs;
