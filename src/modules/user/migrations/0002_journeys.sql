-- Sign-in sessions and the click-stream journey recorded in each.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_sub TEXT NOT NULL REFERENCES users (sub),
    started_at BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE INDEX sessions_by_user ON sessions (user_sub, started_at);

-- One row per journey event; the event id is the inbox: a redelivered event is a conflict.
CREATE TABLE journey_steps (
    event_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    -- page | click | order
    kind TEXT NOT NULL,
    -- the page's path, the clicked control's action, or the order's outcome
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    detail TEXT,
    amount_minor BIGINT,
    currency TEXT
);
CREATE INDEX journey_steps_by_session ON journey_steps (session_id, at, event_id);

-- Which session placed which order, so the saga's later events join the right journey.
CREATE TABLE session_orders (
    order_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL
);
