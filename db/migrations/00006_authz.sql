-- Authorization hardening (issue 14).
--
-- API keys carry scopes. Keys that exist before this migration keep what
-- they could do, except creating and deleting API keys (keys:manage) and
-- acting as platform admin (platform:admin): an owner who needs those from
-- a key creates a new key with them.
--
-- The first platform admin is made by a bootstrap token, not by being the
-- first to sign up; bootstrap records that the token was spent.
--
-- Failed logins are counted per account (by a digest of the email, so that
-- the addresses an attacker tried are not kept), to lock an account out for
-- a while after too many.

-- +goose Up
ALTER TABLE api_keys ADD COLUMN scopes text[];
UPDATE api_keys SET scopes = '{capsules,exec,files,snapshots,templates,hosts,team}';
ALTER TABLE api_keys ALTER COLUMN scopes SET NOT NULL;

CREATE TABLE bootstrap (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    user_id  uuid REFERENCES users (id) ON DELETE SET NULL,
    spent_at timestamptz NOT NULL DEFAULT now()
);
-- A database that already has a platform admin was bootstrapped by the
-- first signup.
INSERT INTO bootstrap (user_id, spent_at)
SELECT id, created_at FROM users WHERE is_platform_admin ORDER BY created_at LIMIT 1;

CREATE TABLE login_failures (
    email_hash      text PRIMARY KEY,
    failures        integer NOT NULL,
    last_failure_at timestamptz NOT NULL,
    locked_until    timestamptz
);
CREATE INDEX login_failures_last_failure_at ON login_failures (last_failure_at);

-- +goose Down
DROP TABLE login_failures;
DROP TABLE bootstrap;
ALTER TABLE api_keys DROP COLUMN scopes;
