-- Scoped API keys (issue 12): a key may be limited to one application (and goes with it) and
-- to reading. `generated` marks the admin token loraflow generated itself, which
-- `loraflow admin-token rotate` replaces.
ALTER TABLE api_keys ADD COLUMN application_id BLOB REFERENCES applications (id) ON DELETE CASCADE;
ALTER TABLE api_keys ADD COLUMN read_only BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE api_keys ADD COLUMN generated BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE api_keys SET generated = TRUE WHERE name = 'admin (generated)';
CREATE INDEX api_keys_application_idx ON api_keys (application_id);
