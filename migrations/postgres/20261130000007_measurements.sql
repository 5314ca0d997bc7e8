-- Measurements (issue 11): decoded-object values as named, typed series.
-- Profile definitions: decoded-object path -> {"name", "kind"} as JSON text; numeric leaves
-- without one become GAUGE series when auto-detection is on (the default, as for new profiles).
ALTER TABLE device_profiles ADD COLUMN measurements TEXT NOT NULL DEFAULT '{}';
ALTER TABLE device_profiles ADD COLUMN auto_detect_measurements BOOLEAN NOT NULL DEFAULT TRUE;

-- One row per series value of an uplink, written in the uplink's transaction. Time, device
-- and application are the uplink's; `kind` is GAUGE | COUNTER | ABSOLUTE | STRING, with a
-- number in `value` or (STRING) text in `text_value`. No foreign keys, as for uplinks: history
-- outlives devices and is trimmed by retention. On TimescaleDB the table becomes a hypertable
-- at start (storage/postgres.rs).
CREATE TABLE measurements (
    time            TIMESTAMPTZ NOT NULL,
    dev_eui         BYTEA NOT NULL,
    application_id  UUID NOT NULL,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    value           DOUBLE PRECISION,
    text_value      TEXT
);
CREATE INDEX measurements_dev_eui_name_time_idx ON measurements (dev_eui, name, time DESC);
CREATE INDEX measurements_application_name_time_idx ON measurements (application_id, name, time DESC);
