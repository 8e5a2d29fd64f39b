-- Host links: the pin of each agent's TLS key (the control plane accepts no
-- other key when it calls the agent; '' until the agent has sent one), and
-- the capsule addresses the host still has free, as its heartbeat reports
-- (NULL until an agent that reports it heartbeats). Snapshots under way
-- name their team, so that the snapshot quota counts them under the team's
-- lock (NULL for requests recorded before).

-- +goose Up
ALTER TABLE hosts ADD COLUMN tls_spki_sha256 text NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN free_addresses integer CHECK (free_addresses >= 0);
ALTER TABLE snapshot_requests ADD COLUMN team_id uuid REFERENCES teams (id) ON DELETE CASCADE;

-- +goose Down
ALTER TABLE snapshot_requests DROP COLUMN team_id;
ALTER TABLE hosts DROP COLUMN free_addresses;
ALTER TABLE hosts DROP COLUMN tls_spki_sha256;
