-- Hardening (issue 13): the operator bootstrap token is single use. A bootstrap token only
-- creates named operator tokens, and the first one it creates revokes it (in the same
-- transaction). Tokens made before this migration are not bootstrap tokens.
ALTER TABLE tokens ADD COLUMN bootstrap INTEGER NOT NULL DEFAULT 0 CHECK (bootstrap IN (0, 1));
