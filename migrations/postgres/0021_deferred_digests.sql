-- Uploads at the speed of the disk (issue 15).
--
-- A manifest entry may leave its digest out: the client hashes each file while it sends it.
-- Such a file has `declared = 0` and an empty `sha256` until it is stored; then `sha256` is
-- the digest the server computed, which the client must confirm in the commit.
ALTER TABLE upload_files ADD COLUMN declared BIGINT NOT NULL DEFAULT 1;

-- Each sealed part's claim on its nonces. Before a sealed part reaches storage, the SHA-256
-- of the file's plaintext from its first byte to the end of that part is recorded here; a
-- part sealed again under the same header (a resumed upload) is stored only if it carries
-- the same digest, so no nonce ever seals two different plaintexts, whatever the client
-- sends. Forgotten with the header (a refused file) and with the session.
CREATE TABLE upload_sealed_parts (
    session_id    TEXT NOT NULL REFERENCES upload_sessions(id),
    idx           BIGINT NOT NULL,
    part_number   BIGINT NOT NULL,
    prefix_sha256 TEXT NOT NULL,
    PRIMARY KEY (session_id, idx, part_number)
);
