-- Records by identifier through ONE GIN index over a column of 4-byte
-- hashes of the record's identifier keys, written by the loader, instead
-- of the five per-column indexes of 20261207010001 (B-trees on SNILS and
-- OMS, `jsonb_path_ops` GIN on documents, phones and e-mails).
--
-- Those five were most of the loader's write cost: on 1M records, an
-- insert of 100,000 more (batches of 1,000, 128 MB shared buffers) took
-- 34–38 ms of PostgreSQL CPU per 1,000 records with them and the birth
-- date index, 7.3 without them; `jsonb_path_ops` makes an entry for every
-- leaf of every document, phone and e-mail (type, series, source code,
-- problem, flags), and the two B-trees and three GINs are five random
-- places written per record. One GIN over the hashes (about four entries
-- per record, all selective, 4 bytes each: 128 MB at 1M records against
-- 143 MB for the five) took 24–25 ms. Keys as text in the same GIN made
-- it 259 MB and slower than the five (40 ms); a trigger computing the
-- keys with `identity_keys(…)` cost 285 ms per 1,000 records.
--
-- The hash is the first four bytes of the key's SHA-256, big-endian,
-- signed: `identity_key_hash(…)` here, `loader::identity` in the loader,
-- which computes the keys from the values it has just validated, exactly
-- as `identity_keys(…)` names them (a loader test holds the two equal).
-- Two keys may share a hash: a lookup checks the rows found against
-- `identity_keys(…)` (matcher/src/reads.rs, `holding_key`).
CREATE FUNCTION identity_key_hash(key text) RETURNS int4
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('x' || encode(substring(sha256(convert_to(key, 'UTF8')) FROM 1 FOR 4), 'hex'))::bit(32)::int4
$$;

-- The hashes of a record's identifier keys, from its stored columns (the
-- back-fill below and the triggers).
CREATE FUNCTION identity_key_hashes_of(documents jsonb, snils text, snils_valid boolean,
                                       oms_policy text, oms_policy_valid boolean,
                                       phones jsonb, emails jsonb)
RETURNS int4[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT identity_key_hash(k)), '{}')
    FROM unnest(identity_keys(documents, snils, snils_valid, oms_policy, oms_policy_valid,
                              phones, emails)) k
$$;

DROP INDEX source_records_snils;
DROP INDEX source_records_oms_policy;
DROP INDEX source_records_documents;
DROP INDEX source_records_phones;
DROP INDEX source_records_emails;

-- NULL until computed: the loader always writes it (an empty array for a
-- record without identifiers); the triggers below fill it for any other
-- writer (tests, an operator's SQL).
ALTER TABLE source_records ADD COLUMN identity_key_hashes int4[];
UPDATE source_records
SET identity_key_hashes = identity_key_hashes_of(documents, snils, snils_valid, oms_policy,
                                                 oms_policy_valid, phones, emails);

-- A writer that leaves the column out (NULL on insert; unchanged on an
-- update that changes an identifier column) gets it computed here. The
-- loader never does, so its rows skip the function (the WHEN conditions
-- are evaluated without calling it).
CREATE FUNCTION source_records_identity_key_hashes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.identity_key_hashes := identity_key_hashes_of(NEW.documents, NEW.snils, NEW.snils_valid,
        NEW.oms_policy, NEW.oms_policy_valid, NEW.phones, NEW.emails);
    RETURN NEW;
END $$;
CREATE TRIGGER source_records_identity_key_hashes_insert BEFORE INSERT ON source_records
    FOR EACH ROW WHEN (NEW.identity_key_hashes IS NULL)
    EXECUTE FUNCTION source_records_identity_key_hashes();
CREATE TRIGGER source_records_identity_key_hashes_update BEFORE UPDATE ON source_records
    FOR EACH ROW WHEN (NEW.identity_key_hashes IS NULL
        OR (NEW.identity_key_hashes IS NOT DISTINCT FROM OLD.identity_key_hashes
            AND (NEW.documents, NEW.snils, NEW.snils_valid, NEW.oms_policy, NEW.oms_policy_valid,
                 NEW.phones, NEW.emails)
                IS DISTINCT FROM (OLD.documents, OLD.snils, OLD.snils_valid, OLD.oms_policy,
                                  OLD.oms_policy_valid, OLD.phones, OLD.emails)))
    EXECUTE FUNCTION source_records_identity_key_hashes();

-- A GIN index first appends new entries to a pending list that every
-- lookup scans until it is merged; 256 kB bounds that scan (see
-- 20261207010001: with the default 4 MB a lookup right after a load took
-- 5–10 ms).
CREATE INDEX source_records_identity_key_hashes ON source_records
    USING gin (identity_key_hashes) WITH (gin_pending_list_limit = 256)
    WHERE deleted_at IS NULL;
