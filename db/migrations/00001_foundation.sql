-- Foundation: accounts, teams, API keys, hosts and their credentials, the
-- control plane's signing key, and the audit log.

-- +goose Up
CREATE TABLE users (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email             text NOT NULL UNIQUE CHECK (email = lower(email) AND email <> ''),
    name              text NOT NULL DEFAULT '',
    password_hash     text NOT NULL,
    is_platform_admin boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE teams (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE team_members (
    team_id    uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user_id ON team_members (user_id);

-- Deleted keys are kept (deleted_at) so that audit rows still resolve.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id      uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    created_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    name         text NOT NULL,
    prefix       text NOT NULL,
    key_hash     text NOT NULL UNIQUE,
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
CREATE INDEX api_keys_team_id ON api_keys (team_id) WHERE deleted_at IS NULL;

CREATE TABLE hosts (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    type              text NOT NULL CHECK (type IN ('regular', 'byoc')),
    -- Only BYOC hosts belong to a team; regular hosts serve everyone.
    team_id           uuid REFERENCES teams (id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'online', 'unreachable')),
    arch              text NOT NULL DEFAULT '',
    cpus              integer NOT NULL DEFAULT 0,
    memory_mb         bigint NOT NULL DEFAULT 0,
    disk_mb           bigint NOT NULL DEFAULT 0,
    runtime           text NOT NULL DEFAULT '',
    address           text NOT NULL DEFAULT '',
    hostname          text NOT NULL DEFAULT '',
    agent_version     text NOT NULL DEFAULT '',
    free_cpus         integer NOT NULL DEFAULT 0,
    free_memory_mb    bigint NOT NULL DEFAULT 0,
    free_disk_mb      bigint NOT NULL DEFAULT 0,
    capsules          jsonb NOT NULL DEFAULT '[]',
    last_heartbeat_at timestamptz,
    registered_at     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        uuid REFERENCES users (id) ON DELETE SET NULL,
    CHECK ((type = 'byoc') = (team_id IS NOT NULL))
);
CREATE INDEX hosts_team_id ON hosts (team_id) WHERE team_id IS NOT NULL;
CREATE INDEX hosts_online_heartbeat ON hosts (last_heartbeat_at) WHERE status = 'online';

CREATE TABLE host_registration_tokens (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    host_id    uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    -- Set when a newer token supersedes this one.
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX host_registration_tokens_host_id ON host_registration_tokens (host_id);

CREATE TABLE host_credentials (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    host_id    uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX host_credentials_host_id ON host_credentials (host_id);

CREATE TABLE host_refresh_tokens (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    host_id    uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX host_refresh_tokens_host_id ON host_refresh_tokens (host_id);

-- One row per key name; every replica reads the same key.
CREATE TABLE cp_signing_keys (
    name       text PRIMARY KEY,
    seed       bytea NOT NULL CHECK (length(seed) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- No foreign keys: the log outlives what it describes.
CREATE TABLE audit_log (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id     uuid,
    actor_type  text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'host', 'system')),
    actor_id    uuid,
    action      text NOT NULL,
    resource_id uuid,
    metadata    jsonb NOT NULL DEFAULT '{}',
    ip          inet,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_team_id_created_at ON audit_log (team_id, created_at DESC);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE cp_signing_keys;
DROP TABLE host_refresh_tokens;
DROP TABLE host_credentials;
DROP TABLE host_registration_tokens;
DROP TABLE hosts;
DROP TABLE api_keys;
DROP TABLE team_members;
DROP TABLE teams;
DROP TABLE users;
