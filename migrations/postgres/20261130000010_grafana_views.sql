-- Views for SQL clients such as Grafana (issue 11): the history with readable columns, so a
-- query needs no bytea EUIs, JSON paths or joins. EUIs and DevAddrs are lower-case hex text,
-- as in the REST API. History has no foreign keys and outlives its device, so devices,
-- applications, profiles and gateways are LEFT JOINed: a deleted device's rows keep their EUI
-- with NULL names. Plain SQL only, the same on PostgreSQL and TimescaleDB.
--
-- A filter on a hex column (`dev_eui = '70b3…'`) is applied after the hex conversion and
-- cannot use the tables' (dev_eui, …) indexes; bound such queries by time, or read the
-- tables with `decode('70b3…', 'hex')` where an index matters (docs/data.md).

-- Every device with its names and tags: the choices of a dashboard's device variable.
CREATE VIEW device_info AS
SELECT encode(d.dev_eui, 'hex') AS dev_eui,
       d.name                   AS device_name,
       d.description,
       d.application_id,
       a.name                   AS application_name,
       d.device_profile_id,
       p.name                   AS device_profile_name,
       d.tags,
       d.is_disabled,
       d.last_seen_at
FROM devices d
JOIN applications a ON a.id = d.application_id
JOIN device_profiles p ON p.id = d.device_profile_id;

-- One row per stored series value (`measurements`).
CREATE VIEW measurement_points AS
SELECT m.time,
       encode(m.dev_eui, 'hex') AS dev_eui,
       d.name                   AS device_name,
       m.application_id,
       a.name                   AS application_name,
       p.name                   AS device_profile_name,
       d.tags                   AS device_tags,
       m.name,
       m.kind,
       m.value,
       m.text_value
FROM measurements m
LEFT JOIN devices d ON d.dev_eui = m.dev_eui
LEFT JOIN applications a ON a.id = m.application_id
LEFT JOIN device_profiles p ON p.id = d.device_profile_id;

-- One row per stored uplink. `rssi` and `snr` are those of the first gateway (see
-- uplink_gateways for every gateway).
CREATE VIEW uplink_log AS
SELECT u.time,
       u.deduplication_id,
       encode(u.dev_eui, 'hex')  AS dev_eui,
       d.name                    AS device_name,
       u.application_id,
       a.name                    AS application_name,
       p.name                    AS device_profile_name,
       d.tags                    AS device_tags,
       encode(u.dev_addr, 'hex') AS dev_addr,
       u.f_cnt,
       u.f_port,
       u.confirmed,
       u.dr,
       u.frequency,
       u.rssi,
       u.snr,
       u.gateway_count,
       u.object
FROM uplinks u
LEFT JOIN devices d ON d.dev_eui = u.dev_eui
LEFT JOIN applications a ON a.id = u.application_id
LEFT JOIN device_profiles p ON p.id = d.device_profile_id;

-- One row per (uplink, gateway that received it), from the uplink's `rx_info` array (one
-- element per gateway, written by loraflow with `gatewayId` as lower-case hex). A row whose
-- rx_info is not an array yields no gateway rows rather than an error.
CREATE VIEW uplink_gateways AS
SELECT u.time,
       u.deduplication_id,
       encode(u.dev_eui, 'hex')       AS dev_eui,
       d.name                         AS device_name,
       u.application_id,
       lower(rx.value ->> 'gatewayId') AS gateway_id,
       g.name                         AS gateway_name,
       (rx.value ->> 'rssi')::integer AS rssi,
       (rx.value ->> 'snr')::real     AS snr,
       (rx.value ->> 'channel')::integer AS channel,
       u.dr,
       u.frequency,
       u.f_cnt
FROM uplinks u
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(u.rx_info) = 'array' THEN u.rx_info ELSE '[]'::jsonb END
) AS rx(value)
LEFT JOIN devices d ON d.dev_eui = u.dev_eui
LEFT JOIN gateways g ON encode(g.gateway_id, 'hex') = lower(rx.value ->> 'gatewayId');
