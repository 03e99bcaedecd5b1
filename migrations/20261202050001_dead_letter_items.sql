-- A bus message may carry several envelopes (a batch message, see
-- proto::batch). A bad record of a batch is dead-lettered alone: its row
-- names the message's stream sequence and the record's index in it (0 for a
-- single-envelope message, and for a message refused whole).
ALTER TABLE dead_letters ADD COLUMN item integer NOT NULL DEFAULT 0 CHECK (item >= 0);
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_stream_stream_seq_key;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_stream_stream_seq_item_key
    UNIQUE (stream, stream_seq, item);
