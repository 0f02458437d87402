-- Migrations run unchanged on SQLite and Postgres: keep to the SQL both speak.
-- Who may call, and the keys they call with. Keys are stored as SHA-256 hashes only.
CREATE TABLE users (
    subject TEXT PRIMARY KEY,
    tier TEXT NOT NULL CHECK (tier IN ('free', 'premium', 'admin')),
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL REFERENCES users (subject),
    name TEXT NOT NULL DEFAULT '',
    scopes TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);

-- Listing a subject's keys (admin API); lookups by hash use the UNIQUE index.
CREATE INDEX api_keys_by_subject ON api_keys (subject, created_at_ms);
