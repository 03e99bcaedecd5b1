-- Person events: the transactional outbox of identity changes.
--
-- Every transaction that changes persons (a matcher batch, a full re-match,
-- an operator decision, a lock) writes one row per person event here, in
-- the same transaction as the change: created, records_joined,
-- records_left, merged_into, split, retired, locked, unlocked. A relay in
-- the matcher service publishes them to NATS (`persons.<kind>`,
-- matcher/src/events.rs) and records how far it got in
-- `person_event_relay`. Rows are kept for `events.retention` after they
-- were published, for `etl events replay`.
--
-- No personal data: person ids, record sources and source ids only.

CREATE TABLE person_events (
    -- Commit order: every writer holds the matcher's advisory lock (the
    -- trigger below takes it if the writer does not), so a transaction
    -- draws its ids only after the one before it committed or rolled
    -- back. An id the relay sees therefore has every smaller id either
    -- visible already or never to be (a rolled-back transaction's gap):
    -- publishing in id order from a cursor skips nothing. The sequence
    -- must not cache values per session (CACHE 1, the default), or two
    -- connections would draw interleaved ranges.
    event_id        bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('created', 'records_joined', 'records_left',
                        'merged_into', 'split', 'retired', 'locked', 'unlocked')),
    person_id       bigint NOT NULL,
    -- The other person of the event, when there is one (see the kinds in
    -- matcher/README.md): the person merged into, split off, or the single
    -- person the records came from or went to.
    other_person_id bigint,
    -- The records involved: [{"source", "source_id", "from_person_id" or
    -- "to_person_id"}], ids only. `json`, not `jsonb`: stored as written
    -- and published as stored, never queried inside.
    records         json NOT NULL DEFAULT '[]',
    -- When the row was written (the end of its transaction's work, just
    -- before the commit): not `now()`, which is the transaction's start.
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- For the pruning and `etl events replay --from-time`: rows are appended
-- in time order, so a BRIN index (a few pages, next to nothing per row)
-- finds a time's rows.
CREATE INDEX person_events_created_at ON person_events USING brin (created_at);

-- How far the relay has published: every event up to this id is on the
-- bus (acknowledged by the stream). One row.
CREATE TABLE person_event_relay (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    published_up_to bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO person_event_relay DEFAULT VALUES;

-- Once per statement (a COPY of a re-match's events included): take the
-- matcher lock (engine::MATCH_LOCK; re-entrant, so free for the matcher,
-- which holds it already) so that no writer can draw ids out of commit
-- order, and wake the relay at commit.
CREATE FUNCTION person_events_ordered() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7881708793177141761);
    PERFORM pg_notify('person_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER person_events_ordered BEFORE INSERT ON person_events
    FOR EACH STATEMENT EXECUTE FUNCTION person_events_ordered();
