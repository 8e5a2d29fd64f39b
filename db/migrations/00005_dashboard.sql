-- Dashboard: user sessions can be revoked (logout). A session token names
-- itself with a jti; a revoked one is refused until it would have expired
-- anyway, after which its row may be deleted.

-- +goose Up
CREATE TABLE revoked_sessions (
    jti        text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_sessions_expires_at ON revoked_sessions (expires_at);

-- +goose Down
DROP TABLE revoked_sessions;
