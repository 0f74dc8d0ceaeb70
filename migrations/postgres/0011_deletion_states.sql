-- Deletion that proves what it says (issue 13): the state column admits only the shred state
-- machine's states (store::DeletionState), and the work record carries a version.

ALTER TABLE deletions ADD CONSTRAINT deletions_state_known CHECK (state IN (
    'access_revoked', 'keys_destroyed', 'epoch_destroyed', 'objects_deleted', 'checked',
    'certified'));

-- Work records written before versions existed become version 1: the root's destruction,
-- a sentence until now, becomes a record (kind, id, epoch, KMS deletion date).
UPDATE deletions SET work = jsonb_set(work::jsonb, '{version}', '1')::text;
UPDATE deletions SET work = (jsonb_set(work::jsonb, '{root_destroyed}', jsonb_build_object(
        'kind', work::jsonb -> 'root_kind',
        'id', coalesce(work::jsonb -> 'root',
                       to_jsonb('root-' || (work::jsonb ->> 'from_epoch'))),
        'epoch', work::jsonb -> 'from_epoch',
        'deletion_date', to_jsonb(substring(work::jsonb ->> 'root_destruction'
                                  FROM '^KMS key scheduled for deletion on ([^;]*);'))))
        - 'root_destruction')::text
    WHERE jsonb_typeof(work::jsonb -> 'root_destruction') = 'string';
