-- Uploads through the Hugging Face Hub API (issue 17, part 2). The LFS batch API opens an
-- ordinary upload session for the objects a client is about to send; this row marks it as
-- such and holds what the client's PUTs are checked against: they carry no bearer token, so
-- their URLs carry a key (only its SHA-256 is kept, replaced whenever new URLs are handed
-- out), and each PUT is decided again for the token that asked for the URLs.
CREATE TABLE hub_lfs_sessions (
    session_id  TEXT PRIMARY KEY REFERENCES upload_sessions(id),
    token_id    TEXT NOT NULL REFERENCES tokens(id),
    key_sha256  TEXT NOT NULL CONSTRAINT hub_lfs_sessions_key_sha256_hex
                    CHECK (length(key_sha256) = 64)
);
