-- A number that changes whenever what a search matches or sorts by does (a product added,
-- removed, or its SKU, name, description or price changed), so search pages answered lately
-- can be kept until it moves (`StockStore`'s search cache). Stock levels do not move it:
-- a cached page's products are read afresh.
INSERT INTO derived_counts (name, n) VALUES ('search_generation', 0);

-- Once per statement: a bulk import moves it once.
CREATE FUNCTION next_search_generation() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE derived_counts SET n = n + 1 WHERE name = 'search_generation';
    RETURN NULL;
END $$;

CREATE TRIGGER products_searched AFTER INSERT OR DELETE OR UPDATE OF sku, name, description,
    price_minor ON products FOR EACH STATEMENT EXECUTE FUNCTION next_search_generation();
