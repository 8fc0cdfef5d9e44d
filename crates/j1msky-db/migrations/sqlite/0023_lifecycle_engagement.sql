-- Surveys, testimonials and newsletters of the lifecycle engine (owned by j1msky-lifecycle).
-- A survey is answered once: its link carries a random token stored only as a digest.
CREATE TABLE lifecycle_surveys (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    kind TEXT NOT NULL,
    token_digest TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    answered_at BIGINT,
    score BIGINT,
    comment TEXT,
    testimonial TEXT,
    publish_consent BIGINT NOT NULL DEFAULT 0,
    approved_at BIGINT,
    approved_by TEXT
);
CREATE INDEX lifecycle_surveys_customer ON lifecycle_surveys(customer_id, answered_at);

-- A newsletter is queued in batches; each recipient's message is unique on
-- (newsletter:<id>, 'newsletter', 0) per customer through lifecycle_messages.
CREATE TABLE lifecycle_newsletters (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'draft',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    send_requested_at BIGINT,
    queued_through TEXT,
    finished_at BIGINT
);

CREATE INDEX lifecycle_todos_customer ON lifecycle_todos(customer_id, done_at);
