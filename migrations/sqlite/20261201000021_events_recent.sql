-- GET /api/events: the newest events across every device, or across one application's,
-- newest first by (time, id). The per-device index (dev_eui, time) cannot serve either.
CREATE INDEX events_time_id_idx ON events (time DESC, id DESC);
CREATE INDEX events_application_id_time_idx ON events (application_id, time DESC, id DESC);
