-- The matcher's blocking index lives in the memory of the active instance
-- (it replaces the `match_keys` table). It is valid only while nobody else
-- has consumed changes or rewritten the matching state since the instance
-- last wrote: every transaction that does (a service batch, a full
-- re-match) bumps this generation under the matcher lock, and an instance
-- whose last written generation is not the current one rebuilds its index
-- from `source_records` before matching.
CREATE TABLE match_state (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    generation bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO match_state (generation) VALUES (0);
