-- Spend control: teams, USD budgets on keys, users and teams, the spend of
-- each budget per period window, and the reservations open against them.
-- Same SQL on SQLite and Postgres (see 0001).

CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL
);

-- A user is in at most one team; the team's budget is shared by its members.
ALTER TABLE users ADD COLUMN team_id TEXT REFERENCES teams (id);

-- One budget per key, user or team: a hard limit per period.
CREATE TABLE budgets (
    scope TEXT NOT NULL CHECK (scope IN ('key', 'user', 'team')),
    scope_id TEXT NOT NULL,
    period TEXT NOT NULL CHECK (period IN ('day', 'week', 'month', 'total')),
    limit_microdollars BIGINT NOT NULL CHECK (limit_microdollars >= 0),
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, scope_id)
);

-- What a budget has spent and holds reserved in one period window (a new
-- window starts at zero: that is the reset). `notified` has bit i set once
-- the i-th soft threshold's notice went out for this window.
CREATE TABLE budget_spend (
    scope TEXT NOT NULL,
    scope_id TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    spent_microdollars BIGINT NOT NULL DEFAULT 0,
    reserved_microdollars BIGINT NOT NULL DEFAULT 0,
    notified BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, scope_id, period_start_ms)
);

-- Reservations of requests in flight, so that one whose process died is
-- released when it expires. `windows` lists the budget_spend rows it holds.
CREATE TABLE budget_holds (
    id TEXT PRIMARY KEY,
    amount_microdollars BIGINT NOT NULL,
    windows TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE INDEX budget_holds_by_expiry ON budget_holds (expires_at_ms);

-- Usage records name the key and the team that paid, for spend reports.
ALTER TABLE usage_records ADD COLUMN key_id TEXT;
ALTER TABLE usage_records ADD COLUMN team_id TEXT;
CREATE INDEX usage_by_time ON usage_records (created_at_ms);

-- A job is charged to the key it was submitted with.
ALTER TABLE jobs ADD COLUMN key_id TEXT;
