-- The source networks a gateway's Semtech UDP datagrams may come from (issue 12): a JSON
-- array of CIDR strings, e.g. ["192.0.2.0/24", "2001:db8::/32"]. '[]': from anywhere, which
-- is what every gateway allowed before.
ALTER TABLE gateways ADD COLUMN allowed_networks TEXT NOT NULL DEFAULT '[]';
