-- Who looked at whose personal data through `etl` (`persons show
-- --show-personal-data`, `dlq show --show-personal-data`, …): one row per
-- view, written before the data is printed. It names the people (the
-- database user, the OS user) and what was viewed by identifiers only
-- (person id, `source:source_id`, dead letter id, stream sequence), never a
-- value. Append-only: no one updates, deletes or truncates it (the owner
-- included, short of disabling the trigger, which only the owner can).
-- Readable by the owner (`etl access-log list`); deploy/postgres/roles.sql
-- lets etl_operator insert only.
CREATE TABLE personal_data_access (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    -- Set by the trigger below from the session, whatever the client sends.
    db_user    text NOT NULL DEFAULT session_user,
    client_addr inet DEFAULT inet_client_addr(),
    -- The operating-system user that ran `etl` (as the client reports it).
    os_user    text NOT NULL,
    -- The command, e.g. `persons show`.
    command    text NOT NULL,
    -- What was viewed: `person 123`, `dead letter 45`, `QMS_REJECTS seq 7`.
    subject    text NOT NULL,
    -- The records shown, as `source:source_id`.
    records    text[] NOT NULL DEFAULT '{}'
);

CREATE INDEX personal_data_access_at ON personal_data_access (at);

CREATE FUNCTION personal_data_access_who() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.at := now();
    NEW.db_user := session_user;
    NEW.client_addr := inet_client_addr();
    RETURN NEW;
END $$;
CREATE TRIGGER personal_data_access_who BEFORE INSERT ON personal_data_access
    FOR EACH ROW EXECUTE FUNCTION personal_data_access_who();

CREATE FUNCTION personal_data_access_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'personal_data_access is append-only';
END $$;
CREATE TRIGGER personal_data_access_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON personal_data_access
    FOR EACH STATEMENT EXECUTE FUNCTION personal_data_access_append_only();
