-- The journeys list at a million sessions: everyone's and one shopper's are each read through
-- an index in their order, newest first, ending in the unique id so keyset paging starts a
-- page where the last one ended.
DROP INDEX sessions_by_user;
CREATE INDEX sessions_by_user ON sessions (user_sub, started_at, id);
CREATE INDEX sessions_by_time ON sessions (started_at, id);
