//! Bucket arithmetic of the series query (pure): buckets are aligned on the Unix epoch in UTC,
//! `start = floor((t - epoch) / bucket) * bucket`, so every backend and every client computing
//! the same rule gets the same buckets (no time zones, no DST).

use chrono::{DateTime, TimeZone, Utc};

use loraflow_network_server::storage::HourlyMeasurement;

/// Shortest and longest bucket.
pub const MIN_BUCKET_SECS: i64 = 60;
pub const MAX_BUCKET_SECS: i64 = 86_400;
/// Most buckets one query may span.
pub const MAX_BUCKETS: i64 = 10_000;

/// How the values of a bucket are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
}

impl Agg {
    pub fn as_str(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::Last => "last",
        }
    }

    pub fn parse(s: &str) -> Option<Agg> {
        Some(match s {
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "sum" => Agg::Sum,
            "count" => Agg::Count,
            "last" => Agg::Last,
            _ => return None,
        })
    }
}

/// `1m`, `15m`, `1h`, `1d`…: a whole number of minutes, hours or days from 1 minute to 1 day.
pub fn parse_bucket(s: &str) -> Option<i64> {
    // The unit is the last byte; anything else there (a multi-byte character) is no unit.
    let (n, unit) = s.split_at(s.len().checked_sub(1).filter(|&i| s.is_char_boundary(i))?);
    // Digits only: `i64::from_str` would also take a sign.
    let n: i64 = n.bytes().all(|b| b.is_ascii_digit()).then(|| n.parse().ok()).flatten().filter(|n| *n > 0)?;
    let secs = n.checked_mul(match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    })?;
    (MIN_BUCKET_SECS..=MAX_BUCKET_SECS).contains(&secs).then_some(secs)
}

/// The start of the bucket holding `t`.
pub fn bucket_start(t: DateTime<Utc>, bucket_secs: i64) -> DateTime<Utc> {
    let start = t.timestamp().div_euclid(bucket_secs) * bucket_secs;
    Utc.timestamp_opt(start, 0).single().unwrap_or(t)
}

/// How many buckets `[from, to)` touches.
pub fn bucket_count(from: DateTime<Utc>, to: DateTime<Utc>, bucket_secs: i64) -> i64 {
    if to <= from {
        return 0;
    }
    let last = (to - chrono::Duration::microseconds(1)).timestamp().div_euclid(bucket_secs);
    last - from.timestamp().div_euclid(bucket_secs) + 1
}

/// The buckets of `points` (time ascending), one per bucket that holds a value.
pub fn aggregate(points: &[(DateTime<Utc>, f64)], bucket_secs: i64, agg: Agg) -> Vec<(DateTime<Utc>, f64)> {
    let mut out: Vec<(DateTime<Utc>, f64)> = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let start = bucket_start(points[i].0, bucket_secs);
        let mut j = i;
        while j < points.len() && bucket_start(points[j].0, bucket_secs) == start {
            j += 1;
        }
        let values = points[i..j].iter().map(|(_, v)| *v);
        let n = (j - i) as f64;
        let value = match agg {
            Agg::Avg => values.sum::<f64>() / n,
            Agg::Min => values.fold(f64::INFINITY, f64::min),
            Agg::Max => values.fold(f64::NEG_INFINITY, f64::max),
            Agg::Sum => values.sum(),
            Agg::Count => n,
            Agg::Last => points[j - 1].1,
        };
        out.push((start, value));
        i = j;
    }
    out
}

/// Whether `[from, to)` in `bucket_secs` buckets can be read from the hourly rollup: whole
/// hours only, so every bucket is a set of complete hours (the answer is then the same as
/// from the raw values).
pub fn rollup_serves(from: DateTime<Utc>, to: DateTime<Utc>, bucket_secs: i64) -> bool {
    let whole_hour = |t: DateTime<Utc>| t.timestamp_subsec_nanos() == 0 && t.timestamp().rem_euclid(3600) == 0;
    bucket_secs % 3600 == 0 && whole_hour(from) && whole_hour(to)
}

