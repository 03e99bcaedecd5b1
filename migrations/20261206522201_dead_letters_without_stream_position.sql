-- A dead letter of a message whose stream position is unknown (its
-- JetStream metadata could not be read) has no natural key: it takes
-- stream_seq = -nextval of this sequence, unique and never a real stream
-- sequence (those start at 1), so two such messages never collide.
CREATE SEQUENCE dead_letters_without_position;
