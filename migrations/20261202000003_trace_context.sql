-- The W3C `traceparent` of the message that made each change, so that the
-- matcher's work on it joins the publisher's trace. NULL: the message had
-- none (published before tracing, or by a replay).
ALTER TABLE record_changes ADD COLUMN traceparent text;
