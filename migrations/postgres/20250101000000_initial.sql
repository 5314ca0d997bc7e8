-- loraflow schema, PostgreSQL. EUIs, DevAddrs and keys are stored as raw bytes (MSB first);
-- LoRaWAN counters are u32 and stored as BIGINT because PostgreSQL has no unsigned types.

CREATE TABLE gateways (
    gateway_id      BYTEA PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    latitude        DOUBLE PRECISION,
    longitude       DOUBLE PRECISION,
    altitude        DOUBLE PRECISION,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    last_seen_at    TIMESTAMPTZ
);

CREATE TABLE applications (
    id              UUID PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE device_profiles (
    id                      UUID PRIMARY KEY,
    name                    TEXT NOT NULL,
    region                  TEXT NOT NULL,
    mac_version             TEXT NOT NULL,
    reg_params_revision     TEXT NOT NULL,
    supports_otaa           BOOLEAN NOT NULL,
    supports_class_c        BOOLEAN NOT NULL,
    adr_enabled             BOOLEAN NOT NULL,
    payload_codec           TEXT NOT NULL,
    payload_codec_script    TEXT NOT NULL,
    created_at              TIMESTAMPTZ NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL
);

CREATE TABLE devices (
    dev_eui             BYTEA PRIMARY KEY,
    name                TEXT NOT NULL,
    description         TEXT NOT NULL,
    application_id      UUID NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    device_profile_id   UUID NOT NULL REFERENCES device_profiles (id) ON DELETE RESTRICT,
    join_eui            BYTEA NOT NULL,
    skip_fcnt_check     BOOLEAN NOT NULL,
    is_disabled         BOOLEAN NOT NULL,
    tags                JSONB NOT NULL,
    last_seen_at        TIMESTAMPTZ,
    dev_addr            BYTEA,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX devices_application_id_idx ON devices (application_id);
-- Without it every profile delete scans devices for the RESTRICT check.
CREATE INDEX devices_device_profile_id_idx ON devices (device_profile_id);

CREATE TABLE device_keys (
    dev_eui     BYTEA PRIMARY KEY REFERENCES devices (dev_eui) ON DELETE CASCADE,
    app_key     BYTEA NOT NULL,
    nwk_key     BYTEA,
    -- Last JoinNonce sent (LoRaWAN 1.0.4 §6.2.3: a per-device counter the device checks).
    join_nonce  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE device_nonces (
    dev_eui     BYTEA NOT NULL REFERENCES devices (dev_eui) ON DELETE CASCADE,
    join_eui    BYTEA NOT NULL,
    dev_nonce   INTEGER NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dev_eui, join_eui, dev_nonce)
);

CREATE TABLE device_sessions (
    dev_eui             BYTEA PRIMARY KEY REFERENCES devices (dev_eui) ON DELETE CASCADE,
    dev_addr            BYTEA NOT NULL,
    mac_version         TEXT NOT NULL,
    f_nwk_s_int_key     BYTEA NOT NULL,
    s_nwk_s_int_key     BYTEA NOT NULL,
    nwk_s_enc_key       BYTEA NOT NULL,
    app_s_key           BYTEA NOT NULL,
    f_cnt_up            BIGINT NOT NULL,
    n_f_cnt_down        BIGINT NOT NULL,
    rx1_delay           SMALLINT NOT NULL,
    rx1_dr_offset       SMALLINT NOT NULL,
    rx2_dr              SMALLINT NOT NULL,
    rx2_frequency       BIGINT NOT NULL,
    pending_ack_f_cnt   BIGINT,
    is_otaa             BOOLEAN NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX device_sessions_dev_addr_idx ON device_sessions (dev_addr);

CREATE TABLE device_queue (
    -- Insertion order, so that items created within the same microsecond stay in order.
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    id          UUID PRIMARY KEY,
    dev_eui     BYTEA NOT NULL REFERENCES devices (dev_eui) ON DELETE CASCADE,
    f_port      SMALLINT NOT NULL,
    confirmed   BOOLEAN NOT NULL,
    data        BYTEA NOT NULL,
    f_cnt_down  BIGINT,
    is_pending  BOOLEAN NOT NULL,
    timeout_at  TIMESTAMPTZ,
    retries     BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX device_queue_dev_eui_idx ON device_queue (dev_eui, created_at, seq);

-- History tables have no primary key: TimescaleDB hypertables only allow unique indexes that
-- include the time column, and rows are never addressed individually.
CREATE TABLE uplinks (
    time                TIMESTAMPTZ NOT NULL,
    deduplication_id    UUID NOT NULL,
    dev_eui             BYTEA NOT NULL,
    application_id      UUID NOT NULL,
    dev_addr            BYTEA NOT NULL,
    f_cnt               BIGINT NOT NULL,
    f_port              SMALLINT,
    confirmed           BOOLEAN NOT NULL,
    dr                  SMALLINT NOT NULL,
    frequency           BIGINT NOT NULL,
    rssi                INTEGER NOT NULL,
    snr                 REAL NOT NULL,
    gateway_count       BIGINT NOT NULL,
    data                BYTEA NOT NULL,
    object              JSONB,
    rx_info             JSONB NOT NULL,
    tx_info             JSONB NOT NULL
);
CREATE INDEX uplinks_dev_eui_time_idx ON uplinks (dev_eui, time DESC);

CREATE TABLE events (
    time            TIMESTAMPTZ NOT NULL,
    id              UUID NOT NULL,
    dev_eui         BYTEA NOT NULL,
    application_id  UUID NOT NULL,
    kind            TEXT NOT NULL,
    body            JSONB NOT NULL
);
CREATE INDEX events_dev_eui_time_idx ON events (dev_eui, time DESC);

CREATE TABLE api_keys (
    id              UUID PRIMARY KEY,
    name            TEXT NOT NULL,
    token_sha256    BYTEA NOT NULL UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL
);
