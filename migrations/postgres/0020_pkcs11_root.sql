-- A PKCS#11 token (an HSM) as the root of trust (issue 16): epochs may record root kind
-- 'pkcs11'. The SQLite twin rebuilds key_epochs with the wider constraint.
ALTER TABLE key_epochs DROP CONSTRAINT key_epochs_root_kind_known;
ALTER TABLE key_epochs ADD CONSTRAINT key_epochs_root_kind_known
    CHECK (root_kind IN ('file', 'aws-kms', 'pkcs11'));
