-- Operator decisions are revoked (`revoked_at`), never deleted: a decision
-- may already have given a record its person, and the matcher relies on
-- every decision that ever named a record, revoked ones included, to know
-- which waiting records may have matching state
-- (`engine::incremental::named_by_decisions`). A decision deleted by hand
-- could leave such a record's change failing into the dead letters. The
-- matcher's role has no DELETE right on the table either
-- (deploy/postgres/roles.sql); this holds for the owner too.
CREATE TRIGGER match_decisions_never_deleted BEFORE DELETE OR TRUNCATE ON match_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION
    refuse_deletion('operator decisions are revoked (revoked_at), never deleted');
