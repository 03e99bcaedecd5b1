-- Why a record is in its person is kept on its membership, not in a second
-- row of the audit log.
--
-- Until now every record the matcher placed cost two rows: its membership
-- and an `assigned` (or `moved`) audit row that repeated it (person, record,
-- time) and added the reason (rule, score, whether the person was new).
-- That audit row, its three index entries and its `jsonb` were the largest
-- phase of a batch of new records (a median of 106 ms of a 20,000 batch).
-- A membership is already history: it is opened when a record enters a
-- person and closed (`valid_to`), never deleted, when it leaves. So the
-- reason now goes on the membership, and the audit log is a view:
--
-- * `match_audit_events`: the audit rows that are not placements
--   (`record_removed`, `person_retired`, reviews, operator decisions,
--   locks); append-only, as before (the old table, renamed);
-- * `person_memberships`: one row per placement, with the new columns
--   `actor`, `from_person_id` (the person it left: `moved`; none:
--   `assigned`), `rule`, `score` and `new_person`;
-- * `match_audit`: the view that reads both as the one complete log, with
--   the columns and values the table had. Queries of the audit keep working.
--
-- Both share one id sequence, so `ORDER BY id` is still the order in which
-- things happened. Memberships written before this migration have no
-- `actor`: their `assigned`/`moved` rows are in `match_audit_events`, and the
-- view does not show them twice.
--
-- A membership is now part of the audit: its facts are immutable (a trigger
-- allows only closing it, once) and it is never deleted.

CREATE SEQUENCE match_log_id;
SELECT setval('match_log_id',
              greatest((SELECT max(id) FROM person_memberships), (SELECT max(id) FROM match_audit), 0) + 1,
              false);

ALTER TABLE match_audit RENAME TO match_audit_events;
ALTER INDEX match_audit_record RENAME TO match_audit_events_record;
ALTER INDEX match_audit_person RENAME TO match_audit_events_person;
ALTER TABLE match_audit_events ALTER COLUMN id DROP IDENTITY;
ALTER TABLE match_audit_events ALTER COLUMN id SET DEFAULT nextval('match_log_id');
CREATE OR REPLACE FUNCTION match_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log (match_audit_events) is append-only';
END $$;

ALTER TABLE person_memberships ALTER COLUMN id DROP IDENTITY;
ALTER TABLE person_memberships ALTER COLUMN id SET DEFAULT nextval('match_log_id');
ALTER TABLE person_memberships
    -- Who placed the record: the matcher's engine (`matcher`), also when
    -- an operator's decision made it move (that decision has its own
    -- `decision` row in `match_audit_events`, with the operator's name).
    ADD COLUMN actor          text,
    -- The person the record left (a move); none when it had no person.
    ADD COLUMN from_person_id bigint,
    -- The strongest link into the person: a rule name, `locked` or
    -- `operator_or_alone`; its score. Rules and scores only, no values.
    ADD COLUMN rule           text,
    ADD COLUMN score          real,
    -- The person was created by the application that placed the record
    -- (a person has no audit row of its own for its creation).
    ADD COLUMN new_person     boolean;

-- A record's and a person's whole history, closed memberships included
-- (the audit's two indexes did this before). The person index had only
-- current rows; a membership is current when it is written, so indexing
-- every row costs no more per new record.
CREATE INDEX person_memberships_record ON person_memberships (source, source_id);
DROP INDEX person_memberships_person;
CREATE INDEX person_memberships_person ON person_memberships (person_id);

CREATE FUNCTION person_memberships_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.valid_to IS NOT NULL OR NEW.valid_to IS NULL
       OR (NEW.id, NEW.source, NEW.source_id, NEW.person_id, NEW.valid_from, NEW.actor,
           NEW.from_person_id, NEW.rule, NEW.score, NEW.new_person)
          IS DISTINCT FROM
          (OLD.id, OLD.source, OLD.source_id, OLD.person_id, OLD.valid_from, OLD.actor,
           OLD.from_person_id, OLD.rule, OLD.score, OLD.new_person) THEN
        RAISE EXCEPTION 'a membership is history: it can only be closed (valid_to), once';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER person_memberships_history BEFORE UPDATE ON person_memberships
    FOR EACH ROW EXECUTE FUNCTION person_memberships_history();
CREATE TRIGGER person_memberships_never_deleted BEFORE DELETE OR TRUNCATE ON person_memberships
    FOR EACH STATEMENT EXECUTE FUNCTION
    refuse_deletion('memberships are history: closed (valid_to), never deleted');

CREATE VIEW match_audit AS
SELECT id, at, actor, action, person_id, source, source_id,
       other_person_id, other_source, other_source_id, detail
FROM match_audit_events
UNION ALL
SELECT id, valid_from, actor,
       CASE WHEN from_person_id IS NULL THEN 'assigned' ELSE 'moved' END,
       person_id, source, source_id, from_person_id, NULL::text COLLATE "C", NULL::text COLLATE "C",
       jsonb_strip_nulls(jsonb_build_object(
           'rule', rule,
           'score', score,
           'new_person', CASE WHEN new_person THEN true END))
FROM person_memberships
WHERE actor IS NOT NULL;
