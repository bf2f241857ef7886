-- The admin's order list at a million orders: each way it is read (everyone's, one status,
-- one shopper's) walks an index in its order, newest first, ending in the unique id so keyset
-- paging starts a page where the last one ended.
DROP INDEX orders_by_user;
DROP INDEX orders_by_status;
CREATE INDEX orders_by_user ON orders (user_id, created_at, id);
CREATE INDEX orders_by_status ON orders (status, created_at, id);
CREATE INDEX orders_by_time ON orders (created_at, id);
-- An order number is found by prefix: a range over the id in byte order, which the primary
-- key gives only when the database's collation is "C".
CREATE INDEX orders_by_number ON orders ((id COLLATE "C"));

-- Every shopper who has an order, so the admin's search by part of a shopper's id looks in
-- this short list (through a trigram index, which finds any part of three letters or more)
-- instead of reading every order. Tables named `derived_*` are kept by the database's
-- own triggers (`ekart data copy` leaves them to the target's); `SET search_path FROM CURRENT`
-- lets the trigger find its table whichever schema the writing connection has in its path.
CREATE TABLE derived_shoppers (user_id TEXT PRIMARY KEY);
INSERT INTO derived_shoppers (user_id) SELECT DISTINCT user_id FROM orders;
CREATE FUNCTION note_shoppers() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO derived_shoppers (user_id) SELECT DISTINCT user_id FROM added
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER orders_shopper_known AFTER INSERT ON orders
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION note_shoppers();

-- pg_trgm is a trusted extension: a role that may create objects in the database may add it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX derived_shoppers_trigrams ON derived_shoppers USING GIN (lower(user_id) gin_trgm_ops);
