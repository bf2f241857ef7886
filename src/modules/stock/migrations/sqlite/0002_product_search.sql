-- Full-text search over the catalog: an FTS5 index of each product's name, SKU and
-- description, kept in step with `products` by triggers, so every write that changes what a
-- product is called changes its index entry in the same transaction. The tokenizer folds case
-- and accents ("eclair" finds "Éclair"); the prefix indexes make search-as-you-type cheap.
CREATE VIRTUAL TABLE product_search USING fts5(
    name, sku, description,
    content = 'products', content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '1 2 3'
);

CREATE TRIGGER product_search_insert AFTER INSERT ON products BEGIN
    INSERT INTO product_search (rowid, name, sku, description)
    VALUES (new.rowid, new.name, new.sku, new.description);
END;

CREATE TRIGGER product_search_delete AFTER DELETE ON products BEGIN
    INSERT INTO product_search (product_search, rowid, name, sku, description)
    VALUES ('delete', old.rowid, old.name, old.sku, old.description);
END;

-- Stock levels change all day; only a change to the searched text touches the index.
CREATE TRIGGER product_search_update AFTER UPDATE OF name, sku, description ON products BEGIN
    INSERT INTO product_search (product_search, rowid, name, sku, description)
    VALUES ('delete', old.rowid, old.name, old.sku, old.description);
    INSERT INTO product_search (rowid, name, sku, description)
    VALUES (new.rowid, new.name, new.sku, new.description);
END;

INSERT INTO product_search (product_search) VALUES ('rebuild');
