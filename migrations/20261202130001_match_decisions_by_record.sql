-- A matcher batch asks, for the records it matches without looking up
-- their state (records the blocking index knows to have none), whether any
-- operator decision names them, revoked ones included
-- (`engine::incremental::named_by_decisions`). The partial indexes cover
-- active decisions only; these answer it by index whatever the size of
-- the table (an idle batch of one record would otherwise scan it).
CREATE INDEX match_decisions_a_any ON match_decisions (a_source, a_source_id);
CREATE INDEX match_decisions_b_any ON match_decisions (b_source, b_source_id);
