-- Record names (source, source_id) in the matcher's tables compare in byte
-- order ("C"), like `match_keys` (20261202000004). They are compared for
-- equality and sorted only to be read back by the matcher, whose own order
-- (Rust's `String` order, used for a pair's `a`/`b`) is byte order too.
-- Under the database's collation (C.UTF-8, which PostgreSQL 15 does not
-- treat as byte order) every comparison is a strcoll() call: it made the
-- key-index build of a 1 M-record re-match twice as slow; here it weighs
-- on the rebuilt `match_pairs` indexes and on sorts. (Rows written in key
-- order, as a re-match writes memberships and audit rows, measured the
-- same either way: their cost was the foreign key, see rematch.rs.)
--
-- `source_records` keeps the database collation (it is the loader's; its
-- primary key serves the loader's upsert). A comparison of a "C" column
-- with one of `source_records` is made in "C" and cannot use the primary
-- key of `source_records`: a query that looks records up from these tables
-- says `COLLATE "default"` on the matcher's side (as `person_golden` below).

-- The view reads person_memberships.source/source_id: drop it while their
-- type changes, then recreate it with the same columns and values.
DROP VIEW person_golden;

ALTER TABLE person_memberships
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN source_id TYPE text COLLATE "C";

-- The audit's record index holds only rows that name a record: a first
-- re-match writes one `person_created` row (no record) per person, 40 % of
-- its audit rows. `WHERE (source, source_id) = (…)` implies the predicate.
DROP INDEX match_audit_record;
ALTER TABLE match_audit
    ALTER COLUMN source TYPE text COLLATE "C",
    ALTER COLUMN source_id TYPE text COLLATE "C",
    ALTER COLUMN other_source TYPE text COLLATE "C",
    ALTER COLUMN other_source_id TYPE text COLLATE "C";
CREATE INDEX match_audit_record ON match_audit (source, source_id) WHERE source IS NOT NULL;

ALTER TABLE match_pairs
    ALTER COLUMN a_source TYPE text COLLATE "C",
    ALTER COLUMN a_source_id TYPE text COLLATE "C",
    ALTER COLUMN b_source TYPE text COLLATE "C",
    ALTER COLUMN b_source_id TYPE text COLLATE "C";

-- Small tables, but joined with the ones above by the matcher: one
-- collation for every record name the matcher stores.
ALTER TABLE review_items
    ALTER COLUMN a_source TYPE text COLLATE "C",
    ALTER COLUMN a_source_id TYPE text COLLATE "C",
    ALTER COLUMN b_source TYPE text COLLATE "C",
    ALTER COLUMN b_source_id TYPE text COLLATE "C";

ALTER TABLE match_decisions
    ALTER COLUMN a_source TYPE text COLLATE "C",
    ALTER COLUMN a_source_id TYPE text COLLATE "C",
    ALTER COLUMN b_source TYPE text COLLATE "C",
    ALTER COLUMN b_source_id TYPE text COLLATE "C";

-- As in 20261201000001_matcher.sql, except the join: `USING (source,
-- source_id)` would compare in "C" (the memberships' collation) and read
-- all of `source_records` for one person; comparing in the database's
-- collation probes its primary key. Same columns, same values.
CREATE VIEW person_golden AS
WITH m AS (
    SELECT pm.person_id, r.*, coalesce(p.rank, 2147483647) AS rank
    FROM person_memberships pm
    JOIN source_records r ON r.source = pm.source COLLATE "default"
                         AND r.source_id = pm.source_id COLLATE "default"
    LEFT JOIN match_source_priority p ON p.source = r.source
    WHERE pm.valid_to IS NULL AND r.deleted_at IS NULL
)
SELECT person_id,
    count(*) AS records,
    count(DISTINCT source) AS sources,
    (array_agg(last_name ORDER BY rank, updated_at DESC, source, source_id) FILTER (WHERE last_name IS NOT NULL))[1] AS last_name,
    (array_agg(first_name ORDER BY rank, updated_at DESC, source, source_id) FILTER (WHERE first_name IS NOT NULL))[1] AS first_name,
    (array_agg(middle_name ORDER BY rank, updated_at DESC, source, source_id) FILTER (WHERE middle_name IS NOT NULL))[1] AS middle_name,
    (array_agg(birth_date ORDER BY rank, updated_at DESC, source, source_id) FILTER (WHERE birth_date IS NOT NULL))[1] AS birth_date,
    (array_agg(sex ORDER BY rank, updated_at DESC, source, source_id) FILTER (WHERE sex IS NOT NULL AND sex <> 'U'))[1] AS sex,
    (array_agg(snils ORDER BY rank, updated_at DESC, source, source_id) FILTER (WHERE snils_valid))[1] AS snils,
    (array_agg(oms_policy ORDER BY rank, updated_at DESC, source, source_id) FILTER (WHERE oms_policy_valid))[1] AS oms_policy,
    (array_agg(documents ORDER BY rank, updated_at DESC, source, source_id) FILTER (WHERE documents <> '[]'::jsonb))[1] AS documents,
    (array_agg(phones ORDER BY rank, updated_at DESC, source, source_id) FILTER (WHERE phones <> '[]'::jsonb))[1] AS phones,
    (array_agg(emails ORDER BY rank, updated_at DESC, source, source_id) FILTER (WHERE emails <> '[]'::jsonb))[1] AS emails
FROM m GROUP BY person_id;
