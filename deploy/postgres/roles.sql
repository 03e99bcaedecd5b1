-- Least-privilege roles of the ETL bus, for the database this script runs in.
--
--   psql -v ON_ERROR_STOP=1 -h <host> -U postgres -d etl -f deploy/postgres/roles.sql
--
-- Run it as a superuser (or the database owner with CREATEROLE):
--   1. once before the first start (creates the roles, lets etl_owner create
--      the schema, sets default privileges for the tables it will create);
--   2. again after every upgrade's migrations (grants the write privileges on
--      the tables that now exist; new tables get SELECT automatically, writes
--      only from this script).
-- It is idempotent and may run concurrently with itself: runs in one
-- database take turns (advisory lock below); runs in other databases of the
-- cluster only share the roles, and a role created meanwhile by another run
-- is not an error.
--
-- Roles (LOGIN, no password: set one with \password <role> or
-- ALTER ROLE <role> PASSWORD '...'; or use pg_hba.conf cert/peer auth):
--   etl_owner     owns the schema: runs the migrations (`etl migrate`,
--                 see deploy/README.md); the only role that reads the
--                 personal-data access log (`etl access-log list`).
--   etl_operator  people running `etl`: reads persons and records, records
--                 and applies decisions (`etl persons link` …: the same
--                 person-side writes as the matcher), retries and drops
--                 dead letters, registers sources, appends to the access
--                 log. No DDL, no trigger changes (only the owner may), never deletes a
--                 decision, an audit row or an access-log row.
--   etl_loader    the loader: writes source_records, record_changes,
--                 dead_letters, business_units; reads the rest (it loads
--                 only the sources an operator registered, and may not
--                 register one).
--   etl_matcher   the matcher: writes persons, memberships, keys, pairs,
--                 review items, decisions, audit (append only), source
--                 priority, and consumes record_changes; reads source_records;
--                 adds dead letters (changes it cannot match).
--   etl_identity  the identity service (identity/): reads persons and
--                 records, applies decisions over HTTP (the operator's
--                 person-side writes), reads its API clients, appends to
--                 the access log.
--   etl_readonly  reporting: SELECT only (not the access log).
--
-- `etl rematch` (a full re-match) runs as etl_matcher; `etl replay` as
-- etl_loader.
--
-- The services never change the schema: run them with
-- `database.migrate = false` (ETL__DATABASE__MIGRATE=false; compose and the
-- systemd units do), so at start they only check that the migrations are
-- applied and wait until the owner has run `etl migrate`.

\set ON_ERROR_STOP on

-- Runs in one database wait for each other (GRANTs on the same object at
-- the same time can fail with "tuple concurrently updated"); the lock is
-- released when the session ends.
DO $lock$ BEGIN PERFORM pg_advisory_lock(hashtext('etl deploy/postgres/roles.sql')); END $lock$;

DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['etl_owner', 'etl_loader', 'etl_matcher', 'etl_readonly', 'etl_operator', 'etl_identity'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN', r);
        EXCEPTION
            -- Exists already, or a concurrent run created it just now.
            WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END LOOP;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO etl_owner, etl_loader, etl_matcher, etl_readonly, etl_operator, etl_identity',
                   current_database());
    EXECUTE format('GRANT CREATE ON DATABASE %I TO etl_owner', current_database());
END
$roles$;

-- No one else may create objects in public (PostgreSQL 15+ default; older
-- versions granted CREATE to PUBLIC).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO etl_owner;
GRANT USAGE ON SCHEMA public TO etl_loader, etl_matcher, etl_readonly, etl_operator, etl_identity;
-- Earlier versions granted it (the services migrated at start).
REVOKE CREATE ON SCHEMA public FROM etl_loader, etl_matcher, etl_operator, etl_identity;

-- Tables etl_owner creates later (the migrations): readable by every role.
ALTER DEFAULT PRIVILEGES FOR ROLE etl_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO etl_loader, etl_matcher, etl_readonly, etl_operator, etl_identity;
ALTER DEFAULT PRIVILEGES FOR ROLE etl_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO etl_loader, etl_matcher, etl_operator, etl_identity;

-- What exists now (tables made before the roles, or by another role).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO etl_loader, etl_matcher, etl_readonly, etl_operator, etl_identity;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO etl_loader, etl_matcher, etl_operator, etl_identity;

