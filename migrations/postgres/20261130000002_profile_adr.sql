-- ADR limits and DevStatusReq frequency per device profile (issue 9). Existing profiles get
-- the defaults the REST API applies to new ones: the whole EU868 ADR range (DR0-DR5), a
-- 10 dB installation margin, one DevStatusReq a day.
ALTER TABLE device_profiles
    ADD COLUMN adr_min_dr                 SMALLINT NOT NULL DEFAULT 0,
    ADD COLUMN adr_max_dr                 SMALLINT NOT NULL DEFAULT 5,
    ADD COLUMN adr_installation_margin_db REAL     NOT NULL DEFAULT 10,
    ADD COLUMN dev_status_req_freq        BIGINT   NOT NULL DEFAULT 1;
