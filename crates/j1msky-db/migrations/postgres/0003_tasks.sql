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
    priority        BIGINT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    failures        BIGINT NOT NULL DEFAULT 0,
    not_before      BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    wait_reason     TEXT,
    error           TEXT,
    result          TEXT,
    cost_micros     BIGINT NOT NULL DEFAULT 0,
    tier            TEXT,
    charge_micros   BIGINT,
    idempotency_key TEXT,
    queued_at       BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX tasks_claim ON tasks(state, priority, not_before);
CREATE INDEX tasks_customer ON tasks(customer_id, queued_at);

-- Each completed step of a task's pipeline; a resumed task starts after the last one.
CREATE TABLE task_steps (
    task_id         TEXT NOT NULL REFERENCES tasks(id),
    step            BIGINT NOT NULL,
    role            TEXT NOT NULL,
    model           TEXT NOT NULL,
    output          TEXT NOT NULL,
    input_tokens    BIGINT NOT NULL,
    output_tokens   BIGINT NOT NULL,
    cost_micros     BIGINT NOT NULL,
    latency_micros  BIGINT NOT NULL,
    attempt         BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (task_id, step)
);

-- Pay-per-task charges: one per succeeded task, written with its success.
CREATE TABLE usage_charges (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    task_id         TEXT NOT NULL UNIQUE REFERENCES tasks(id),
    tier            TEXT NOT NULL,
    amount_micros   BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    reported_at     BIGINT
);
CREATE INDEX usage_charges_customer ON usage_charges(customer_id, created_at);
