-- Blocking keys are compared for equality only, never for a locale's
-- order: byte order ("C") compares and sorts them several times faster
-- than the database's collation (a full re-match rebuilds this table's two
-- indexes over ~5 keys per record: the key index took 7.6 s of a 1M-record
-- re-match under C.UTF-8, which PostgreSQL 15 does not treat as byte order).
ALTER TABLE match_keys
    ALTER COLUMN key TYPE text COLLATE "C",
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN source_id TYPE text COLLATE "C";
