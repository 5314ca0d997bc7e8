-- Hourly rollup of numeric measurements (issue 11), as on PostgreSQL: one row per device,
-- series and clock hour (UTC), kept up to date by the history writer in the transaction that
-- stores the values. `bucket` is written like every other time of this database.
CREATE TABLE measurements_hourly (
    bucket          TEXT NOT NULL,
    dev_eui         BLOB NOT NULL,
    application_id  BLOB NOT NULL,
    name            TEXT NOT NULL,
    sum             REAL NOT NULL,
    count           INTEGER NOT NULL,
    min             REAL NOT NULL,
    max             REAL NOT NULL,
    last            REAL NOT NULL,
    last_time       TEXT NOT NULL,
    PRIMARY KEY (dev_eui, name, bucket)
) WITHOUT ROWID;
CREATE INDEX measurements_hourly_application_name_bucket_idx ON measurements_hourly (application_id, name, bucket);
