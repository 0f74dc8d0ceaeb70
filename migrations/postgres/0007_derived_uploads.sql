-- Derived artifacts (issue 6): an upload session that will become a revision derived from
-- another revision of the same model (`revisions.derived_from`). Kept on the session so the
-- right to upload is re-checked as the same action on every request of the upload.
ALTER TABLE upload_sessions ADD COLUMN derived_from TEXT;
