-- Pause, resume and snapshots: where a snapshot lives and what a capsule was
-- started from.

-- +goose Up
-- A snapshot lives on the disk of the host its capsule ran on; base templates
-- are on every host (host_id NULL). agent_name is the template's directory
-- on hosts: the name of a base template, the id of a snapshot (names are
-- per team, directories per host).
ALTER TABLE templates
    ADD COLUMN host_id uuid REFERENCES hosts (id) ON DELETE SET NULL,
    ADD COLUMN source_capsule_id uuid,
    ADD COLUMN agent_name text NOT NULL DEFAULT '';
UPDATE templates SET agent_name = name WHERE kind = 'base';

-- paused_at and snapshot_bytes describe the saved state of a paused
-- capsule; template_agent_name is the directory the capsule started from,
-- which a snapshot in use is found by.
ALTER TABLE capsules
    ADD COLUMN paused_at timestamptz,
    ADD COLUMN snapshot_bytes bigint NOT NULL DEFAULT 0,
    ADD COLUMN template_id uuid REFERENCES templates (id) ON DELETE SET NULL,
    -- An operation that failed without reaching the host left the capsule
    -- pausing or resuming: its host's next report settles it.
    ADD COLUMN settle_from_host boolean NOT NULL DEFAULT false;
CREATE INDEX capsules_template ON capsules (template_id) WHERE template_id IS NOT NULL;
-- The reaper looks for idle running capsules.
CREATE INDEX capsules_running_idle ON capsules (last_active_at) WHERE status = 'running' AND timeout_sec > 0;
-- Every heartbeat looks for its host's capsules to reconcile.
CREATE INDEX capsules_host_unsettled ON capsules (host_id)
    WHERE status IN ('missing', 'starting', 'pausing', 'resuming');

-- +goose Down
DROP INDEX capsules_host_unsettled;
DROP INDEX capsules_running_idle;
DROP INDEX capsules_template;
ALTER TABLE capsules DROP COLUMN settle_from_host, DROP COLUMN template_id, DROP COLUMN snapshot_bytes, DROP COLUMN paused_at;
ALTER TABLE templates DROP COLUMN agent_name, DROP COLUMN source_capsule_id, DROP COLUMN host_id;
