-- Keyset paging walks each of the catalog's orders through an index that ends in the unique
-- id, so a page deep in the list starts where the previous one ended instead of counting its
-- way there.
DROP INDEX products_name;
DROP INDEX products_price;
DROP INDEX products_created;
CREATE INDEX products_name ON products (name, id);
CREATE INDEX products_price ON products (price_minor, id);
CREATE INDEX products_created ON products (created_at, id);

-- Totals kept as rows change, so a page of a large catalog does not count it. Tables named
-- `derived_*` are kept by the database's own triggers: `ekart data copy` leaves them to the
-- target's triggers.
CREATE TABLE derived_counts (name TEXT PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO derived_counts (name, n) SELECT 'products', COUNT(*) FROM products;

CREATE TRIGGER products_counted_insert AFTER INSERT ON products BEGIN
    UPDATE derived_counts SET n = n + 1 WHERE name = 'products';
END;

CREATE TRIGGER products_counted_delete AFTER DELETE ON products BEGIN
    UPDATE derived_counts SET n = n - 1 WHERE name = 'products';
END;
