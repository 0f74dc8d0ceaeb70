-- Witnesses of the audit log (C2SP tlog-witness, issue 14 part 3).
--
-- `audit_cosignatures`: each witness's cosignature line (C2SP tlog-cosignature) on a signed
-- checkpoint, by tree size and witness (its verifier key, `name+keyid+key`). Derived evidence
-- like the checkpoints themselves: the line verifies on its own, so no audit entry is written
-- for it. Exports and certificates append these lines to the checkpoint's note.
CREATE TABLE audit_cosignatures (
    size        BIGINT NOT NULL,
    witness     TEXT NOT NULL,
    line        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (size, witness)
);

-- Per witness: the tree size it last cosigned (the `old` size of the next add-checkpoint, and
-- where its consistency proof starts), and why the last submission failed, if it did.
CREATE TABLE audit_witnesses (
    witness        TEXT PRIMARY KEY,
    cosigned_size  BIGINT NOT NULL,
    last_error     TEXT,
    updated_at     BIGINT NOT NULL
);
