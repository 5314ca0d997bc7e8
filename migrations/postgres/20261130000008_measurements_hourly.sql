-- Hourly rollup of numeric measurements (issue 11): one row per device, series and clock
-- hour (UTC), kept up to date by the history writer in the same statement that stores the
-- values, so hourly and coarser REST queries read a row per hour instead of every value
-- ("all rooms, hourly, last 24 h" over 1,000 devices reads 24,000 rows, not millions).
-- `avg` is sum / count; `last` is the value with the latest `last_time`. STRING values are
-- not rolled up. Rows are not trimmed by retention: they are small and outlive raw values
-- on purpose (as TimescaleDB's continuous aggregate does, which replaces this table there:
-- storage/postgres.rs).
CREATE TABLE measurements_hourly (
    bucket          TIMESTAMPTZ NOT NULL,
    dev_eui         BYTEA NOT NULL,
    application_id  UUID NOT NULL,
    name            TEXT NOT NULL,
    sum             DOUBLE PRECISION NOT NULL,
    count           BIGINT NOT NULL,
    min             DOUBLE PRECISION NOT NULL,
    max             DOUBLE PRECISION NOT NULL,
    last            DOUBLE PRECISION NOT NULL,
    last_time       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dev_eui, name, bucket)
);
CREATE INDEX measurements_hourly_application_name_bucket_idx ON measurements_hourly (application_id, name, bucket);

-- Values stored before this migration.
INSERT INTO measurements_hourly (bucket, dev_eui, application_id, name, sum, count, min, max, last, last_time)
SELECT date_trunc('hour', time), dev_eui, min(application_id::text)::uuid, name, sum(value), count(value), min(value), max(value),
       (array_agg(value ORDER BY time DESC))[1], max(time)
FROM measurements WHERE value IS NOT NULL
GROUP BY date_trunc('hour', time), dev_eui, name;
