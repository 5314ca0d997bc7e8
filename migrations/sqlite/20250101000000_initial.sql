-- loraflow schema, SQLite. Types follow what sqlx encodes: Uuid as BLOB, DateTime<Utc> as
-- RFC 3339 TEXT (always written by loraflow with a +00:00 offset, so text order is time
-- order), JSON as TEXT. EUIs, DevAddrs and keys are raw bytes (MSB first).

CREATE TABLE gateways (
    gateway_id      BLOB PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    latitude        REAL,
    longitude       REAL,
    altitude        REAL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_seen_at    TEXT
);

CREATE TABLE applications (
    id              BLOB PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE device_profiles (
    id                      BLOB PRIMARY KEY,
    name                    TEXT NOT NULL,
    region                  TEXT NOT NULL,
    mac_version             TEXT NOT NULL,
    reg_params_revision     TEXT NOT NULL,
    supports_otaa           BOOLEAN NOT NULL,
    supports_class_c        BOOLEAN NOT NULL,
    adr_enabled             BOOLEAN NOT NULL,
    payload_codec           TEXT NOT NULL,
    payload_codec_script    TEXT NOT NULL,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);

CREATE TABLE devices (
    dev_eui             BLOB PRIMARY KEY,
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    application_id      BLOB NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    device_profile_id   BLOB NOT NULL REFERENCES device_profiles (id) ON DELETE RESTRICT,
    join_eui            BLOB NOT NULL,
    skip_fcnt_check     BOOLEAN NOT NULL,
    is_disabled         BOOLEAN NOT NULL,
    tags                TEXT NOT NULL,
    last_seen_at        TEXT,
    dev_addr            BLOB,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX devices_application_id_idx ON devices (application_id);
-- Without it every profile delete scans devices for the RESTRICT check.
CREATE INDEX devices_device_profile_id_idx ON devices (device_profile_id);

CREATE TABLE device_keys (
    dev_eui     BLOB PRIMARY KEY REFERENCES devices (dev_eui) ON DELETE CASCADE,
    app_key     BLOB NOT NULL,
    nwk_key     BLOB,
    -- Last JoinNonce sent (LoRaWAN 1.0.4 §6.2.3: a per-device counter the device checks).
    join_nonce  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE device_nonces (
    dev_eui     BLOB NOT NULL REFERENCES devices (dev_eui) ON DELETE CASCADE,
    join_eui    BLOB NOT NULL,
    dev_nonce   INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (dev_eui, join_eui, dev_nonce)
);

CREATE TABLE device_sessions (
    dev_eui             BLOB PRIMARY KEY REFERENCES devices (dev_eui) ON DELETE CASCADE,
    dev_addr            BLOB NOT NULL,
    mac_version         TEXT NOT NULL,
    f_nwk_s_int_key     BLOB NOT NULL,
    s_nwk_s_int_key     BLOB NOT NULL,
    nwk_s_enc_key       BLOB NOT NULL,
    app_s_key           BLOB NOT NULL,
    f_cnt_up            INTEGER NOT NULL,
    n_f_cnt_down        INTEGER NOT NULL,
    rx1_delay           INTEGER NOT NULL,
    rx1_dr_offset       INTEGER NOT NULL,
    rx2_dr              INTEGER NOT NULL,
    rx2_frequency       INTEGER NOT NULL,
    pending_ack_f_cnt   INTEGER,
    is_otaa             BOOLEAN NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX device_sessions_dev_addr_idx ON device_sessions (dev_addr);

CREATE TABLE device_queue (
    -- Insertion order, so that items created within the same microsecond stay in order.
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB NOT NULL UNIQUE,
    dev_eui     BLOB NOT NULL REFERENCES devices (dev_eui) ON DELETE CASCADE,
    f_port      INTEGER NOT NULL,
    confirmed   BOOLEAN NOT NULL,
    data        BLOB NOT NULL,
    f_cnt_down  INTEGER,
    is_pending  BOOLEAN NOT NULL,
    timeout_at  TEXT,
    retries     INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX device_queue_dev_eui_idx ON device_queue (dev_eui, created_at, seq);

CREATE TABLE uplinks (
    time                TEXT NOT NULL,
    deduplication_id    BLOB NOT NULL,
    dev_eui             BLOB NOT NULL,
    application_id      BLOB NOT NULL,
    dev_addr            BLOB NOT NULL,
    f_cnt               INTEGER NOT NULL,
    f_port              INTEGER,
    confirmed           BOOLEAN NOT NULL,
    dr                  INTEGER NOT NULL,
    frequency           INTEGER NOT NULL,
    rssi                INTEGER NOT NULL,
    snr                 REAL NOT NULL,
    gateway_count       INTEGER NOT NULL,
    data                BLOB NOT NULL,
    object              TEXT,
    rx_info             TEXT NOT NULL,
    tx_info             TEXT NOT NULL
);
CREATE INDEX uplinks_dev_eui_time_idx ON uplinks (dev_eui, time DESC);

CREATE TABLE events (
    time            TEXT NOT NULL,
    id              BLOB NOT NULL,
    dev_eui         BLOB NOT NULL,
    application_id  BLOB NOT NULL,
    kind            TEXT NOT NULL,
    body            TEXT NOT NULL
);
CREATE INDEX events_dev_eui_time_idx ON events (dev_eui, time DESC);

CREATE TABLE api_keys (
    id              BLOB PRIMARY KEY,
    name            TEXT NOT NULL,
    token_sha256    BLOB NOT NULL UNIQUE,
    created_at      TEXT NOT NULL
);
