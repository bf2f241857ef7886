CREATE TABLE products (
    id TEXT PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    price_minor BIGINT NOT NULL CHECK (price_minor > 0),
    currency TEXT NOT NULL,
    on_hand BIGINT NOT NULL CHECK (on_hand >= 0),
    reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX products_name ON products (name);
CREATE INDEX products_price ON products (price_minor);
CREATE INDEX products_created ON products (created_at);

-- What each order holds: reserved, then committed (sold), released (order failed) or
-- returned (order cancelled after it was sold).
CREATE TABLE reservations (
    order_id TEXT NOT NULL,
    product_id TEXT NOT NULL REFERENCES products (id),
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released', 'returned')),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
