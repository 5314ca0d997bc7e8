-- MAC-command engine state of a session (network-server/src/mac/state.rs), as JSON.
-- NULL = a session from before this column: nothing known beyond the defaults.
ALTER TABLE device_sessions ADD COLUMN mac_state JSONB;
