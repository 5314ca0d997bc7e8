//! A decoded object as dotted paths to its scalar leaves, and the series name a path gets.
//!
//! Paths: object members are joined with `.`, array elements by index (`readings.0`), so a
//! Cayenne LPP object gives `temperatureSensor.1` and `gpsLocation.1.latitude`, the keys a
//! ChirpStack profile's measurements use.
//!
//! Names (what Telegraf's JSON parser and ChirpStack's metrics make of such keys, in the
//! Prometheus-friendly spelling): every segment is turned from camelCase into snake_case and
//! lower-cased, anything that is not an ASCII letter or digit becomes `_`, segments are joined
//! with `_`, runs of `_` collapse and none is left at either end:
//! `temperatureSensor.1` → `temperature_sensor_1`, `gpsLocation.1.latitude` →
//! `gps_location_1_latitude`, `CO2` → `co2`, `batteryVoltage-mV` → `battery_voltage_m_v`.

use serde_json::{Map, Value};

/// Deeper nesting is not data a chart can use, and bounds the work per uplink.
pub const MAX_DEPTH: usize = 8;
/// Leaves looked at per object; a huge decoded array must not become thousands of rows.
pub const MAX_LEAVES: usize = 256;

/// A scalar leaf of a decoded object.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf<'a> {
    Number(f64),
    Bool(bool),
    Text(&'a str),
}

/// The scalar leaves of `object` (nulls are skipped) with their dotted paths, in document
/// order, at most [`MAX_LEAVES`] of them and at most [`MAX_DEPTH`] levels deep.
pub fn leaves(object: &Map<String, Value>) -> Vec<(String, Leaf<'_>)> {
    let mut out = Vec::new();
    for (k, v) in object {
        walk(k.clone(), v, 1, &mut out);
    }
    out
}

fn walk<'a>(path: String, v: &'a Value, depth: usize, out: &mut Vec<(String, Leaf<'a>)>) {
    if out.len() >= MAX_LEAVES {
        return;
    }
    match v {
        Value::Null => {}
        Value::Bool(b) => out.push((path, Leaf::Bool(*b))),
        // Finite by construction: JSON has no NaN or infinity.
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.push((path, Leaf::Number(f)));
            }
        }
        Value::String(s) => out.push((path, Leaf::Text(s))),
        Value::Array(items) if depth < MAX_DEPTH => {
            for (i, item) in items.iter().enumerate() {
                walk(format!("{path}.{i}"), item, depth + 1, out);
            }
        }
        Value::Object(members) if depth < MAX_DEPTH => {
            for (k, item) in members {
                walk(format!("{path}.{k}"), item, depth + 1, out);
            }
        }
        Value::Array(_) | Value::Object(_) => {}
    }
}

/// The series name derived from a dotted path (rule in the module comment); empty when the
/// path has no letter or digit at all.
pub fn series_name(path: &str) -> String {
    let mut name = String::with_capacity(path.len() + 4);
    let mut prev: Option<char> = None;
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            if prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit()) {
                name.push('_');
            }
            name.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('_') {
            name.push('_');
        }
        prev = Some(c);
    }
    while name.ends_with('_') {
        name.pop();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(v: Value) -> Vec<(String, String)> {
        let Value::Object(m) = v else { panic!("not an object") };
        leaves(&m).into_iter().map(|(p, l)| (p, format!("{l:?}"))).collect()
    }

    #[test]
    fn nested_objects_and_arrays_become_dotted_paths() {
        let got = paths(json!({"a": {"b": 1, "c": [2.5, {"d": "x"}]}, "e": true, "n": null}));
        let want = [("a.b", "Number(1.0)"), ("a.c.0", "Number(2.5)"), ("a.c.1.d", "Text(\"x\")"), ("e", "Bool(true)")];
        assert_eq!(got, want.map(|(p, l)| (p.to_string(), l.to_string())));
    }

    #[test]
    fn cayenne_lpp_objects_give_type_and_channel_paths() {
        let got = paths(json!({"temperatureSensor": {"1": 21.5, "3": -4.2}, "gpsLocation": {"2": {"latitude": 52.1, "longitude": 5.2}}}));
        let got: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(got, ["gpsLocation.2.latitude", "gpsLocation.2.longitude", "temperatureSensor.1", "temperatureSensor.3"]);
    }

    #[test]
    fn depth_and_leaf_count_are_bounded() {
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH + 2 {
            deep = json!({ "x": deep });
        }
        assert!(paths(json!({"deep": deep, "flat": 2})).iter().all(|(p, _)| p == "flat"));
        let big = json!({ "a": (0..1000).collect::<Vec<_>>() });
        assert_eq!(paths(big).len(), MAX_LEAVES);
    }

    #[test]
    fn names_are_snake_case_joined_with_underscores() {
        let cases = [
            ("temperatureSensor.1", "temperature_sensor_1"),
            ("gpsLocation.1.latitude", "gps_location_1_latitude"),
            ("humidity", "humidity"),
            ("CO2", "co2"),
            ("batteryVoltage-mV", "battery_voltage_m_v"),
            ("readings.0", "readings_0"),
            ("a..b__c ", "a_b_c"),
            ("-x-", "x"),
            ("room 2.Temp", "room_2_temp"),
            ("...", ""),
        ];
        for (path, want) in cases {
            assert_eq!(series_name(path), want, "{path}");
        }
    }
}
