-- One payment per order: a repeated request can never charge twice.
CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    instrument TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'refunded')),
    reference TEXT NOT NULL,
    decline_code TEXT,
    decline_reason TEXT,
    created_at BIGINT NOT NULL,
    refunded_at BIGINT,
    refund_reference TEXT
);
CREATE INDEX payments_by_user ON payments (user_id);
