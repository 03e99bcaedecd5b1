-- The foreign key person_memberships.person_id -> persons checked every new
-- membership by locking its person FOR KEY SHARE, one query per row: about
-- half of the cost of writing a membership (measured: 20,000 new memberships
-- on 1 M, 165-191 ms with the key, 81-87 ms without). A batch of new records
-- writes one membership per record, so the matcher paid it on every record.
--
-- What the key guaranteed is kept by other means:
-- * a membership's person exists: the matcher writes memberships only for
--   persons it has just created (INSERT ... RETURNING, same transaction) or
--   read as current (joined with persons); debug builds check every batch's
--   new memberships against persons (matcher/src/engine/write.rs), so every
--   test run checks it;
-- * a person is never removed: persons are retired, never deleted; DELETE
--   and TRUNCATE on persons are refused below (the matcher's role has
--   neither right anyway: deploy/postgres/roles.sql).
ALTER TABLE person_memberships DROP CONSTRAINT IF EXISTS person_memberships_person_id_fkey;

-- A statement-level trigger that refuses the statement with its argument
-- as the message (also used for match_decisions: 20261202150002).
CREATE FUNCTION refuse_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END $$;
CREATE TRIGGER persons_never_deleted BEFORE DELETE OR TRUNCATE ON persons
    FOR EACH STATEMENT EXECUTE FUNCTION
    refuse_deletion('persons are retired, never deleted (person_memberships refer to them)');