/// The buckets of hourly rollup rows (hour ascending, whole hours of one series): what
/// [`aggregate`] gives for the values they were made of.
pub fn fold_hours(hours: &[HourlyMeasurement], bucket_secs: i64, agg: Agg) -> Vec<(DateTime<Utc>, f64)> {
    let mut out: Vec<(DateTime<Utc>, HourlyMeasurement)> = Vec::new();
    for h in hours {
        let start = bucket_start(h.bucket, bucket_secs);
        match out.last_mut() {
            Some((s, acc)) if *s == start => acc.merge(h),
            _ => out.push((start, *h)),
        }
    }
    out.into_iter()
        .map(|(start, h)| {
            let value = match agg {
                Agg::Avg => h.sum / h.count as f64,
                Agg::Min => h.min,
                Agg::Max => h.max,
                Agg::Sum => h.sum,
                Agg::Count => h.count as f64,
                Agg::Last => h.last,
            };
            (start, value)
        })
        .collect()
}

/// The increase of a COUNTER per bucket, from the bucket's last reading (`lasts`, bucket
/// ascending) and the reading before it (`baseline`: the newest before the range, then the
/// previous bucket's). A reading below the one before means the counter restarted from zero:
/// its whole value is the increase. With nothing before, a bucket's increase is 0 (a first
/// reading says where the counter is, not how much it grew).
pub fn counter_increase(baseline: Option<f64>, lasts: &[(DateTime<Utc>, f64)]) -> Vec<(DateTime<Utc>, f64)> {
    let mut previous = baseline;
    lasts
        .iter()
        .map(|&(t, v)| {
            let increase = match previous {
                None => 0.0,
                Some(p) if v >= p => v - p,
                Some(_) => v,
            };
            previous = Some(v);
            (t, increase)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn buckets_parse_from_a_minute_to_a_day() {
        assert_eq!(parse_bucket("1m"), Some(60));
        assert_eq!(parse_bucket("15m"), Some(900));
        assert_eq!(parse_bucket("1h"), Some(3600));
        assert_eq!(parse_bucket("24h"), Some(86_400));
        assert_eq!(parse_bucket("1d"), Some(86_400));
        for bad in ["", "m", "0m", "-1h", "30s", "2d", "25h", "1.5h", "1H", "h1", "1é", "é", "+1h"] {
            assert_eq!(parse_bucket(bad), None, "{bad}");
        }
    }

    #[test]
    fn buckets_align_on_the_epoch_in_utc_at_day_boundaries() {
        assert_eq!(bucket_start(t("2026-03-29T01:59:59.999Z"), 3600), t("2026-03-29T01:00:00Z"));
        assert_eq!(bucket_start(t("2026-03-29T02:00:00Z"), 3600), t("2026-03-29T02:00:00Z"));
        assert_eq!(bucket_start(t("2026-11-30T23:59:59Z"), 86_400), t("2026-11-30T00:00:00Z"));
        assert_eq!(bucket_start(t("2026-12-01T00:00:00Z"), 86_400), t("2026-12-01T00:00:00Z"));
        // Before the epoch, floor not truncation.
        assert_eq!(bucket_start(t("1969-12-31T23:59:30Z"), 60), t("1969-12-31T23:59:00Z"));
        assert_eq!(bucket_start(t("2026-11-30T10:07:00+02:00"), 900), t("2026-11-30T08:00:00Z"));
    }

    #[test]
    fn bucket_count_covers_the_half_open_range() {
        assert_eq!(bucket_count(t("2026-11-30T00:00:00Z"), t("2026-12-01T00:00:00Z"), 3600), 24);
        assert_eq!(bucket_count(t("2026-11-30T00:30:00Z"), t("2026-11-30T01:30:00Z"), 3600), 2);
        assert_eq!(bucket_count(t("2026-11-30T00:00:00Z"), t("2026-11-30T00:00:00Z"), 3600), 0);
    }

    #[test]
    fn every_aggregate_over_known_values() {
        let p = [
            (t("2026-11-30T09:59:59Z"), 1.0),
            (t("2026-11-30T10:00:00Z"), 4.0),
            (t("2026-11-30T10:20:00Z"), -2.0),
            (t("2026-11-30T10:59:59Z"), 7.0),
            (t("2026-11-30T12:00:00Z"), 5.0),
        ];
        let at = |h: u32| t(&format!("2026-11-30T{h:02}:00:00Z"));
        let cases = [
            (Agg::Avg, [1.0, 3.0, 5.0]),
            (Agg::Min, [1.0, -2.0, 5.0]),
            (Agg::Max, [1.0, 7.0, 5.0]),
            (Agg::Sum, [1.0, 9.0, 5.0]),
            (Agg::Count, [1.0, 3.0, 1.0]),
            (Agg::Last, [1.0, 7.0, 5.0]),
        ];
        for (agg, want) in cases {
            assert_eq!(aggregate(&p, 3600, agg), vec![(at(9), want[0]), (at(10), want[1]), (at(12), want[2])], "{agg:?}");
        }
        assert!(aggregate(&[], 60, Agg::Avg).is_empty());
    }

    /// Values spread over hours, folded hour by hour as the history writer does.
    fn hours_of(points: &[(DateTime<Utc>, f64)]) -> Vec<HourlyMeasurement> {
        let mut hours: Vec<HourlyMeasurement> = Vec::new();
        for &(t, v) in points {
            let h = HourlyMeasurement::of(t, v);
            match hours.last_mut() {
                Some(last) if last.bucket == h.bucket => last.merge(&h),
                _ => hours.push(h),
            }
        }
        hours
    }

    #[test]
    fn hourly_rollups_give_the_buckets_of_the_raw_values() {
        let p: Vec<_> =
            (0..200).map(|i| (t("2026-11-29T22:10:00Z") + chrono::Duration::minutes(i * 17), ((i * 37) % 23) as f64 - 7.5)).collect();
        let hours = hours_of(&p);
        for bucket in [3600, 7200, 6 * 3600, 86_400] {
            for agg in [Agg::Avg, Agg::Min, Agg::Max, Agg::Sum, Agg::Count, Agg::Last] {
                let raw = aggregate(&p, bucket, agg);
                let folded = fold_hours(&hours, bucket, agg);
                assert_eq!(raw.len(), folded.len(), "{bucket} {agg:?}");
                for ((ta, a), (tb, b)) in raw.iter().zip(&folded) {
                    assert_eq!(ta, tb);
                    assert!((a - b).abs() < 1e-9, "{bucket} {agg:?} {ta}: {a} != {b}");
                }
            }
        }
    }

    #[test]
    fn merging_keeps_the_latest_value_whatever_the_order() {
        let mut a = HourlyMeasurement::of(t("2026-11-30T10:40:00Z"), 5.0);
        a.merge(&HourlyMeasurement::of(t("2026-11-30T10:10:00Z"), 9.0));
        assert_eq!((a.last, a.count, a.min, a.max, a.sum), (5.0, 2, 5.0, 9.0, 14.0));
        assert_eq!(a.bucket, t("2026-11-30T10:00:00Z"));
        assert_eq!(a.last_time, t("2026-11-30T10:40:00Z"));
    }

    #[test]
    fn only_whole_hours_are_read_from_the_rollup() {
        assert!(rollup_serves(t("2026-11-30T00:00:00Z"), t("2026-12-01T00:00:00Z"), 3600));
        assert!(rollup_serves(t("2026-11-30T00:00:00Z"), t("2026-12-01T00:00:00Z"), 86_400));
        assert!(!rollup_serves(t("2026-11-30T00:00:00Z"), t("2026-12-01T00:00:00Z"), 1800));
        assert!(!rollup_serves(t("2026-11-30T00:30:00Z"), t("2026-12-01T00:00:00Z"), 3600));
        assert!(!rollup_serves(t("2026-11-30T00:00:00Z"), t("2026-12-01T00:00:00.5Z"), 3600));
    }

    #[test]
    fn counter_increase_follows_readings_and_restarts() {
        let at = |h: u32| t(&format!("2026-11-30T{h:02}:00:00Z"));
        // 100 before the range; 130, 130, then a restart at 20, then 50.
        let lasts = [(at(1), 130.0), (at(2), 130.0), (at(3), 20.0), (at(5), 50.0)];
        assert_eq!(counter_increase(Some(100.0), &lasts), vec![(at(1), 30.0), (at(2), 0.0), (at(3), 20.0), (at(5), 30.0)]);
        // No reading before the range: the first bucket says where the counter is.
        assert_eq!(counter_increase(None, &lasts[..2]), vec![(at(1), 0.0), (at(2), 0.0)]);
        assert!(counter_increase(Some(1.0), &[]).is_empty());
    }
}
