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
-- target's triggers. One statement-level trigger per write, so a bulk insert adds its count
-- once instead of updating the row once per product.
CREATE TABLE derived_counts (name TEXT PRIMARY KEY, n BIGINT NOT NULL);
INSERT INTO derived_counts (name, n) SELECT 'products', COUNT(*) FROM products;

-- `SET search_path FROM CURRENT`: the trigger finds its table whichever schema the writing
-- connection has in its path (a data copy writes with qualified names).
CREATE FUNCTION count_added_products() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE derived_counts SET n = n + (SELECT COUNT(*) FROM added) WHERE name = 'products';
    RETURN NULL;
END $$;

CREATE FUNCTION count_removed_products() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE derived_counts SET n = n - (SELECT COUNT(*) FROM removed) WHERE name = 'products';
    RETURN NULL;
END $$;

CREATE TRIGGER products_counted_insert AFTER INSERT ON products
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION count_added_products();
CREATE TRIGGER products_counted_delete AFTER DELETE ON products
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION count_removed_products();
