-- Vendor-held trust (issue 11): once a vendor has its first admin, only its admins widen
-- access to its weights.
--
-- * People are records with ids that are never reused; a token belongs to a user. A token the
--   operator issues for a user who already exists (or a vendor-scoped role token once the
--   vendor has an admin) counts for a vendor's models only once that vendor endorses it.
-- * Groups belong to a vendor and only its admins change them.
-- * A host receives a vendor's bytes only once that vendor approved its enrollment; an
--   enrollment is a row that is never reused (a re-enrolled name is a new row).
-- * Pending requests need approvals from distinct people, and expire.
-- * Copies and wipe confirmations belong to an enrollment, not a name.
-- * Git blob ids of small files are computed at upload, so no key of a deleted model is
--   unwrapped to describe it.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
INSERT INTO users (id, name, created_by, created_at)
    SELECT lower(hex(randomblob(8))), user_name, 'migration', MIN(created_at)
    FROM tokens GROUP BY user_name;

ALTER TABLE tokens ADD COLUMN user_id TEXT REFERENCES users(id);
UPDATE tokens SET user_id = (SELECT u.id FROM users u WHERE u.name = tokens.user_name);
-- 1: the token counts for every vendor (a user's first credential, or one rotated from such);
-- 0: only for the vendors in token_endorsements.
ALTER TABLE tokens ADD COLUMN all_vendors BIGINT NOT NULL DEFAULT 1;
ALTER TABLE tokens ADD COLUMN parent_id TEXT;
ALTER TABLE tokens ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
CREATE INDEX tokens_by_user ON tokens (user_id);

CREATE TABLE token_endorsements (
    token_id    TEXT NOT NULL REFERENCES tokens(id),
    vendor_id   TEXT NOT NULL REFERENCES vendors(id),
    how         TEXT NOT NULL,
    endorsed_at BIGINT NOT NULL,
    PRIMARY KEY (token_id, vendor_id)
);
-- Vendor-scoped role tokens that existed before this migration were trusted: keep them so.
INSERT INTO token_endorsements (token_id, vendor_id, how, endorsed_at)
    SELECT id, vendor_id, 'migration', created_at FROM tokens WHERE vendor_id IS NOT NULL;
UPDATE tokens SET all_vendors = 0 WHERE vendor_id IS NOT NULL;

-- Set once the vendor's first admin exists: from then on every further admin or auditor needs
-- the vendor's approval.
ALTER TABLE vendors ADD COLUMN admin_established BIGINT NOT NULL DEFAULT 0;
UPDATE vendors SET admin_established = 1
    WHERE id IN (SELECT vendor_id FROM tokens WHERE role = 'vendor-admin');

-- Groups belong to a vendor. Existing (service-wide) memberships become memberships of every
-- vendor that granted that group something.
ALTER TABLE group_members RENAME TO group_members_old;
CREATE TABLE group_members (
    vendor_id   TEXT NOT NULL REFERENCES vendors(id),
    group_name  TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    added_by    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (vendor_id, group_name, user_name)
);
INSERT INTO group_members (vendor_id, group_name, user_name, added_by, created_at)
    SELECT DISTINCT m.vendor_id, g.group_name, g.user_name, g.added_by, g.created_at
    FROM group_members_old g
    JOIN group_grants gg ON gg.group_name = g.group_name
    JOIN models m ON m.id = gg.model_id;
DROP TABLE group_members_old;
CREATE INDEX group_members_by_user ON group_members (user_name, vendor_id);

-- Host enrollments: one row per enrollment, never reused. A live (unrevoked) name is unique.
ALTER TABLE hosts RENAME TO hosts_old;
CREATE TABLE hosts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    host_group  TEXT NOT NULL,
    cert_sha256 TEXT NOT NULL UNIQUE,
    not_after   BIGINT NOT NULL,
    enrolled_by TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
INSERT INTO hosts (id, name, host_group, cert_sha256, not_after, enrolled_by, created_at, revoked_at)
    SELECT lower(hex(randomblob(8))), name, host_group, cert_sha256, not_after, enrolled_by,
           created_at, revoked_at
    FROM hosts_old;
DROP TABLE hosts_old;
CREATE UNIQUE INDEX hosts_live_name ON hosts (name) WHERE revoked_at IS NULL;

-- A vendor's approval of one host enrollment. Existing hosts in a group a vendor allowed were
-- trusted by that vendor: keep them so.
CREATE TABLE vendor_hosts (
    vendor_id   TEXT NOT NULL REFERENCES vendors(id),
    host_id     TEXT NOT NULL REFERENCES hosts(id),
    approved_by TEXT NOT NULL,
    approved_at BIGINT NOT NULL,
    PRIMARY KEY (vendor_id, host_id)
);
INSERT INTO vendor_hosts (vendor_id, host_id, approved_by, approved_at)
    SELECT DISTINCT m.vendor_id, h.id, 'migration', h.created_at
    FROM hosts h
    JOIN model_host_groups mhg ON mhg.host_group = h.host_group
    JOIN models m ON m.id = mhg.model_id;

ALTER TABLE host_copies RENAME TO host_copies_old;
CREATE TABLE host_copies (
    host_id     TEXT NOT NULL REFERENCES hosts(id),
    model_id    TEXT NOT NULL REFERENCES models(id),
    commit_id   TEXT NOT NULL,
    path        TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    fetched_at  BIGINT NOT NULL,
    PRIMARY KEY (host_id, model_id, commit_id, path)
);
INSERT INTO host_copies (host_id, model_id, commit_id, path, bytes, fetched_at)
    SELECT h.id, c.model_id, c.commit_id, c.path, c.bytes, c.fetched_at
    FROM host_copies_old c JOIN hosts h ON h.name = c.host_name;
DROP TABLE host_copies_old;
CREATE INDEX host_copies_by_model ON host_copies (model_id);

ALTER TABLE wipe_confirmations RENAME TO wipe_confirmations_old;
CREATE TABLE wipe_confirmations (
    deletion_id  TEXT NOT NULL,
    host_id      TEXT NOT NULL REFERENCES hosts(id),
    model_id     TEXT NOT NULL REFERENCES models(id),
    confirmed_at BIGINT NOT NULL,
    files        BIGINT NOT NULL,
    PRIMARY KEY (deletion_id, host_id, model_id)
);
INSERT INTO wipe_confirmations (deletion_id, host_id, model_id, confirmed_at, files)
    SELECT w.deletion_id, h.id, w.model_id, w.confirmed_at, w.files
    FROM wipe_confirmations_old w JOIN hosts h ON h.name = w.host_name;
DROP TABLE wipe_confirmations_old;

-- Pending requests: who asked (a user id; NULL for the service itself), whom the request is
-- about (a user id, when it widens that user's standing: they may not approve it), how many
-- distinct approvers it needs, and when it expires.
ALTER TABLE pending_requests ADD COLUMN requester_id TEXT;
ALTER TABLE pending_requests ADD COLUMN subject_id TEXT;
ALTER TABLE pending_requests ADD COLUMN approvals_needed BIGINT NOT NULL DEFAULT 1;
ALTER TABLE pending_requests ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0;
UPDATE pending_requests SET expires_at = created_at + 604800;
UPDATE pending_requests SET requester_id = (
    SELECT t.user_id FROM tokens t
    WHERE t.role || ':' || t.user_name = pending_requests.requested_by LIMIT 1);

CREATE TABLE pending_approvals (
    request_id  TEXT NOT NULL REFERENCES pending_requests(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    approver    TEXT NOT NULL,
    approved_at BIGINT NOT NULL,
    PRIMARY KEY (request_id, user_id)
);

-- Who scheduled a model's destruction (and who approved it, under the two-person rule): the
-- deletion it starts names them.
ALTER TABLE models ADD COLUMN delete_after_by TEXT;
ALTER TABLE models ADD COLUMN delete_after_approved_by TEXT;

-- The Git blob id of a small file's plaintext (Hub API), computed while it is uploaded.
ALTER TABLE objects ADD COLUMN git_blob_id TEXT;
