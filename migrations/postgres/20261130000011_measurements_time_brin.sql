-- SQL clients (Grafana, docs/data.md) filter measurements by time range over every device.
-- Values arrive in time order, so a BRIN index (a few pages, next to no write cost) lets
-- such a query skip everything outside its range instead of reading the whole table.
CREATE INDEX measurements_time_brin_idx ON measurements USING brin (time);
