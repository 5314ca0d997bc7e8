//! Every SQL query of the Grafana dashboard (`deploy/grafana/loraflow.json`: panel targets and
//! query variables) and of `docs/data.md` runs on PostgreSQL and returns the rows this test
//! computes itself. The data comes from LPP uplinks sent through the real server by two
//! gateways, plus rows inserted with SQL at known times (older hours, a deleted device, an
//! unknown gateway, an uplink without gateways). Expectations are computed from the base
//! tables (raw EUIs, raw `rx_info`), never from the views under test.
//!
//! Grafana's macros and variables are replaced by literals the way Grafana's PostgreSQL data
//! source expands them; a macro or variable the test does not know fails the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::device::Device;
use common::gateway::GatewayPair;
use common::provision;
use common::{Backend, TestServer};
use serde_json::Value;
use sqlx::{Column, PgPool, Row, TypeInfo};

const GATEWAYS: [&str; 2] = ["00000000000000c1", "00000000000000c2"];
/// A gateway that heard an inserted uplink but is not registered: no name.
const UNKNOWN_GATEWAY: &str = "00000000000000ff";
const DEVICES: [(&str, &str); 3] = [("70b3d57ed0000a01", "26011a01"), ("70b3d57ed0000a02", "26011a02"), ("70b3d57ed0000a03", "26011a03")];
/// Devices whose history remains after they were deleted (inserted rows, no device row): one
/// that reported in the last hours, one three days ago, one eight days ago.
const DELETED_DEVICE: &str = "70b3d57ed00000ff";
const DELETED_3_DAYS_AGO: &str = "70b3d57ed00000fe";
const DELETED_8_DAYS_AGO: &str = "70b3d57ed00000fd";
const NWK_S_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const APP_S_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const TEMPERATURE: &str = "temperature_sensor_3";
const HOUR: i64 = 3_600_000_000;
const MINUTE: i64 = 60_000_000;

/// Cayenne LPP: temperature (`tenths` / 10 °C) on channel 3, humidity 48.5 % on channel 5.
fn lpp(tenths: i16) -> Vec<u8> {
    let t = tenths.to_be_bytes();
    vec![0x03, 0x67, t[0], t[1], 0x05, 0x68, 0x61]
}

fn device_name(eui: &str) -> Option<String> {
    DEVICES.iter().any(|(d, _)| *d == eui).then(|| format!("dev-{eui}"))
}

fn gateway_name(id: &str) -> Option<String> {
    GATEWAYS.contains(&id).then(|| format!("gw-{id}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// One value of a result row, compared with a tolerance for floats.
#[derive(Debug, Clone)]
enum Cell {
    Time(i64),
    Text(Option<String>),
    Num(Option<f64>),
    Int(i64),
}

impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Time(a), Cell::Time(b)) | (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::Text(a), Cell::Text(b)) => a == b,
            (Cell::Num(Some(a)), Cell::Num(Some(b))) => (a - b).abs() < 1e-9,
            (Cell::Num(a), Cell::Num(b)) => a.is_none() && b.is_none(),
            _ => false,
        }
    }
}

fn text(s: &str) -> Cell {
    Cell::Text(Some(s.to_string()))
}

/// Column names and rows of a query, each value decoded by its PostgreSQL type.
struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

async fn run(pool: &PgPool, sql: &str) -> Rows {
    let result = sqlx::query(sql).fetch_all(pool).await.unwrap_or_else(|e| panic!("{e}\n{sql}"));
    let columns = match result.first() {
        Some(r) => r.columns().iter().map(|c| c.name().to_string()).collect(),
        None => Vec::new(),
    };
    let rows = result
        .iter()
        .map(|r| {
            r.columns()
                .iter()
                .map(|c| match c.type_info().name() {
                    "TIMESTAMPTZ" => Cell::Time(micros(&r.get::<DateTime<Utc>, _>(c.ordinal()))),
                    "TEXT" => Cell::Text(r.get(c.ordinal())),
                    "FLOAT8" => Cell::Num(r.get(c.ordinal())),
                    "INT8" => Cell::Int(r.get(c.ordinal())),
                    other => panic!("column {} has type {other}, which the test does not decode\n{sql}", c.name()),
                })
                .collect()
        })
        .collect();
    Rows { columns, rows }
}

