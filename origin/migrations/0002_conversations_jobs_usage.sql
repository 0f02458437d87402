-- Conversations and their messages, the durable job queue, and usage records.
-- Same SQL on SQLite and Postgres (see 0001).

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    model TEXT,
    system_prompt TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- A subject's conversations, newest first, paged by (created_at_ms, id).
CREATE INDEX conversations_by_subject ON conversations (subject, created_at_ms, id);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- One order per conversation; also the index for paging its messages.
    UNIQUE (conversation_id, seq)
);

-- The queue. `status` is queued, processing, completed, failed (the dead-letter
-- queue: out of attempts or not retryable) or cancelled. `visible_at_ms` is when
-- a queued job may run (backoff) or when a processing job's lease runs out.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    idempotency_key TEXT,
    priority BIGINT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    request TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    lease TEXT,
    visible_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT,
    -- A repeated submission with the same key returns the first job.
    UNIQUE (subject, idempotency_key)
);

-- The next job to claim: by status, then priority, then when it becomes visible.
CREATE INDEX jobs_claim ON jobs (status, priority, visible_at_ms);
-- Retention cleanup and the dead-letter listing.
CREATE INDEX jobs_finished ON jobs (status, finished_at_ms);

CREATE TABLE usage_records (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    model TEXT NOT NULL,
    deployment TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    estimated BOOLEAN NOT NULL,
    cost_microdollars BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- A subject's spend over time.
CREATE INDEX usage_by_subject ON usage_records (subject, created_at_ms);
