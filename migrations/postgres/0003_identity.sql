-- Identity and access data (issue 4): groups, expiring and group grants, exclusions, embargo
-- windows, exclusive hosts and the host groups a model allows, and the two-person rule.
-- All of it is data the policy engine reads per request; none of it is policy.

ALTER TABLE grants ADD COLUMN expires_at BIGINT;

CREATE TABLE group_members (
    group_name  TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    added_by    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (group_name, user_name)
);
CREATE INDEX group_members_by_user ON group_members (user_name);

CREATE TABLE group_grants (
    model_id    TEXT NOT NULL REFERENCES models(id),
    group_name  TEXT NOT NULL,
    granted_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    PRIMARY KEY (model_id, group_name)
);

-- model_id '' means every model of the vendor.
CREATE TABLE exclusions (
    vendor_id   TEXT NOT NULL REFERENCES vendors(id),
    model_id    TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (vendor_id, model_id, user_name)
);

ALTER TABLE models ADD COLUMN not_before BIGINT;
ALTER TABLE models ADD COLUMN not_after BIGINT;

CREATE TABLE model_host_groups (
    model_id    TEXT NOT NULL REFERENCES models(id),
    host_group  TEXT NOT NULL,
    added_by    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (model_id, host_group)
);

-- An enrolled exclusive server. `cert_sha256` identifies the certificate it presents; a
-- re-enrolled host gets a new certificate and the old one stops matching.
CREATE TABLE hosts (
    name        TEXT PRIMARY KEY,
    host_group  TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL UNIQUE,
    not_after   BIGINT NOT NULL,
    enrolled_by TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- Two-person rule: when set, grants and deletion requests wait for a second vendor admin.
ALTER TABLE vendors ADD COLUMN require_approval BIGINT NOT NULL DEFAULT 0;

CREATE TABLE pending_requests (
    id           TEXT PRIMARY KEY,
    vendor_id    TEXT NOT NULL REFERENCES vendors(id),
    model_id     TEXT,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    state        TEXT NOT NULL,
    decided_by   TEXT,
    decided_at   BIGINT
);
CREATE INDEX pending_by_vendor ON pending_requests (vendor_id, state);
