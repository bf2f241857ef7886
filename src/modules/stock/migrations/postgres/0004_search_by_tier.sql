-- Search ranks by tier (every word in the name, then anywhere; `search.rs`), each tier read
-- newest first and stopped when a page is full. Whether that read should walk the newest
-- products until a page is full (a common word) or collect the few matches from GIN (a rare
-- one) is the planner's choice, made from how common the query's lexemes are. For a prefix
-- (`'lamp':*`) it has no statistics and guesses, and a wrong guess walked all million
-- products for a word no product has (860 ms). So each word is stored with its beginnings
-- (up to eight letters, as SQLite's prefix index keeps them), a word typed so far is an exact
-- lexeme, and the planner's statistics for it are real (0.1 to 2 ms a tier at a million).
--
-- The name gets a vector of its own rather than a weight in `search`: the planner knows how
-- common a lexeme is in one vector's column, not under a weight. The GIN indexes write
-- straight into their trees (`fastupdate = off`): a pending list makes every search scan it
-- (3 ms at a million products until a vacuum merges it), and products are searched far more
-- often than written.
CREATE FUNCTION search_prefixes(t text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN coalesce((
        SELECT array_to_tsvector(array_agg(DISTINCT prefix))
        FROM unnest(tsvector_to_array(to_tsvector('simple'::regconfig, search_folded(t)))) AS word,
             LATERAL (SELECT left(word, n) FROM generate_series(1, 8) AS n WHERE n < length(word)
                      UNION ALL SELECT word) AS prefixes (prefix)
    ), ''::tsvector);

DROP INDEX products_search;
ALTER TABLE products DROP COLUMN search;
ALTER TABLE products ADD COLUMN search tsvector GENERATED ALWAYS AS (
    search_prefixes(name || ' ' || sku || ' ' || description)
) STORED;
ALTER TABLE products ADD COLUMN name_search tsvector GENERATED ALWAYS AS (
    search_prefixes(name)
) STORED;
CREATE INDEX products_search ON products USING GIN (search) WITH (fastupdate = off);
CREATE INDEX products_name_search ON products USING GIN (name_search) WITH (fastupdate = off);
