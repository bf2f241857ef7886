-- Full-text search over the catalog: a weighted `tsvector` of each product's name (A), SKU (B)
-- and description (D), a generated column, so PostgreSQL keeps it in step with every write in
-- the same transaction, indexed with GIN. Text is folded the way SQLite's FTS5 tokenizer folds
-- it (case, Latin accents, anything not a letter or digit separates words), so a query finds
-- the same products on both engines.
CREATE FUNCTION search_folded(t text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN regexp_replace(
        lower(translate(t, 'ÀàáÁÂâãÃÄäåÅĀāăĂĄąçÇćĆĈĉċĊČčďĎđĐÈèÉéÊêËëēĒĔĕĖėęĘĚěĜĝğĞĠġģĢĤĥĦħìÌÍíîÎÏïĨĩīĪĭĬĮįıIĵĴĶķĺĹļĻĽľĿŀŁłÑñŃńņŅŇňŉÒòÓóÔôÕõöÖØøŌōŏŎŐőŔŕŗŖŘřŚśŜŝşŞŠšșȘţŢťŤŧŦțȚÙùÚúûÛÜüũŨūŪŬŭůŮŰűųŲŴŵÝýŸÿŶŷŹźżŻŽž', 'aaaaaaaaaaaaaaaaaaccccccccccddddeeeeeeeeeeeeeeeeeegggggggghhhhiiiiiiiiiiiiiiiiiijjkkllllllllllnnnnnnnnnoooooooooooooooooorrrrrrssssssssssttttttttuuuuuuuuuuuuuuuuuuuuwwyyyyyyzzzzzz')),
        '[^[:alnum:]]+', ' ', 'g');

ALTER TABLE products ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('simple'::regconfig, search_folded(name)), 'A') ||
    setweight(to_tsvector('simple'::regconfig, search_folded(sku)), 'B') ||
    setweight(to_tsvector('simple'::regconfig, search_folded(description)), 'D')
) STORED;

CREATE INDEX products_search ON products USING GIN (search);
