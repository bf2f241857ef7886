-- The admin's order list at a million orders: each way it is read (everyone's, one status,
-- one shopper's) walks an index in its order, newest first, ending in the unique id so keyset
-- paging starts a page where the last one ended. An order number is found by prefix through
-- the primary key (SQLite compares text byte by byte).
DROP INDEX orders_by_user;
DROP INDEX orders_by_status;
CREATE INDEX orders_by_user ON orders (user_id, created_at, id);
CREATE INDEX orders_by_status ON orders (status, created_at, id);
CREATE INDEX orders_by_time ON orders (created_at, id);

-- Every shopper who has an order, so the admin's search by part of a shopper's id looks in
-- this short list (through a trigram index, which finds any part of three letters or more)
-- instead of reading every order. Tables named `derived_*` are kept by the database's
-- own triggers (`ekart data copy` leaves them to the target's).
CREATE TABLE derived_shoppers (user_id TEXT PRIMARY KEY);
INSERT INTO derived_shoppers (user_id) SELECT DISTINCT user_id FROM orders;
CREATE TRIGGER orders_shopper_known AFTER INSERT ON orders BEGIN
    INSERT INTO derived_shoppers (user_id) VALUES (new.user_id) ON CONFLICT DO NOTHING;
END;

CREATE VIRTUAL TABLE derived_shopper_search USING fts5(
    user_id, content = 'derived_shoppers', tokenize = 'trigram'
);
CREATE TRIGGER derived_shoppers_indexed AFTER INSERT ON derived_shoppers BEGIN
    INSERT INTO derived_shopper_search (rowid, user_id) VALUES (new.rowid, new.user_id);
END;
INSERT INTO derived_shopper_search (derived_shopper_search) VALUES ('rebuild');
