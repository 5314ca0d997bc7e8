//! What the history endpoints (`/uplinks`, `/events`) share: their query parameters, the
//! opaque cursor and the page they answer with.
//!
//! The cursor is the (time, id) of the last row of a page; the next page holds the rows
//! strictly older than it. Several rows can share a time, so the id is part of it: paging
//! neither skips nor repeats a row, however the rows fall.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use loraflow_network_server::storage::{HistoryCursor, HistoryQuery};
use loraflow_network_server::types::Eui64;

use super::error::ApiError;
use super::extract::QueryMap;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// 8 bytes of microseconds since the epoch (big-endian) and the 16 bytes of the id.
const CURSOR_LEN: usize = 24;

/// A page of history: `totalCount` counts every row that matches the filters (`since`,
/// `kind`), not only this page; `nextCursor` is `null` on the last page.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage<T> {
    pub total_count: u64,
    pub next_cursor: Option<String>,
    pub result: Vec<T>,
}

/// The query parameters of [`history_query`].
pub const HISTORY_QUERY: &[&str] = &["limit", "since", "cursor"];

/// `?limit=` (1 to 1000, default 100), `?since=` (RFC 3339, inclusive) and `?cursor=`
/// (a `nextCursor` of an earlier page).
pub fn history_query(dev_eui: Eui64, q: &QueryMap) -> Result<HistoryQuery, ApiError> {
    let limit = q.number("limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field("limit", format!("must be between 1 and {MAX_LIMIT}, got {limit}")));
    }
    let since = match q.get("since") {
        None => None,
        Some(s) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|_| ApiError::field("since", format!("expected an RFC 3339 time, got {s:?}")))?
                .with_timezone(&Utc),
        ),
    };
    let after = q.get("cursor").map(decode_cursor).transpose()?;
    Ok(HistoryQuery { dev_eui, since, after, limit })
}

/// Turns the rows of a query run with one row more than `limit` into a page: the extra row
/// only says that there is a next page.
pub fn page<R, T>(mut rows: Vec<R>, limit: u32, total_count: u64, key: fn(&R) -> HistoryCursor) -> HistoryPage<T>
where
    T: From<R>,
{
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|r| encode_cursor(key(r))) } else { None };
    HistoryPage { total_count, next_cursor, result: rows.into_iter().map(Into::into).collect() }
}

/// The same query asking for one more row, to learn whether a next page exists.
pub fn one_more(q: &HistoryQuery) -> HistoryQuery {
    HistoryQuery { limit: q.limit + 1, ..*q }
}

pub fn encode_cursor(c: HistoryCursor) -> String {
    let mut bytes = Vec::with_capacity(CURSOR_LEN);
    bytes.extend_from_slice(&c.time.timestamp_micros().to_be_bytes());
    bytes.extend_from_slice(c.id.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode_cursor(s: &str) -> Result<HistoryCursor, ApiError> {
    let bad = || ApiError::field("cursor", format!("not a cursor returned as nextCursor: {s:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let bytes: [u8; CURSOR_LEN] = bytes.try_into().map_err(|_| bad())?;
    let (micros, id) = bytes.split_at(8);
    let micros = i64::from_be_bytes(micros.try_into().expect("8 bytes"));
    let time = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok(HistoryCursor { time, id: Uuid::from_slice(id).expect("16 bytes") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn query(pairs: &[(&str, &str)]) -> Result<HistoryQuery, ApiError> {
        let q = QueryMap(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        history_query(Eui64::from_u64(1), &q)
    }

    fn error_of(pairs: &[(&str, &str)]) -> String {
        query(pairs).unwrap_err().to_string()
    }

    #[test]
    fn a_cursor_round_trips_to_the_microsecond() {
        let c = HistoryCursor {
            time: Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap() + chrono::Duration::microseconds(123_457),
            id: Uuid::new_v4(),
        };
        let s = encode_cursor(c);
        assert!(s.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'), "URL-safe: {s}");
        assert_eq!(decode_cursor(&s).unwrap(), c);
        let q = query(&[("cursor", &s)]).unwrap();
        assert_eq!(q.after, Some(c));
    }

    #[test]
    fn bad_parameters_name_themselves() {
        assert!(error_of(&[("cursor", "not a cursor!")]).starts_with("cursor:"));
        assert!(error_of(&[("cursor", "AAAA")]).starts_with("cursor:"), "too short");
        assert!(error_of(&[("limit", "0")]).starts_with("limit:"));
        assert!(error_of(&[("limit", "1001")]).starts_with("limit:"));
        assert!(error_of(&[("limit", "-1")]).starts_with("limit:"));
        assert!(error_of(&[("since", "yesterday")]).starts_with("since:"));
    }

    #[test]
    fn defaults_are_the_newest_hundred() {
        let q = query(&[]).unwrap();
        assert_eq!((q.limit, q.since, q.after), (100, None, None));
    }

    #[test]
    fn the_extra_row_becomes_the_next_cursor_of_the_last_kept_row() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let rows: Vec<HistoryCursor> = (0..3).map(|_| HistoryCursor { time: t, id: Uuid::new_v4() }).collect();
        let p: HistoryPage<HistoryCursor> = page(rows.clone(), 2, 9, |c| *c);
        assert_eq!(p.result.len(), 2);
        assert_eq!(p.total_count, 9);
        assert_eq!(decode_cursor(p.next_cursor.as_deref().unwrap()).unwrap(), rows[1]);
        let last: HistoryPage<HistoryCursor> = page(rows, 3, 3, |c| *c);
        assert_eq!((last.result.len(), last.next_cursor), (3, None));
    }
}
