-- Constraints the code always kept, now kept by the database too (issue 18): CHECK
-- constraints on enumerated columns and single-row tables, and the foreign keys that were
-- missing. The SQLite twin rebuilds the tables with the same constraints. A row that breaks
-- one makes the migration fail, and nothing changes.

ALTER TABLE tokens ADD CONSTRAINT tokens_role_known
    CHECK (role IN ('operator', 'vendor-admin', 'committer', 'auditor'));
ALTER TABLE tokens ADD CONSTRAINT tokens_all_vendors_flag CHECK (all_vendors IN (0, 1));
ALTER TABLE tokens ADD CONSTRAINT tokens_parent_id_fkey
    FOREIGN KEY (parent_id) REFERENCES tokens(id);

ALTER TABLE audit_head ADD CONSTRAINT audit_head_single_row CHECK (id = 1);
ALTER TABLE key_head ADD CONSTRAINT key_head_single_row CHECK (id = 1);

ALTER TABLE key_epochs ADD CONSTRAINT key_epochs_root_kind_known
    CHECK (root_kind IN ('file', 'aws-kms'));
ALTER TABLE key_epochs ADD CONSTRAINT key_epochs_state_known
    CHECK (state IN ('creating', 'live', 'destroying', 'destroyed'));

ALTER TABLE pending_requests ADD CONSTRAINT pending_requests_kind_known CHECK (kind IN (
    'grant', 'delete', 'disable-two-person', 'unexclude', 'embargo',
    'allow-host-group', 'approve-host', 'delete-after',
    'add-group-member', 'endorse-credential', 'budget'));
ALTER TABLE pending_requests ADD CONSTRAINT pending_requests_state_known
    CHECK (state IN ('pending', 'approved', 'rejected', 'cancelled'));
ALTER TABLE pending_requests ADD CONSTRAINT pending_requests_model_id_fkey
    FOREIGN KEY (model_id) REFERENCES models(id);

ALTER TABLE deletions ADD CONSTRAINT deletions_model_id_fkey
    FOREIGN KEY (model_id) REFERENCES models(id);
ALTER TABLE wipe_confirmations ADD CONSTRAINT wipe_confirmations_deletion_id_fkey
    FOREIGN KEY (deletion_id) REFERENCES deletions(id);

ALTER TABLE revisions ADD CONSTRAINT revisions_derived_from_fkey
    FOREIGN KEY (derived_from) REFERENCES revisions(commit_id);
ALTER TABLE host_copies ADD CONSTRAINT host_copies_commit_id_fkey
    FOREIGN KEY (commit_id) REFERENCES revisions(commit_id);
ALTER TABLE upload_sessions ADD CONSTRAINT upload_sessions_derived_from_fkey
    FOREIGN KEY (derived_from) REFERENCES revisions(commit_id);

-- Parts of uploads that no longer exist are bookkeeping left behind, not data: dropped.
DELETE FROM upload_parts WHERE session_id NOT IN (SELECT id FROM upload_sessions);
ALTER TABLE upload_parts ADD CONSTRAINT upload_parts_session_id_fkey
    FOREIGN KEY (session_id) REFERENCES upload_sessions(id);
