-- When a session was last used, for idle expiry (NULL: not since it started).
ALTER TABLE sessions ADD COLUMN last_seen_at BIGINT;