fn check(what: &str, sql: &str, got: &Rows, columns: &[&str], want: &[Vec<Cell>]) {
    assert!(!want.is_empty(), "{what}: the test data must give this query rows to check");
    assert_eq!(got.columns, columns, "{what}: columns\n{sql}");
    assert_eq!(got.rows, want, "{what}: rows\n{sql}");
}

/// One row of `measurements`, decoded by the test.
struct Point {
    time: i64,
    dev_eui: String,
    name: String,
    value: Option<f64>,
}

/// One row of `uplinks`: the gateway ids of its `rx_info`, in order.
struct Uplink {
    time: i64,
    gateways: Vec<String>,
}

/// What the base tables hold.
struct Stored {
    measurements: Vec<Point>,
    uplinks: Vec<Uplink>,
}

async fn stored(pool: &PgPool) -> Stored {
    let measurements = sqlx::query("SELECT time, dev_eui, name, value FROM measurements")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| Point { time: micros(&r.get("time")), dev_eui: hex(r.get("dev_eui")), name: r.get("name"), value: r.get("value") })
        .collect();
    let uplinks = sqlx::query("SELECT time, rx_info FROM uplinks")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let rx: sqlx::types::Json<Value> = r.get("rx_info");
            let gateways = rx.0.as_array().map_or(Vec::new(), |a| a.iter().map(|g| g["gatewayId"].as_str().unwrap().to_string()).collect());
            Uplink { time: micros(&r.get("time")), gateways }
        })
        .collect();
    Stored { measurements, uplinks }
}

/// The dashboard's time range, interval and variable values, and the expansion of its macros.
struct Grafana {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval_secs: i64,
    vars: BTreeMap<&'static str, Vec<String>>,
}

impl Grafana {
    fn literal(t: &DateTime<Utc>) -> String {
        format!("'{}'", t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    /// `sql` with every `$__macro(…)`, `${var:format}` and `$var` replaced.
    fn expand(&self, sql: &str) -> String {
        let mut out = String::new();
        let mut rest = sql;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(after) = rest.strip_prefix("__") {
                let name_len = after.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(after.len());
                let (name, after) = after.split_at(name_len);
                let (args, after) = macro_args(after).unwrap_or_else(|| panic!("$__{name} without arguments in\n{sql}"));
                out.push_str(&self.macro_call(name, &args, sql));
                rest = after;
            } else if let Some(after) = rest.strip_prefix('{') {
                let end = after.find('}').unwrap_or_else(|| panic!("unclosed ${{ in\n{sql}"));
                let (name, format) = match after[..end].split_once(':') {
                    Some((n, f)) => (n, Some(f)),
                    None => (&after[..end], None),
                };
                out.push_str(&self.variable(name, format, sql));
                rest = &after[end + 1..];
            } else {
                let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                assert!(name_len > 0, "a lone $ in\n{sql}");
                out.push_str(&self.variable(&rest[..name_len], None, sql));
                rest = &rest[name_len..];
            }
        }
        out.push_str(rest);
        assert!(!out.contains('$'), "unreplaced $ in\n{out}");
        out
    }

    fn macro_call(&self, name: &str, args: &[String], sql: &str) -> String {
        let one = |n: usize| {
            assert_eq!(args.len(), n, "$__{name} takes {n} arguments in\n{sql}");
        };
        match name {
            "timeFilter" => {
                one(1);
                format!("{} BETWEEN {} AND {}", args[0], Self::literal(&self.from), Self::literal(&self.to))
            }
            "timeFrom" => {
                one(0);
                Self::literal(&self.from)
            }
            "timeTo" => {
                one(0);
                Self::literal(&self.to)
            }
            "timeGroup" | "timeGroupAlias" => {
                one(2);
                let secs = match args[1].as_str() {
                    "$__interval" => self.interval_secs,
                    quoted => duration_secs(quoted.trim_matches('\'')).unwrap_or_else(|| panic!("bad interval {quoted} in\n{sql}")),
                };
                // Grafana writes epoch seconds; as a timestamp here so rows decode as times.
                let group = format!("to_timestamp(floor(extract(epoch from {})/{secs})*{secs})", args[0]);
                if name == "timeGroupAlias" {
                    format!("{group} AS \"time\"")
                } else {
                    group
                }
            }
            other => panic!("the test does not know the macro $__{other} in\n{sql}"),
        }
    }

    fn variable(&self, name: &str, format: Option<&str>, sql: &str) -> String {
        let values = self.vars.get(name).unwrap_or_else(|| panic!("the test has no value for ${name} in\n{sql}"));
        let quoted = || values.iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect::<Vec<_>>().join(",");
        match format {
            Some("sqlstring") => quoted(),
            // Without a format Grafana's SQL data sources quote multi-value variables only.
            None if values.len() > 1 => quoted(),
            None => values[0].clone(),
            Some(other) => panic!("the test does not know the format :{other} in\n{sql}"),
        }
    }
}

/// The arguments of `(a, b)` at the start of `s`, split at top-level commas, and the rest.
fn macro_args(s: &str) -> Option<(Vec<String>, &str)> {
    let body = s.strip_prefix('(')?;
    let (mut depth, mut quoted, mut start) = (0, false, 0);
    let mut args = Vec::new();
    for (i, c) in body.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ',' if !quoted && depth == 0 => {
                args.push(body[start..i].trim().to_string());
                start = i + 1;
            }
            ')' if !quoted && depth == 0 => {
                let last = body[start..i].trim();
                if !last.is_empty() || !args.is_empty() {
                    args.push(last.to_string());
                }
                return Some((args, &body[i + 1..]));
            }
            ')' if !quoted => depth -= 1,
            _ => {}
        }
    }
    None
}

