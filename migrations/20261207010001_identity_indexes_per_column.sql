-- Records by identifier through one index per column instead of one GIN
-- index over `identity_keys(…)`: that index evaluated the function (JSON
-- arrays taken apart, keys aggregated) and inserted four or five unique
-- GIN entries for every record written, which made an insert of 200,000
-- records take 8.0 s instead of 1.0 s. A B-tree on valid SNILS and OMS and
-- `jsonb_path_ops` GIN on the document, phone and e-mail arrays find the
-- same records; the identity service checks the few rows found against
-- `identity_keys(…)` (identity/src/store.rs, `key_lookup`). The same insert
-- takes 3.4–4.1 s with them.
--
-- A GIN index first appends new entries to a pending list that every
-- lookup scans until VACUUM merges it; with the default 4 MB list a lookup
-- right after a load took 5–10 ms instead of 0.02 ms. 256 kB bounds that
-- scan for a little more work per insert (4.1 s instead of 3.4 s above).
DROP INDEX source_records_identity_keys;

CREATE INDEX source_records_snils ON source_records (snils)
    WHERE snils_valid AND deleted_at IS NULL;
CREATE INDEX source_records_oms_policy ON source_records (oms_policy)
    WHERE oms_policy_valid AND deleted_at IS NULL;
CREATE INDEX source_records_documents ON source_records USING gin (documents jsonb_path_ops)
    WITH (gin_pending_list_limit = 256) WHERE deleted_at IS NULL;
CREATE INDEX source_records_phones ON source_records USING gin (phones jsonb_path_ops)
    WITH (gin_pending_list_limit = 256) WHERE deleted_at IS NULL;
CREATE INDEX source_records_emails ON source_records USING gin (emails jsonb_path_ops)
    WITH (gin_pending_list_limit = 256) WHERE deleted_at IS NULL;
