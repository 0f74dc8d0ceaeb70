-- Vendor-scoped audit exports (issue 14): each vendor holds an audit tag key, and each entry
-- of format 2 stores its leaf's vendor tag (HMAC under that key; audit::leaf) and the vendor
-- it concerns. Vendors created before this get their key when the store next opens, in an
-- audited `vendor.audit-key` entry that publishes the key's fingerprint.
ALTER TABLE vendors ADD COLUMN audit_tag_key BYTEA;
ALTER TABLE vendors ADD COLUMN audit_tag_key_entry BIGINT;
ALTER TABLE audit_log ADD COLUMN tag BYTEA;
ALTER TABLE audit_log ADD COLUMN vendor_id TEXT REFERENCES vendors(id);
CREATE INDEX audit_log_by_vendor ON audit_log (vendor_id, seq);
