-- An order exists from the first item put in the cart (status 'cart'), as in the original Ekart.
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('cart', 'placed', 'reserved', 'completed', 'failed', 'cancelled')),
    currency TEXT,
    total_minor BIGINT NOT NULL DEFAULT 0,
    payment_method TEXT,
    payment_reference TEXT,
    failure_kind TEXT,
    failure_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    placed_at BIGINT,
    completed_at BIGINT,
    cancelled_at BIGINT,
    refunded_at BIGINT
);
CREATE UNIQUE INDEX orders_one_cart_per_user ON orders (user_id) WHERE status = 'cart';
CREATE INDEX orders_by_user ON orders (user_id, created_at);
CREATE INDEX orders_by_status ON orders (status, created_at);

CREATE TABLE order_lines (
    order_id TEXT NOT NULL REFERENCES orders (id),
    product_id TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0 AND quantity <= 1000),
    unit_price_minor BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

-- Each status an order went through, for its timeline.
CREATE TABLE order_history (
    order_id TEXT NOT NULL REFERENCES orders (id),
    status TEXT NOT NULL,
    note TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX order_history_by_order ON order_history (order_id, at);

-- Idempotency-Key of POST /api/checkout: the same key from the same user means the same order.
CREATE TABLE idempotency_keys (
    user_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    order_id TEXT NOT NULL REFERENCES orders (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, idem_key)
);
