//! The one timestamp format of JSON answers: RFC 3339 in UTC with `Z` and always six
//! fractional digits (microseconds, what both storage backends keep), e.g.
//! `2026-11-30T12:00:00.123457Z`. chrono's own `Serialize` varies the digits with the value
//! (`…:00Z`, `…:00.120Z`), which sorts wrong as text and surprises strict parsers.
//!
//! Use with `#[serde(serialize_with = "time_format::utc")]` (or `option::utc` for an
//! `Option`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// `time` in the answer format.
pub fn format(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn utc<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(time))
}

pub mod option {
    use super::*;

    pub fn utc<S: Serializer>(time: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(t) => serializer.serialize_str(&super::format(t)),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_microseconds_and_z() {
        let whole = DateTime::from_timestamp(1_796_040_000, 0).unwrap();
        assert_eq!(format(&whole), "2026-11-30T12:00:00.000000Z");
        let nanos = DateTime::from_timestamp(1_796_040_000, 123_456_789).unwrap();
        assert_eq!(format(&nanos), "2026-11-30T12:00:00.123456Z");
    }
}
