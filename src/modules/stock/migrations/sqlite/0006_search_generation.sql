-- A number that changes whenever what a search matches or sorts by does (a product added,
-- removed, or its SKU, name, description or price changed), so search pages answered lately
-- can be kept until it moves (`StockStore`'s search cache). Stock levels do not move it:
-- a cached page's products are read afresh.
INSERT INTO derived_counts (name, n) VALUES ('search_generation', 0);

CREATE TRIGGER products_searched_insert AFTER INSERT ON products BEGIN
    UPDATE derived_counts SET n = n + 1 WHERE name = 'search_generation';
END;
CREATE TRIGGER products_searched_delete AFTER DELETE ON products BEGIN
    UPDATE derived_counts SET n = n + 1 WHERE name = 'search_generation';
END;
CREATE TRIGGER products_searched_update AFTER UPDATE OF sku, name, description, price_minor
    ON products BEGIN
    UPDATE derived_counts SET n = n + 1 WHERE name = 'search_generation';
END;
