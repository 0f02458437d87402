-- Token limits an admin sets on one key or one user (`N/period[;burst=B]` or
-- `unlimited`), enforced at the edge beside (key) or instead of (user) the
-- tier's; the edge learns them with the key lookup.
ALTER TABLE api_keys ADD COLUMN token_limit TEXT;
ALTER TABLE users ADD COLUMN token_limit TEXT;
