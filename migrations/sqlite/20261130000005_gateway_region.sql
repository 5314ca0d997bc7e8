-- The region configuration (`[[regions]]` id) a gateway belongs to (issue 10). NULL: the
-- first configured one, which is what every gateway used before.
ALTER TABLE gateways ADD COLUMN region_config_id TEXT;