-- Writes, table by table, for the tables that exist (none before the
-- migrations ran).
DO $writes$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT * FROM (VALUES
            -- loader (migrations/20261124000001_source_records.sql)
            ('etl_loader',  'source_records',        'INSERT, UPDATE'),
            ('etl_loader',  'record_changes',        'INSERT'),
            ('etl_loader',  'dead_letters',          'INSERT, UPDATE'),
            ('etl_loader',  'business_units',        'INSERT'),
            -- matcher (migrations/20261201000001_matcher.sql); record_changes:
            -- it claims rows under its advisory lock and deletes them.
            ('etl_matcher', 'record_changes',        'UPDATE, DELETE'),
            ('etl_matcher', 'persons',               'INSERT, UPDATE'),
            ('etl_matcher', 'person_memberships',    'INSERT, UPDATE'),
            ('etl_matcher', 'match_pairs',           'INSERT, UPDATE, DELETE, TRUNCATE'),
            ('etl_matcher', 'review_items',          'INSERT, UPDATE, DELETE'),
            ('etl_matcher', 'match_decisions',       'INSERT, UPDATE'),
            ('etl_matcher', 'match_audit_events',    'INSERT'),
            ('etl_matcher', 'match_source_priority', 'INSERT, UPDATE, DELETE'),
            -- a change it cannot match is set aside as a dead letter
            -- (matcher/src/engine/quarantine.rs); never updated or deleted.
            ('etl_matcher', 'dead_letters',          'INSERT'),
            -- the blocking index's generation (migrations/20261202080001_match_state.sql)
            ('etl_matcher', 'match_state',           'UPDATE'),
            -- its learned model, trained by `etl model train` as this role
            -- (migrations/20261206300001_match_models.sql)
            ('etl_matcher', 'match_models',          'INSERT'),
            ('etl_matcher', 'match_model_frequencies', 'INSERT'),
            -- person events: written with each change, published by the
            -- relay (its cursor), pruned after the retention
            -- (migrations/20261206600001_person_events.sql)
            ('etl_matcher', 'person_events',         'INSERT, DELETE'),
            ('etl_matcher', 'person_event_relay',    'UPDATE'),
            -- operator (`etl persons …`): a decision is applied at once in
            -- the operator's process, recomputing the persons it touches
            -- (matcher/src/operator.rs), so the matcher's person-side
            -- writes; `etl dlq retry|drop`: the dead letter's status, and a
            -- matcher's dead letter goes back into record_changes.
            ('etl_operator', 'persons',              'INSERT, UPDATE'),
            ('etl_operator', 'person_memberships',   'INSERT, UPDATE'),
            ('etl_operator', 'match_pairs',          'INSERT, UPDATE, DELETE'),
            ('etl_operator', 'review_items',         'INSERT, UPDATE, DELETE'),
            ('etl_operator', 'match_decisions',      'INSERT, UPDATE'),
            ('etl_operator', 'match_audit_events',   'INSERT'),
            ('etl_operator', 'person_events',        'INSERT'),
            ('etl_operator', 'dead_letters',         'UPDATE'),
            ('etl_operator', 'record_changes',       'INSERT'),
            -- `etl sources register`: the loader accepts only registered
            -- sources and never adds one itself.
            ('etl_operator', 'sources',              'INSERT'),
            -- migrations/20261206200001_personal_data_access.sql
            ('etl_operator', 'personal_data_access', 'INSERT'),
            -- `etl identity client add|revoke` (migrations/20261206213001_identity.sql)
            ('etl_operator', 'identity_clients',     'INSERT, UPDATE'),
            -- identity service: decisions over HTTP, the same person-side
            -- writes as the operator's (identity/src/decisions.rs), and the
            -- access log
            ('etl_identity', 'persons',              'INSERT, UPDATE'),
            ('etl_identity', 'person_memberships',   'INSERT, UPDATE'),
            ('etl_identity', 'match_pairs',          'INSERT, UPDATE, DELETE'),
            ('etl_identity', 'review_items',         'INSERT, UPDATE, DELETE'),
            ('etl_identity', 'match_decisions',      'INSERT, UPDATE'),
            ('etl_identity', 'match_audit_events',   'INSERT'),
            ('etl_identity', 'personal_data_access', 'INSERT')
        ) AS t(role, tbl, privileges)
    LOOP
        IF to_regclass(format('public.%I', g.tbl)) IS NOT NULL THEN
            EXECUTE format('GRANT %s ON public.%I TO %I', g.privileges, g.tbl, g.role);
        END IF;
    END LOOP;
END
$writes$;

-- Sources are registered by operators (`etl sources register`), never by
-- the loader, whatever an older version of this script granted it.
DO $sources$
BEGIN
    IF to_regclass('public.sources') IS NOT NULL THEN
        REVOKE INSERT, UPDATE, DELETE ON public.sources FROM etl_loader;
    END IF;
END
$sources$;

-- The access log is read by the owner only (the default privileges above
-- gave every role SELECT on it).
DO $access_log$
BEGIN
    IF to_regclass('public.personal_data_access') IS NOT NULL THEN
        REVOKE SELECT ON public.personal_data_access
            FROM PUBLIC, etl_loader, etl_matcher, etl_readonly, etl_operator, etl_identity;
    END IF;
END
$access_log$;