fn duration_secs(d: &str) -> Option<i64> {
    let unit = d.chars().last()?;
    let n: i64 = d[..d.len() - 1].parse().ok()?;
    Some(
        n * match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return None,
        },
    )
}

/// Average per (key) over `rows` of (key, value), in key order.
fn averages<K: Ord>(rows: impl IntoIterator<Item = (K, f64)>) -> Vec<(K, f64)> {
    let mut groups: BTreeMap<K, Vec<f64>> = BTreeMap::new();
    for (k, v) in rows {
        groups.entry(k).or_default().push(v);
    }
    groups.into_iter().map(|(k, vs)| (k, vs.iter().sum::<f64>() / vs.len() as f64)).collect()
}

fn counts<K: Ord>(keys: impl IntoIterator<Item = K>) -> Vec<(K, i64)> {
    let mut groups: BTreeMap<K, i64> = BTreeMap::new();
    for k in keys {
        *groups.entry(k).or_default() += 1;
    }
    groups.into_iter().collect()
}

/// The newest stored value of `name` per device for which `keep` holds, by EUI.
fn latest(s: &Stored, name: &str, keep: impl Fn(i64, &str) -> bool) -> Vec<(String, i64, Option<f64>)> {
    let mut newest: BTreeMap<String, (i64, Option<f64>)> = BTreeMap::new();
    for m in s.measurements.iter().filter(|m| m.name == name && keep(m.time, &m.dev_eui)) {
        if newest.get(&m.dev_eui).is_none_or(|(t, _)| m.time > *t) {
            newest.insert(m.dev_eui.clone(), (m.time, m.value));
        }
    }
    newest.into_iter().map(|(d, (t, v))| (d, t, v)).collect()
}

