-- Tasks customers hand to agent teams. The table is also the queue: a task is claimed
-- with a lease (owner, lease_until) fenced by its claim count (attempts).
CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    team            TEXT NOT NULL,
    category        TEXT NOT NULL,
    template        TEXT,
    title           TEXT NOT NULL,
    prompt          TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,
    not_before      INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    wait_reason     TEXT,
    error           TEXT,
    result          TEXT,
    cost_micros     INTEGER NOT NULL DEFAULT 0,
    tier            TEXT,
    charge_micros   INTEGER,
    idempotency_key TEXT,
    queued_at       INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX tasks_claim ON tasks(state, priority, not_before);
CREATE INDEX tasks_customer ON tasks(customer_id, queued_at);

-- Each completed step of a task's pipeline; a resumed task starts after the last one.
CREATE TABLE task_steps (
    task_id         TEXT NOT NULL REFERENCES tasks(id),
    step            INTEGER NOT NULL,
    role            TEXT NOT NULL,
    model           TEXT NOT NULL,
    output          TEXT NOT NULL,
    input_tokens    INTEGER NOT NULL,
    output_tokens   INTEGER NOT NULL,
    cost_micros     INTEGER NOT NULL,
    latency_micros  INTEGER NOT NULL,
    attempt         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (task_id, step)
);

-- Pay-per-task charges: one per succeeded task, written with its success.
CREATE TABLE usage_charges (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    task_id         TEXT NOT NULL UNIQUE REFERENCES tasks(id),
    tier            TEXT NOT NULL,
    amount_micros   INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    reported_at     INTEGER
);
CREATE INDEX usage_charges_customer ON usage_charges(customer_id, created_at);
