-- Search ranks by tier (every word in the name, then anywhere; `search.rs`), each tier read
-- newest first and stopped when a page is full. FTS5 reads the name tier from the index of
-- 0002 with a column filter (`name : (...)`). What costs is the prefix: a word typed so far
-- ("lamp"*) is answered from a prefix index of its length, read like one term and stopped at
-- the limit; with no index of that length FTS5 first merges the lists of every term that
-- starts so, the whole of them (19 ms for a word in every description of a million
-- products, 0.1 ms from the index). Prefixes up to eight letters cover most words as they
-- are typed, for about 60% more index (measured at a million products: 227 MB to 366 MB).
DROP TABLE product_search;
CREATE VIRTUAL TABLE product_search USING fts5(
    name, sku, description,
    content = 'products', content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '1 2 3 4 5 6 7 8'
);
INSERT INTO product_search (product_search) VALUES ('rebuild');
