-- Snapshots being written: a host may hold a snapshot's directory before its
-- template row exists (the agent writes first, the control plane records
-- after). A directory that is in neither table belongs to a snapshot whose
-- recording failed, and heartbeats have the host remove it.

-- +goose Up
CREATE TABLE snapshot_requests (
    template_id uuid PRIMARY KEY,
    host_id     uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE snapshot_requests;
