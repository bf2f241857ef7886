-- Search ranks by tier (every word in the name, then anywhere; `search.rs`). FTS5 reads the
-- name tier from the index of 0002 with a column filter (`name : (...)`), so SQLite needs
-- nothing new; the version is kept so both engines record the same schema versions.
SELECT 1;
