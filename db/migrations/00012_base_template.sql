-- The batteries-included base template (Debian 12 with Python, Node.js,
-- git and a sudoer `user`) replaces the `debian` template, which
-- scripts/build-image.sh no longer builds.

-- +goose Up
INSERT INTO templates (name, description, default_vcpus, default_memory_mb, default_disk_mb) VALUES
    ('base', 'Debian 12 with bash, Python 3 (pip, venv), Node.js (npm), git, curl and sudo; runs as user (uid 1000)', 1, 512, 4096)
ON CONFLICT DO NOTHING;
DELETE FROM templates WHERE name = 'debian' AND team_id IS NULL;

-- +goose Down
DELETE FROM templates WHERE name = 'base' AND team_id IS NULL;
INSERT INTO templates (name, description, default_vcpus, default_memory_mb, default_disk_mb) VALUES
    ('debian', 'Debian bookworm (minbase) with python3', 1, 512, 4096)
ON CONFLICT DO NOTHING;
