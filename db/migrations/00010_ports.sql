-- The port proxy: which ports of a capsule anyone may reach without
-- credentials, and whether a request to a paused capsule's port resumes it.

-- +goose Up
ALTER TABLE capsules
    ADD COLUMN public_ports integer[] NOT NULL DEFAULT '{}'
        CHECK (1 <= ALL (public_ports) AND 65535 >= ALL (public_ports) AND NOT (49983 = ANY (public_ports))),
    ADD COLUMN auto_resume boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE capsules DROP COLUMN public_ports, DROP COLUMN auto_resume;
