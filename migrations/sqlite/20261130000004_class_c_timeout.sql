-- How long a confirmed Class C downlink waits for its ACK before it is sent again or the next
-- queue item goes out (issue 10). Existing profiles get the default the REST API gives new
-- ones: 5 seconds, as ChirpStack's classCTimeout.
ALTER TABLE device_profiles ADD COLUMN class_c_timeout INTEGER NOT NULL DEFAULT 5;
