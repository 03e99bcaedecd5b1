-- The steward console (console/): its accounts, sessions and the notes
-- stewards leave on review items.

-- A steward account. The password is kept as an argon2id PHC string only.
-- An account is disabled (`disabled_at`), never deleted: the audit and the
-- access log name it.
CREATE TABLE console_users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    -- steward: reads and decides; viewer: reads; administrator: also
    -- manages accounts.
    role          text NOT NULL CHECK (role IN ('steward', 'viewer', 'administrator')),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);

-- A signed-in browser. The cookie holds a random token; only its SHA-256
-- is stored (256 random bits: a slow hash would add nothing). `csrf` is the
-- token every state-changing request of the session must carry.
CREATE TABLE console_sessions (
    token_hash bytea PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES console_users (id),
    csrf       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- A steward's note on a review item (free text: may hold personal data, so
-- it is shown only on the item's page, whose views are logged).
CREATE TABLE review_notes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id    bigint NOT NULL REFERENCES review_items (id),
    author     text NOT NULL,
    note       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX review_notes_item ON review_notes (item_id);

-- The console's queue lists open items most probable first, a page at a
-- time, out of thousands.
CREATE INDEX review_items_open_by_score ON review_items (score DESC, id) WHERE status = 'open';
