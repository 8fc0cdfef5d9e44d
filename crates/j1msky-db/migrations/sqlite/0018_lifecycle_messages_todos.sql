-- The lifecycle engine's message queue and staff to-dos (owned by j1msky-lifecycle).
-- A message is unique per (source, step, occurrence): queueing it twice queues it once.
CREATE TABLE lifecycle_messages (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    source TEXT NOT NULL,
    step TEXT NOT NULL,
    occurrence BIGINT NOT NULL,
    category TEXT NOT NULL,
    template TEXT NOT NULL,
    subject TEXT NOT NULL,
    body_text TEXT NOT NULL,
    body_html TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    not_before BIGINT NOT NULL,
    stale_at BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    message_id TEXT NOT NULL,
    to_addr TEXT,
    sent_at BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (source, step, occurrence)
);
CREATE INDEX lifecycle_messages_due ON lifecycle_messages(state, not_before);
CREATE INDEX lifecycle_messages_customer ON lifecycle_messages(customer_id, created_at);

CREATE TABLE lifecycle_todos (
    id TEXT PRIMARY KEY,
    customer_id TEXT REFERENCES customers(id),
    reason TEXT NOT NULL,
    dedupe_key TEXT NOT NULL UNIQUE,
    due_at BIGINT NOT NULL,
    assignee TEXT,
    done_at BIGINT,
    done_by TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX lifecycle_todos_open ON lifecycle_todos(done_at, due_at);
