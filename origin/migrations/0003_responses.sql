-- Stored Responses API responses (`store: true`, the default), one subject
-- each. `context` holds the input items the response was generated from,
-- earlier turns' included, so a `previous_response_id` continues it with one
-- read whichever provider serves the next turn. Same SQL on SQLite and Postgres.

CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    context TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE INDEX responses_by_subject ON responses (subject, created_at_ms);
