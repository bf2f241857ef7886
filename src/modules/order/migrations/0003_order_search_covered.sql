-- A search by shopper reads each matching shopper's orders newest first and counts them up
-- to the cap (`OrderStore::list`). With the status in the index too, both are read from the
-- index alone: no visit to the table for each order to learn it is not a cart (at a million
-- orders, 2.8 µs an order on SQLite, 1,001 of them for each count).
DROP INDEX orders_by_user;
CREATE INDEX orders_by_user ON orders (user_id, created_at, id, status);