/// Uplinks through the server, one per (device, temperature, heard by both gateways?).
async fn send_uplinks(server: &TestServer) -> usize {
    let mut gws = GatewayPair::new(GATEWAYS[0], GATEWAYS[1], server.gateway).await;
    let mut devices: Vec<Device> = DEVICES.iter().map(|(eui, addr)| Device::abp(eui, addr, NWK_S_KEY, APP_S_KEY)).collect();
    let plan: [(usize, i16, bool); 6] = [(0, 215, true), (0, 230, false), (1, 180, true), (1, 176, false), (2, -40, false), (0, 241, true)];
    let mut tmst = 1_000_000u32;
    for (i, (dev, tenths, both)) in plan.iter().enumerate() {
        let phy = devices[*dev].uplink(false, 2, &lpp(*tenths));
        tmst += 5_000_000;
        if *both {
            gws.hear(&phy, tmst, 40).await;
        } else {
            // Alternate which single gateway hears it, so both have lone uplinks.
            let gw = if i % 2 == 0 { &mut gws.best } else { &mut gws.second };
            let t = gw.push_rxpk(vec![common::gateway::rxpk(&phy, tmst, -70, 6.0)]).await;
            gw.expect_ack(common::gateway::PUSH_ACK, t).await;
        }
        // Distinct uplink times, so "latest" has one answer.
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    plan.len()
}

/// Rows only SQL can place: earlier hours, a deleted device, a series outside the ranges,
/// an uplink heard by an unregistered gateway and one stored without gateways.
async fn insert_known_rows(pool: &PgPool, application_id: &str, now: DateTime<Utc>) {
    let ago = |minutes: i64| now - chrono::Duration::minutes(minutes);
    let measurements: [(DateTime<Utc>, &str, &str, f64); 9] = [
        (ago(190), DEVICES[0].0, TEMPERATURE, 20.0),
        (ago(180), DEVICES[0].0, TEMPERATURE, 21.0),
        (ago(110), DEVICES[0].0, TEMPERATURE, 19.25),
        (ago(175), DEVICES[1].0, TEMPERATURE, 17.5),
        (ago(170), DELETED_DEVICE, TEMPERATURE, 30.0),
        // Outside the last 24 hours: in no 24-hour answer, in the 7-day one.
        (ago(30 * 60), DEVICES[2].0, TEMPERATURE, -8.0),
        (ago(30 * 60), DEVICES[2].0, "pressure", 1013.0),
        (ago(3 * 24 * 60), DELETED_3_DAYS_AGO, TEMPERATURE, 11.0),
        (ago(8 * 24 * 60), DELETED_8_DAYS_AGO, TEMPERATURE, 12.0),
    ];
    for (time, eui, name, value) in measurements {
        sqlx::query(
            "INSERT INTO measurements (time, dev_eui, application_id, name, kind, value) \
             VALUES ($1, decode($2, 'hex'), $3::uuid, $4, 'GAUGE', $5)",
        )
        .bind(time)
        .bind(eui)
        .bind(application_id)
        .bind(name)
        .bind(value)
        .execute(pool)
        .await
        .unwrap();
    }
    let rx = |ids: &[&str]| {
        Value::Array(
            ids.iter()
                .enumerate()
                .map(|(i, id)| serde_json::json!({"gatewayId": id, "rssi": -80 - i as i32, "snr": 2.5, "channel": i}))
                .collect(),
        )
    };
    for (time, rx_info) in [(ago(120), rx(&[GATEWAYS[0], UNKNOWN_GATEWAY])), (ago(119), Value::Null)] {
        sqlx::query(
            "INSERT INTO uplinks (time, deduplication_id, dev_eui, application_id, dev_addr, f_cnt, f_port, confirmed, dr, \
             frequency, rssi, snr, gateway_count, data, object, rx_info, tx_info) \
             VALUES ($1, gen_random_uuid(), decode($2, 'hex'), $3::uuid, decode('26011a01', 'hex'), 0, 2, false, 5, 868100000, \
             -80, 2.5, 2, '\\x00', NULL, $4, '{}')",
        )
        .bind(time)
        .bind(DELETED_DEVICE)
        .bind(application_id)
        .bind(sqlx::types::Json(rx_info))
        .execute(pool)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn dashboard_and_docs_queries_return_the_expected_rows_on_postgres() {
    let server = TestServer::start(Backend::Postgres, &[("LORAFLOW_NETWORK__DEDUP_WINDOW_MS", "50")]).await;
    let api = server.client();
    let p = provision::application_and_profile(&api, "CAYENNE_LPP", "").await;
    for gw in GATEWAYS {
        provision::gateway(&api, gw).await;
    }
    for (eui, addr) in DEVICES {
        provision::abp_device(&api, &p, eui, addr, NWK_S_KEY, APP_S_KEY).await;
    }
    let sent = send_uplinks(&server).await;
    let pool = PgPool::connect(&server.database_url).await.unwrap();
    let all_stored = common::eventually(Duration::from_secs(10), || async {
        let (u, m): (i64, i64) =
            sqlx::query_as("SELECT (SELECT count(*) FROM uplinks), (SELECT count(*) FROM measurements)").fetch_one(&pool).await.unwrap();
        (u == sent as i64 && m == 2 * sent as i64).then_some(())
    })
    .await;
    assert!(all_stored.is_some(), "the {sent} uplinks and their values were never all stored");
    let now = Utc::now();
    insert_known_rows(&pool, &p.application_id, now).await;
    let s = stored(&pool).await;

    // What the server stored is what was sent: the test's own record of the values.
    let mut temperatures: Vec<(String, f64)> = s
        .measurements
        .iter()
        .filter(|m| m.name == TEMPERATURE && m.time > micros(&(now - chrono::Duration::minutes(5))))
        .map(|m| (m.dev_eui.clone(), m.value.unwrap()))
        .collect();
    temperatures.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let want: Vec<(String, f64)> = vec![
        (DEVICES[0].0.into(), 21.5),
        (DEVICES[0].0.into(), 23.0),
        (DEVICES[0].0.into(), 24.1),
        (DEVICES[1].0.into(), 17.6),
        (DEVICES[1].0.into(), 18.0),
        (DEVICES[2].0.into(), -4.0),
    ];
    assert_eq!(temperatures.len(), want.len(), "{temperatures:?}");
    for (got, want) in temperatures.iter().zip(&want) {
        assert!(got.0 == want.0 && (got.1 - want.1).abs() < 1e-9, "{temperatures:?}");
    }
    assert_eq!(s.uplinks.iter().filter(|u| u.gateways.len() == 2).count(), 3 + 1, "uplinks heard by two gateways");

    dashboard(&pool, &s, now).await;
    docs(&pool, &s, now).await;
    pool.close().await;
}

async fn dashboard(pool: &PgPool, s: &Stored, now: DateTime<Utc>) {
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/loraflow.json")).unwrap())
            .unwrap();
    importable(&json);
    let selected = [DEVICES[0].0, DEVICES[1].0];
    let g = Grafana {
        from: DateTime::from_timestamp(now.timestamp() - 24 * 3600, 0).unwrap(),
        to: DateTime::from_timestamp(now.timestamp() + 60, 0).unwrap(),
        interval_secs: 3600,
        vars: BTreeMap::from([
            ("measurement", vec![TEMPERATURE.to_string()]),
            ("device", selected.iter().map(|d| d.to_string()).collect()),
        ]),
    };
    let in_range = |t: i64| micros(&g.from) <= t && t <= micros(&g.to);
    let mut checked = BTreeSet::new();

    for var in json["templating"]["list"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        match var["type"].as_str().unwrap() {
            "datasource" => continue,
            "query" => {}
            other => panic!("variable {name} of type {other}: the test does not check it"),
        }
        let sql = g.expand(var["query"].as_str().unwrap());
        let got = run(pool, &sql).await;
        match name {
            "measurement" => {
                let names: BTreeSet<&str> = s.measurements.iter().filter(|m| in_range(m.time)).map(|m| m.name.as_str()).collect();
                let want: Vec<Vec<Cell>> = names.into_iter().map(|n| vec![text(n)]).collect();
                assert_eq!(want.len(), 2, "the pressure series lies outside the range");
                check(name, &sql, &got, &["name"], &want);
            }
            "device" => {
                let want: Vec<Vec<Cell>> = DEVICES.iter().map(|(eui, _)| vec![text(eui), text(&device_name(eui).unwrap())]).collect();
                check(name, &sql, &got, &["__value", "__text"], &want);
            }
            other => panic!("query variable {other}: the test does not check it"),
        }
        checked.insert(format!("variable {name}"));
    }

    let panels = json["panels"].as_array().unwrap();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 1, "{title}");
        let sql = g.expand(targets[0]["rawSql"].as_str().unwrap());
        let got = run(pool, &sql).await;
        let chosen = |m: &&Point| m.name == TEMPERATURE && selected.contains(&m.dev_eui.as_str()) && in_range(m.time);
        match title {
            "$measurement per device" => {
                let bucket = g.interval_secs * 1_000_000;
                let want: Vec<Vec<Cell>> = averages(
                    s.measurements
                        .iter()
                        .filter(chosen)
                        .map(|m| ((m.time.div_euclid(bucket) * bucket, device_name(&m.dev_eui).unwrap()), m.value.unwrap())),
                )
                .into_iter()
                .map(|((t, name), avg)| vec![Cell::Time(t), text(&name), Cell::Num(Some(avg))])
                .collect();
                assert!(want.len() >= 4, "several hours and devices: {want:?}");
                check(title, &sql, &got, &["time", "metric", "value"], &want);
            }
            "Latest $measurement per device" => {
                let want: Vec<Vec<Cell>> = latest(s, TEMPERATURE, |t, d| selected.contains(&d) && in_range(t))
                    .into_iter()
                    .map(|(d, t, v)| {
                        vec![text(&d), Cell::Text(device_name(&d)), text("test-app"), Cell::Time(t), Cell::Num(v), Cell::Text(None)]
                    })
                    .collect();
                check(title, &sql, &got, &["dev_eui", "device_name", "application_name", "time", "value", "text_value"], &want);
            }
            "Uplinks per gateway per minute" => {
                let want: Vec<Vec<Cell>> = counts(s.uplinks.iter().filter(|u| in_range(u.time)).flat_map(|u| {
                    u.gateways.iter().map(|gw| (u.time.div_euclid(MINUTE) * MINUTE, gateway_name(gw).unwrap_or_else(|| gw.clone())))
                }))
                .into_iter()
                .map(|((t, gw), n)| vec![Cell::Time(t), text(&gw), Cell::Int(n)])
                .collect();
                check(title, &sql, &got, &["time", "metric", "value"], &want);
            }
            "Uplinks per minute" => {
                let want: Vec<Vec<Cell>> =
                    counts(s.uplinks.iter().filter(|u| in_range(u.time)).map(|u| u.time.div_euclid(MINUTE) * MINUTE))
                        .into_iter()
                        .map(|(t, n)| vec![Cell::Time(t), Cell::Int(n)])
                        .collect();
                check(title, &sql, &got, &["time", "uplinks"], &want);
            }
            other => panic!("panel {other:?}: the test does not check it"),
        }
        checked.insert(format!("panel {title}"));
    }
    assert_eq!(checked.len(), 2 + 4, "every query variable and panel checked: {checked:?}");
}

/// The statements of the ```sql blocks of a Markdown page, without their final `;`.
fn sql_blocks(page: &str) -> Vec<&str> {
    page.split("```sql\n").skip(1).map(|b| b.split("```").next().unwrap_or_default().trim().trim_end_matches(';')).collect()
}

/// What an import needs beyond valid JSON: identity, the variables the queries use, and every
/// query on the data source the `datasource` variable picks (no data source uid of ours).
fn importable(json: &Value) {
    assert!(json["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    assert_eq!(json["uid"], "loraflow-measurements");
    assert!(json["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(json.get("id").is_none_or(Value::is_null), "no id: Grafana assigns it on import");
    let vars = json["templating"]["list"].as_array().unwrap();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("variable {name}"));
    assert_eq!(var("datasource")["query"], "grafana-postgresql-datasource");
    assert_eq!((var("device")["multi"].as_bool(), var("device")["includeAll"].as_bool()), (Some(true), Some(true)));
    assert_eq!(var("measurement")["multi"].as_bool(), Some(false));
    let postgres = serde_json::json!({"type": "grafana-postgresql-datasource", "uid": "${datasource}"});
    let mut ids = BTreeSet::new();
    for p in json["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel ids are unique");
        assert_eq!(p["datasource"], postgres, "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!((&t["datasource"], &t["rawQuery"], &t["editorMode"]), (&postgres, &Value::Bool(true), &Value::from("code")));
        }
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"], postgres, "{}", v["name"]);
    }
}

/// The ```sql blocks of docs/data.md, in order; each must be one the test knows.
async fn docs(pool: &PgPool, s: &Stored, now: DateTime<Utc>) {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/data.md")).unwrap();
    let blocks = sql_blocks(&page);
    let since = |d: chrono::Duration| {
        let from = micros(&(now - d));
        move |t: i64| t >= from
    };
    let day = since(chrono::Duration::hours(24));
    let week = since(chrono::Duration::days(7));
    let hour = since(chrono::Duration::hours(1));
    let no_vars = Grafana { from: now, to: now, interval_secs: 0, vars: BTreeMap::new() };
    let mut checked = 0;
    for sql in &blocks {
        let sql = no_vars.expand(sql);
        let got = run(pool, &sql).await;
        if sql.contains("decode('70b3d57ed0000a01', 'hex')") {
            let want: Vec<Vec<Cell>> = averages(
                s.measurements
                    .iter()
                    .filter(|m| m.dev_eui == DEVICES[0].0 && m.name == TEMPERATURE && day(m.time))
                    .map(|m| (m.time.div_euclid(HOUR) * HOUR, m.value.unwrap())),
            )
            .into_iter()
            .map(|(t, avg)| vec![Cell::Time(t), Cell::Num(Some(avg))])
            .collect();
            check("hourly average of one device (table)", &sql, &got, &["hour", "avg_temperature"], &want);
        } else if sql.contains("FROM measurement_points") && sql.contains("avg(value)") {
            let want: Vec<Vec<Cell>> = averages(
                s.measurements
                    .iter()
                    .filter(|m| m.name == TEMPERATURE && day(m.time))
                    .map(|m| ((m.time.div_euclid(HOUR) * HOUR, m.dev_eui.clone()), m.value.unwrap())),
            )
            .into_iter()
            .map(|((t, d), avg)| vec![Cell::Time(t), text(&d), Cell::Text(device_name(&d)), Cell::Num(Some(avg))])
            .collect();
            assert!(want.iter().any(|r| r[2] == Cell::Text(None)), "the deleted device's history is in the answer");
            check("average per device per hour", &sql, &got, &["hour", "dev_eui", "device_name", "avg_value"], &want);
        } else if sql.contains("FROM measurement_points") && sql.contains("DISTINCT ON (dev_eui)") {
            let want: Vec<Vec<Cell>> = latest(s, TEMPERATURE, |t, _| week(t))
                .into_iter()
                .map(|(d, t, v)| vec![text(&d), Cell::Text(device_name(&d)), Cell::Time(t), Cell::Num(v)])
                .collect();
            assert_eq!(want.len(), DEVICES.len() + 2, "every device and two deleted ones, not the one of 8 days ago");
            check("latest value of every device", &sql, &got, &["dev_eui", "device_name", "time", "value"], &want);
        } else if sql.contains("FROM uplink_gateways") {
            let want: Vec<Vec<Cell>> = counts(
                s.uplinks
                    .iter()
                    .filter(|u| hour(u.time))
                    .flat_map(|u| u.gateways.iter().map(|gw| (u.time.div_euclid(MINUTE) * MINUTE, gw.clone()))),
            )
            .into_iter()
            .map(|((t, gw), n)| vec![Cell::Time(t), text(&gw), Cell::Text(gateway_name(&gw)), Cell::Int(n)])
            .collect();
            check("uplinks per gateway per minute", &sql, &got, &["minute", "gateway_id", "gateway_name", "uplinks"], &want);
        } else {
            panic!("an SQL block of docs/data.md the test does not check:\n{sql}");
        }
        checked += 1;
    }
    assert_eq!(checked, 4, "the four queries of docs/data.md");

    // The README's SQL is one of these, so it is checked too.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let readme_blocks = sql_blocks(&readme);
    assert!(!readme_blocks.is_empty(), "README.md shows a query");
    for sql in readme_blocks {
        assert!(blocks.contains(&sql), "README.md's query is not one of docs/data.md's (checked here):\n{sql}");
    }
}
