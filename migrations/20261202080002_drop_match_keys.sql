-- Blocking keys are kept in the active matcher's memory (see
-- `match_state`); the table and its two indexes (~5 rows per record, two
-- index entries each, written by every batch and rebuilt by every full
-- re-match) are gone. Nothing else read them.
DROP TABLE match_keys;
