-- Egress policies (docs/network.md): a capsule's own, the one a snapshot
-- passes on to the capsules launched from it (its source capsule's when
-- it was taken), and a team's default for new capsules. NULL everywhere
-- is the open policy: internet on, nothing allowed or denied.

-- +goose Up
ALTER TABLE capsules ADD COLUMN network_policy jsonb;
ALTER TABLE templates ADD COLUMN network_policy jsonb;
ALTER TABLE teams ADD COLUMN default_network_policy jsonb;

-- +goose Down
ALTER TABLE teams DROP COLUMN default_network_policy;
ALTER TABLE templates DROP COLUMN network_policy;
ALTER TABLE capsules DROP COLUMN network_policy;
