-- Per-team quotas: what a platform admin set for one team, column by
-- column; NULL takes the control plane's default (WRENN_QUOTA_*), 0 means
-- no limit.

-- +goose Up
CREATE TABLE team_quotas (
    team_id            uuid PRIMARY KEY REFERENCES teams (id) ON DELETE CASCADE,
    running_capsules   integer CHECK (running_capsules >= 0),
    vcpus              integer CHECK (vcpus >= 0),
    memory_mb          bigint  CHECK (memory_mb >= 0),
    disk_mb            bigint  CHECK (disk_mb >= 0),
    paused_capsules    integer CHECK (paused_capsules >= 0),
    snapshots          integer CHECK (snapshots >= 0),
    concurrent_creates integer CHECK (concurrent_creates >= 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE team_quotas;
