-- Search ranks by tier (every word in the name, then anywhere; `search.rs`), each tier read
-- newest first and stopped when a page is full. The name gets a vector and index of its own
-- rather than a weight in `search`: the planner knows how common a word is in one vector's
-- column, but not under a weight, and that is what tells it whether to walk the newest
-- products until a page is full (a common word) or to collect the few matches from GIN (a
-- rare one).
ALTER TABLE products ADD COLUMN name_search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple'::regconfig, search_folded(name))
) STORED;

CREATE INDEX products_name_search ON products USING GIN (name_search);
