-- The matcher's schema (issue 5): persons, their members, the pairwise
-- evidence between records, review items, operator decisions and the
-- append-only audit log. Everything here is derived from `source_records`
-- except `match_decisions` (operator input) and `match_audit` (history).
--
-- Records are named by (source, source_id) everywhere: no surrogate key to
-- translate when an operator reads a row. Pairs are stored with the smaller
-- (source, source_id) as `a`, so a pair has one row.

-- Normalized blocking keys, one row per (record, key). A key is a short text
-- with a kind prefix: `d:<type>:<series>:<number>` (valid document),
-- `s:<snils>`, `o:<oms>`, `n:<surname part>|<birth key>`,
-- `f:<first>|<middle>|<birth key>`, `p:<phone>`, `e:<e-mail>`. Candidates of a
-- record are the records sharing one of its keys: one index lookup per key,
-- never a scan. The keys hold normalized personal data, like source_records.
CREATE TABLE match_keys (
    key       text NOT NULL,
    source    text NOT NULL,
    source_id text NOT NULL,
    PRIMARY KEY (source, source_id, key)
);
CREATE INDEX match_keys_key ON match_keys (key);

-- Persons: one stable id per cluster of source records. A person whose
-- records all went elsewhere is retired (kept, never deleted).
CREATE TABLE persons (
    person_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- An operator froze this person: automatic rules neither add records to
    -- it nor take records from it (the old system's `matching_locked`).
    locked     boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);

-- Which person each live record belongs to, with history: the current
-- membership has `valid_to IS NULL`; moves and deletions close the row and
-- open a new one, nothing is deleted.
CREATE TABLE person_memberships (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source     text NOT NULL,
    source_id  text NOT NULL,
    person_id  bigint NOT NULL REFERENCES persons,
    valid_from timestamptz NOT NULL DEFAULT now(),
    valid_to   timestamptz
);
CREATE UNIQUE INDEX person_memberships_current ON person_memberships (source, source_id) WHERE valid_to IS NULL;
CREATE INDEX person_memberships_person ON person_memberships (person_id) WHERE valid_to IS NULL;

-- Pairwise evidence between two live records that share a blocking key and
-- are worth keeping: `link` (a rule says same person), `review` (ambiguous)
-- or `conflict` (an identifier rule matched but something contradicts it).
-- `evidence` says how each field agreed (`exact`, `typo`, `swap`, `differs`,
-- `missing`, ...) without any value, so an operator can read why.
CREATE TABLE match_pairs (
    a_source    text NOT NULL,
    a_source_id text NOT NULL,
    b_source    text NOT NULL,
    b_source_id text NOT NULL,
    decision    text NOT NULL CHECK (decision IN ('link', 'review', 'conflict')),
    rule        text NOT NULL,
    score       real NOT NULL,
    evidence    jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (a_source, a_source_id, b_source, b_source_id)
);
CREATE INDEX match_pairs_b ON match_pairs (b_source, b_source_id);

-- Things a person must look at: ambiguous pairs, identifier matches that
-- contradict, links refused because they would put a conflict into a person
-- (chaining). At most one open item per pair. An item whose evidence went
-- away is closed as `obsolete`; an operator resolves one with a decision.
CREATE TABLE review_items (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    a_source    text NOT NULL,
    a_source_id text NOT NULL,
    b_source    text NOT NULL,
    b_source_id text NOT NULL,
    reason      text NOT NULL,
    score       real NOT NULL,
    evidence    jsonb NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved', 'obsolete')),
    resolution  text CHECK (resolution IN ('link', 'keep_apart')),
    resolved_by text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz
);
CREATE UNIQUE INDEX review_items_open_pair ON review_items (a_source, a_source_id, b_source, b_source_id) WHERE status = 'open';
CREATE INDEX review_items_b ON review_items (b_source, b_source_id) WHERE status = 'open';

-- Operator decisions on pairs of records. They override every rule and
-- survive re-matches: `link` puts the two records into one person whatever
-- the rules say, `keep_apart` keeps them in different persons. A decision is
-- revoked (never deleted) by setting `revoked_at`.
CREATE TABLE match_decisions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('link', 'keep_apart')),
    a_source    text NOT NULL,
    a_source_id text NOT NULL,
    b_source    text NOT NULL,
    b_source_id text NOT NULL,
    actor       text NOT NULL,
    note        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX match_decisions_a ON match_decisions (a_source, a_source_id) WHERE revoked_at IS NULL;
CREATE INDEX match_decisions_b ON match_decisions (b_source, b_source_id) WHERE revoked_at IS NULL;

-- Every decision, automatic or not (the old `patient_matching_log`, made
-- complete). Append-only: a trigger refuses UPDATE and DELETE.
CREATE TABLE match_audit (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    actor           text NOT NULL,
    action          text NOT NULL,
    person_id       bigint,
    source          text,
    source_id       text,
    other_person_id bigint,
    other_source    text,
    other_source_id text,
    detail          jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX match_audit_record ON match_audit (source, source_id);
CREATE INDEX match_audit_person ON match_audit (person_id);

CREATE FUNCTION match_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'match_audit is append-only';
END $$;
CREATE TRIGGER match_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON match_audit
    FOR EACH STATEMENT EXECUTE FUNCTION match_audit_append_only();

-- Source trust for survivorship (lower rank = more trusted); the matcher
-- writes it from `matcher.source_priority` at start. Unlisted sources rank last.
CREATE TABLE match_source_priority (
    source text PRIMARY KEY,
    rank   integer NOT NULL
);

-- The golden view of each person: for each field, the value of the most
-- trusted live record that has one (source priority, then the most recently
-- changed record, then source id for determinism).
CREATE VIEW person_golden AS
WITH m AS (
    SELECT pm.person_id, r.*, coalesce(p.rank, 2147483647) AS rank
    FROM person_memberships pm
    JOIN source_records r USING (source, source_id)
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
