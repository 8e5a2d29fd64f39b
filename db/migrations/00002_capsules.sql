-- Capsules and the templates they start from.

-- +goose Up
-- Templates are root filesystems (and, later, snapshots) that capsules start
-- from. Base templates are global (team_id NULL); snapshots belong to a team.
CREATE TABLE templates (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name              text NOT NULL,
    team_id           uuid REFERENCES teams (id) ON DELETE CASCADE,
    kind              text NOT NULL DEFAULT 'base' CHECK (kind IN ('base', 'snapshot')),
    description       text NOT NULL DEFAULT '',
    size_bytes        bigint NOT NULL DEFAULT 0,
    default_vcpus     integer NOT NULL CHECK (default_vcpus > 0),
    default_memory_mb integer NOT NULL CHECK (default_memory_mb > 0),
    default_disk_mb   integer NOT NULL CHECK (default_disk_mb > 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX templates_global_name ON templates (name) WHERE team_id IS NULL;
CREATE UNIQUE INDEX templates_team_name ON templates (team_id, name) WHERE team_id IS NOT NULL;

INSERT INTO templates (name, description, default_vcpus, default_memory_mb, default_disk_mb) VALUES
    ('minimal', 'BusyBox userland and envd; starts fastest', 1, 256, 1024),
    ('debian', 'Debian bookworm (minbase) with python3', 1, 512, 4096);

-- Templates an agent has on disk, as reported in its heartbeats; the
-- scheduler only places a capsule on a host that has its template.
ALTER TABLE hosts ADD COLUMN templates text[] NOT NULL DEFAULT '{}';

CREATE TABLE capsules (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id        uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    host_id        uuid REFERENCES hosts (id) ON DELETE SET NULL,
    template       text NOT NULL,
    status         text NOT NULL CHECK (status IN ('pending', 'starting', 'running', 'pausing', 'paused',
                                                   'resuming', 'stopped', 'error', 'missing')),
    -- Why the capsule is in error (or stopped on its own); empty otherwise.
    status_reason  text NOT NULL DEFAULT '',
    vcpus          integer NOT NULL CHECK (vcpus > 0),
    memory_mb      integer NOT NULL CHECK (memory_mb > 0),
    disk_mb        integer NOT NULL CHECK (disk_mb > 0),
    timeout_sec    integer NOT NULL DEFAULT 0 CHECK (timeout_sec >= 0),
    metadata       jsonb NOT NULL DEFAULT '{}',
    -- The capsule's private address on its host (never shown to users).
    address        text NOT NULL DEFAULT '',
    created_by     text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    stopped_at     timestamptz,
    last_active_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX capsules_team_created ON capsules (team_id, created_at DESC, id DESC);
-- The scheduler sums what each host's capsules take; only these statuses
-- hold memory and CPU (store.liveStatuses says the same).
CREATE INDEX capsules_host_live ON capsules (host_id)
    WHERE status IN ('pending', 'starting', 'running', 'pausing', 'resuming');
CREATE INDEX capsules_metadata ON capsules USING gin (metadata jsonb_path_ops);

-- +goose Down
DROP TABLE capsules;
ALTER TABLE hosts DROP COLUMN templates;
DROP TABLE templates;
