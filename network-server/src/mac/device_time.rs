//! DeviceTimeReq / DeviceTimeAns (CID 0x0D, LoRaWAN 1.0.3 §5.9). The request has no payload.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

/// DeviceTimeAns: GPS time at the end of the uplink that carried the DeviceTimeReq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTimeAns {
    /// Whole seconds since the GPS epoch (1980-01-06T00:00:00Z), modulo 2^32.
    pub seconds: u32,
    /// Fractional second in 1/256 s steps.
    pub fraction: u8,
}

impl DeviceTimeAns {
    pub const LEN: usize = 5;

    /// The answer for an uplink received at `rx_time`.
    pub fn at(rx_time: DateTime<Utc>) -> Self {
        let gps = gps_time(rx_time);
        DeviceTimeAns { seconds: gps.as_secs() as u32, fraction: ((u64::from(gps.subsec_nanos()) * 256) / 1_000_000_000) as u8 }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seconds.to_le_bytes());
        out.push(self.fraction);
    }

    pub fn decode(b: &[u8]) -> Self {
        DeviceTimeAns { seconds: u32::from_le_bytes([b[0], b[1], b[2], b[3]]), fraction: b[4] }
    }
}

/// UTC dates (first day, 00:00:00) from which GPS-UTC grew by one second: 1 in 1981 up to
/// 18 on 2017-01-01 (IERS Bulletin C; no leap second has been announced since).
const LEAP_SECONDS_FROM: [(i32, u32); 18] = [
    (1981, 7),
    (1982, 7),
    (1983, 7),
    (1985, 7),
    (1988, 1),
    (1990, 1),
    (1991, 1),
    (1992, 7),
    (1993, 7),
    (1994, 7),
    (1996, 1),
    (1997, 7),
    (1999, 1),
    (2006, 1),
    (2009, 1),
    (2012, 7),
    (2015, 7),
    (2017, 1),
];

fn unix_seconds_of(year: i32, month: u32, day: u32) -> i64 {
    NaiveDate::from_ymd_opt(year, month, day).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc().timestamp()).unwrap_or(0)
}

/// Time since the GPS epoch for a UTC instant: UTC seconds since 1980-01-06 plus the leap
/// seconds inserted since (GPS time has none). Zero before the epoch.
pub fn gps_time(utc: DateTime<Utc>) -> Duration {
    let unix = utc.timestamp();
    let epoch = unix_seconds_of(1980, 1, 6);
    if unix < epoch {
        return Duration::ZERO;
    }
    let leaps = LEAP_SECONDS_FROM.iter().filter(|(y, m)| unix >= unix_seconds_of(*y, *m, 1)).count() as u64;
    Duration::new((unix - epoch) as u64 + leaps, utc.timestamp_subsec_nanos().min(999_999_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn gps_time_of_2026_new_year_includes_18_leap_seconds() {
        // 1767225600 (Unix) - 315964800 (GPS epoch in Unix time) + 18.
        assert_eq!(gps_time(utc("2026-01-01T00:00:00Z")), Duration::from_secs(1_451_260_818));
        let ans = DeviceTimeAns::at(utc("2026-01-01T00:00:00Z"));
        assert_eq!(ans, DeviceTimeAns { seconds: 1_451_260_818, fraction: 0 });
        let mut out = Vec::new();
        ans.encode(&mut out);
        assert_eq!(out, [0x92, 0x7b, 0x80, 0x56, 0x00]);
        assert_eq!(DeviceTimeAns::decode(&out), ans);
    }

    #[test]
    fn gps_time_matches_published_conversions() {
        // LIGO UTC2GPS example: 2002-07-19 16:00:00 UTC = GPS 711129613 (13 leap seconds).
        assert_eq!(gps_time(utc("2002-07-19T16:00:00Z")).as_secs(), 711_129_613);
        // The 2017 leap second: GPS 1167264017 was 2016-12-31T23:59:60 (gpstimeutil.js table).
        assert_eq!(gps_time(utc("2016-12-31T23:59:59Z")).as_secs(), 1_167_264_016);
        assert_eq!(gps_time(utc("2017-01-01T00:00:00Z")).as_secs(), 1_167_264_018);
        assert_eq!(gps_time(utc("1980-01-06T00:00:00Z")), Duration::ZERO);
        assert_eq!(gps_time(utc("1970-01-01T00:00:00Z")), Duration::ZERO);
    }

    #[test]
    fn fraction_is_in_256ths_of_a_second() {
        assert_eq!(DeviceTimeAns::at(utc("2026-01-01T00:00:00.5Z")).fraction, 128);
        assert_eq!(DeviceTimeAns::at(utc("2026-01-01T00:00:00.999Z")).fraction, 255);
        assert_eq!(DeviceTimeAns::at(utc("2026-01-01T00:00:00.004Z")).fraction, 1);
    }
}
