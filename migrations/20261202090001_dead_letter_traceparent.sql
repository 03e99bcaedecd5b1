-- The W3C `traceparent` of the message a dead letter came from, so that
-- `etl dlq retry` re-publishes it into the same trace. NULL: the message
-- had none.
ALTER TABLE dead_letters ADD COLUMN traceparent text;
