-- The matcher's Fellegi–Sunter models (matcher/src/model), one row per
-- trained version (`etl model train`). The version in use is
-- `match_state.model_version`; NULL means the priors shipped in the code.
CREATE TABLE match_models (
    version       bigserial PRIMARY KEY,
    trained_at    timestamptz NOT NULL DEFAULT now(),
    records       bigint NOT NULL,
    random_pairs  bigint NOT NULL,
    blocked_pairs bigint NOT NULL,
    -- EM iterations of each pass (names, identifiers, prior).
    iterations    integer[] NOT NULL,
    -- The prior and each field's m and u per level.
    params        jsonb NOT NULL
);

-- How many of the training's records held each surname, first name and
-- patronymic (the frequency adjustment of an exact agreement).
CREATE TABLE match_model_frequencies (
    version bigint NOT NULL REFERENCES match_models ON DELETE CASCADE,
    field   text NOT NULL,
    value   text NOT NULL,
    records integer NOT NULL,
    PRIMARY KEY (version, field, value)
);

ALTER TABLE match_state ADD COLUMN model_version bigint REFERENCES match_models;
