-- A charge is recorded before the provider is asked and settled after it answers, each in a
-- transaction of its own, so no database transaction waits on the provider (`settle.rs`):
-- `pending` (the intent: asked for, the provider not yet heard), then `succeeded` or `failed`;
-- a refund goes `succeeded` → `refunding` → `refunded` the same way. What the provider needs
-- to be asked again after a crash is kept with the intent: the payment method (`method`, as the
-- order sent it: a card's last four digits at most, never its number) and the trace the
-- request came in (`traceparent`), which the outcome's event continues.
-- SQLite cannot change a CHECK constraint in place, so the table is made again.
CREATE TABLE payments_next (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    instrument TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'succeeded', 'failed', 'refunding', 'refunded')),
    reference TEXT NOT NULL,
    decline_code TEXT,
    decline_reason TEXT,
    created_at BIGINT NOT NULL,
    refunded_at BIGINT,
    refund_reference TEXT,
    method TEXT,
    traceparent TEXT
);
INSERT INTO payments_next (id, order_id, user_id, mode, instrument, amount_minor, currency,
    status, reference, decline_code, decline_reason, created_at, refunded_at, refund_reference)
SELECT id, order_id, user_id, mode, instrument, amount_minor, currency, status, reference,
    decline_code, decline_reason, created_at, refunded_at, refund_reference
FROM payments;
DROP TABLE payments;
ALTER TABLE payments_next RENAME TO payments;
CREATE INDEX payments_by_user ON payments (user_id);
-- What is left to settle, read at start (after a crash) and nowhere else.
CREATE INDEX payments_unsettled ON payments (status) WHERE status IN ('pending', 'refunding');
