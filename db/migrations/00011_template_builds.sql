-- Template builds: jobs that make a template from an OCI image or a recipe,
-- with their step-by-step logs; and what a built template records.

-- +goose Up
-- 'image' templates are root filesystems imported from an OCI image on one
-- host (host_id); build_ms is how long their build took; config is what
-- capsules of the template start with (env) and what it says about itself
-- (user, workdir, start command, exposed ports).
ALTER TABLE templates DROP CONSTRAINT templates_kind_check;
ALTER TABLE templates ADD CONSTRAINT templates_kind_check CHECK (kind IN ('base', 'snapshot', 'image'));
ALTER TABLE templates
    ADD COLUMN build_ms bigint,
    ADD COLUMN build_id uuid,
    ADD COLUMN config   jsonb NOT NULL DEFAULT '{}';

-- A build belongs to the team that asked for it; public builds (platform
-- admins only) make a template every team sees. runner names the control
-- plane process that runs it, which touches heartbeat_at every few
-- seconds: a running build whose heartbeat is stale lost its control plane
-- and is failed by the build reaper.
CREATE TABLE template_builds (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id          uuid NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    created_by       text NOT NULL DEFAULT '',
    name             text NOT NULL,
    public           boolean NOT NULL DEFAULT false,
    source           text NOT NULL CHECK (source IN ('image', 'recipe')),
    recipe           jsonb,
    status           text NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    error            text NOT NULL DEFAULT '',
    steps_total      integer NOT NULL DEFAULT 0,
    steps_done       integer NOT NULL DEFAULT 0,
    current_step     text NOT NULL DEFAULT '',
    host_id          uuid REFERENCES hosts (id) ON DELETE SET NULL,
    capsule_id       uuid,
    template_id      uuid REFERENCES templates (id) ON DELETE SET NULL,
    size_bytes       bigint NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    runner           text NOT NULL DEFAULT '',
    heartbeat_at     timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
-- One running build per template name and team.
CREATE UNIQUE INDEX template_builds_running_name ON template_builds (team_id, name) WHERE status = 'running';
CREATE INDEX template_builds_team ON template_builds (team_id, created_at DESC);

-- Every line a build logs, in order (seq counts from 1 per build), so that
-- a watcher who comes late replays the build from its start.
CREATE TABLE template_build_logs (
    build_id uuid NOT NULL REFERENCES template_builds (id) ON DELETE CASCADE,
    seq      bigint NOT NULL,
    step     integer NOT NULL,
    stream   text NOT NULL CHECK (stream IN ('info', 'stdout', 'stderr')),
    line     text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (build_id, seq)
);

-- +goose Down
DROP TABLE template_build_logs;
DROP TABLE template_builds;
DELETE FROM templates WHERE kind = 'image';
ALTER TABLE templates DROP COLUMN config, DROP COLUMN build_id, DROP COLUMN build_ms;
ALTER TABLE templates DROP CONSTRAINT templates_kind_check;
ALTER TABLE templates ADD CONSTRAINT templates_kind_check CHECK (kind IN ('base', 'snapshot'));
