-- The identity service (identity/): its API clients, an index of record
-- identifiers for lookups and `$match`, and the client's name in the
-- personal-data access log.

-- API clients of the identity service. A client authenticates with a
-- random key (`etl identity client add` prints it once); only its SHA-256
-- is stored: a key of 256 random bits cannot be guessed from its hash, so
-- a slow password hash would add nothing but latency to every request.
-- A client is revoked (`revoked_at`), never deleted: the access log and
-- the audit name it.
CREATE TABLE identity_clients (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    key_hash   bytea NOT NULL UNIQUE,
    -- `ids:read`, `personal:read`, `decisions:write`.
    scopes     text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- The record's identifiers as the matcher's blocking keys name them
-- (matcher/src/features.rs, `Features::keys`): `d:<type>:<series>:<number>`
-- for each valid document of a known type, `s:<snils>` and `o:<oms>` when
-- valid, `p:<phone>` and `e:<e-mail>` for each valid phone and e-mail.
-- Immutable (a pure function of its arguments), so it can be indexed; it
-- never fails on content the loader does not write (a non-array is no
-- identifier), so the index cannot turn a record into a dead letter.
CREATE FUNCTION identity_keys(documents jsonb, snils text, snils_valid boolean,
                              oms_policy text, oms_policy_valid boolean,
                              phones jsonb, emails jsonb)
RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT k) FILTER (WHERE k IS NOT NULL), '{}')
    FROM (
        SELECT 'd:' || (d->>'type') || ':' || coalesce(d->>'series', '') || ':' || (d->>'number') AS k
        FROM jsonb_array_elements(CASE WHEN jsonb_typeof(documents) = 'array' THEN documents ELSE '[]' END) d
        WHERE jsonb_typeof(d) = 'object' AND d->>'problem' IS NULL
          AND coalesce(d->>'type', '0') <> '0' AND coalesce(d->>'number', '') <> ''
        UNION ALL
        SELECT 's:' || snils WHERE snils_valid
        UNION ALL
        SELECT 'o:' || oms_policy WHERE oms_policy_valid
        UNION ALL
        SELECT 'p:' || (p->'number'->>'value')
        FROM jsonb_array_elements(CASE WHEN jsonb_typeof(phones) = 'array' THEN phones ELSE '[]' END) p
        WHERE jsonb_typeof(p) = 'object' AND jsonb_typeof(p->'number') = 'object'
          AND p->'number'->>'problem' IS NULL
        UNION ALL
        SELECT 'e:' || lower(e->'address'->>'value')
        FROM jsonb_array_elements(CASE WHEN jsonb_typeof(emails) = 'array' THEN emails ELSE '[]' END) e
        WHERE jsonb_typeof(e) = 'object' AND jsonb_typeof(e->'address') = 'object'
          AND e->'address'->>'problem' IS NULL
    ) keys
$$;

-- Live records by identifier (lookups, `$match` candidates): one GIN
-- entry per identifier. Deleted records are left out, as the matcher's
-- blocking index leaves them out.
CREATE INDEX source_records_identity_keys ON source_records
    USING gin (identity_keys(documents, snils, snils_valid, oms_policy, oms_policy_valid, phones, emails))
    WHERE deleted_at IS NULL;

-- Live records by birth date: the candidates of `$match` that share a
-- name key (surname or first name and patronymic, with the birth date or
-- its day/month swap) with the query.
CREATE INDEX source_records_birth_date ON source_records (birth_date) WHERE deleted_at IS NULL;

-- The API client that viewed personal data through the identity service
-- (NULL for a view through `etl`).
ALTER TABLE personal_data_access ADD COLUMN client text;
