-- Leads, trials and one-time account links (issue 15 §5).
-- A lead is a customer in stage `lead`; this keeps what the public form asked beyond the
-- customer row, the operator's notes and plan suggestion, and the pilot waiting list.
CREATE TABLE ops_leads (
    customer_id TEXT PRIMARY KEY,
    contact_name TEXT NOT NULL,
    email TEXT NOT NULL,
    company TEXT NOT NULL,
    use_case_text TEXT NOT NULL,
    expected_monthly_tasks BIGINT NOT NULL,
    source_digest TEXT NOT NULL,
    notes TEXT NOT NULL DEFAULT '',
    suggested_plan TEXT,
    waiting_since BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX ops_leads_created ON ops_leads(created_at);
CREATE INDEX ops_leads_waiting ON ops_leads(waiting_since);

-- A trial granted by the operator: until when, and how many tasks it includes.
CREATE TABLE account_trials (
    customer_id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    tasks BIGINT NOT NULL,
    granted_by TEXT NOT NULL
);

-- One-time links (set a password, reset it, accept an invite): only the token's digest
-- is kept; a link is used once and expires.
CREATE TABLE account_tokens (
    digest TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    user_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX account_tokens_user ON account_tokens(user_id);

-- Account mail (a reset link, a member's invite) goes to one user's address, not to
-- the customer's contact: the message names its recipient.
ALTER TABLE lifecycle_messages ADD COLUMN recipient TEXT;
