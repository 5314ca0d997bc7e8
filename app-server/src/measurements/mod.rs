//! Measurements: the values of an uplink's decoded object as named, typed series
//! (`temperature_sensor_1`, GAUGE), stored next to the uplink and queried over REST.
//!
//! What becomes a series is a pure decision on the object and the device profile:
//! a path the profile defines takes the definition's name and kind; every other numeric leaf
//! becomes a GAUGE named after its path (see [`flatten::series_name`]) when the profile's
//! `autoDetectMeasurements` is on. Undefined text and boolean leaves are not series: a
//! status string or flag is rarely something to chart, and a profile can name it.

pub mod flatten;
pub mod query;

#[cfg(test)]
mod proptests;

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use loraflow_network_server::storage::{Measurement, MeasurementDefinition, MeasurementKind, MeasurementValue};

use flatten::Leaf;

/// Series per uplink; the rest of a larger object is not stored as measurements.
pub const MAX_PER_UPLINK: usize = 64;
/// Longest series name (and definition path) a profile may give.
pub const MAX_NAME_LEN: usize = 100;

/// The series of one decoded object. A definition's name wins over an auto-detected one of
/// the same spelling; of two leaves with the same name the first (in document order) is kept.
pub fn measurements(
    object: &Map<String, Value>,
    definitions: &BTreeMap<String, MeasurementDefinition>,
    auto_detect: bool,
) -> Vec<Measurement> {
    let leaves = flatten::leaves(object);
    let defined: HashSet<&str> = leaves.iter().filter_map(|(p, _)| definitions.get(p).map(|d| d.name.as_str())).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (path, leaf) in &leaves {
        if out.len() >= MAX_PER_UPLINK {
            break;
        }
        let m = match definitions.get(path) {
            Some(d) => defined_value(leaf, d.kind).map(|value| Measurement { name: d.name.clone(), kind: d.kind, value }),
            None if auto_detect => match leaf {
                Leaf::Number(n) => {
                    let name = flatten::series_name(path);
                    (!name.is_empty() && !defined.contains(name.as_str()) && name.len() <= MAX_NAME_LEN).then_some(Measurement {
                        name,
                        kind: MeasurementKind::Gauge,
                        value: MeasurementValue::Number(*n),
                    })
                }
                _ => None,
            },
            None => None,
        };
        if let Some(m) = m {
            if seen.insert(m.name.clone()) {
                out.push(m);
            }
        }
    }
    out
}

/// A defined leaf as its kind reads it: STRING takes any scalar as text; the numeric kinds
/// take numbers, booleans as 0/1, and text that parses as a number (codecs that format
/// their numbers); anything else is not a value of the series.
fn defined_value(leaf: &Leaf<'_>, kind: MeasurementKind) -> Option<MeasurementValue> {
    match (kind, leaf) {
        (MeasurementKind::String, Leaf::Text(s)) => Some(MeasurementValue::Text((*s).to_string())),
        (MeasurementKind::String, Leaf::Number(n)) => Some(MeasurementValue::Text(n.to_string())),
        (MeasurementKind::String, Leaf::Bool(b)) => Some(MeasurementValue::Text(b.to_string())),
        (_, Leaf::Number(n)) => Some(MeasurementValue::Number(*n)),
        (_, Leaf::Bool(b)) => Some(MeasurementValue::Number(if *b { 1.0 } else { 0.0 })),
        (_, Leaf::Text(s)) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(MeasurementValue::Number),
    }
}

/// Whether `name` may name a series: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `_`, `-`
/// or `.` (it is a URL path segment of the query API).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        let Value::Object(m) = v else { panic!("not an object") };
        m
    }

    fn def(name: &str, kind: MeasurementKind) -> MeasurementDefinition {
        MeasurementDefinition { name: name.into(), kind }
    }

    fn gauge(name: &str, v: f64) -> Measurement {
        Measurement { name: name.into(), kind: MeasurementKind::Gauge, value: MeasurementValue::Number(v) }
    }

    #[test]
    fn numeric_leaves_are_auto_detected_as_gauges() {
        let o = object(json!({"temperatureSensor": {"1": 21.5}, "humiditySensor": {"2": 40}, "label": "x", "ok": true}));
        assert_eq!(measurements(&o, &BTreeMap::new(), true), [gauge("humidity_sensor_2", 40.0), gauge("temperature_sensor_1", 21.5)]);
    }

    #[test]
    fn without_auto_detection_only_definitions_count() {
        let o = object(json!({"a": 1, "b": 2}));
        assert!(measurements(&o, &BTreeMap::new(), false).is_empty());
        let defs = BTreeMap::from([("b".to_string(), def("bee", MeasurementKind::Counter))]);
        let got = measurements(&o, &defs, false);
        assert_eq!(got, [Measurement { name: "bee".into(), kind: MeasurementKind::Counter, value: MeasurementValue::Number(2.0) }]);
    }

    #[test]
    fn a_definition_renames_a_path_and_sets_its_kind() {
        let o = object(json!({"temperatureSensor": {"1": 21.5, "2": 19.0}}));
        let defs = BTreeMap::from([("temperatureSensor.1".to_string(), def("room_temp", MeasurementKind::Absolute))]);
        let got = measurements(&o, &defs, true);
        assert_eq!(
            got,
            [
                Measurement { name: "room_temp".into(), kind: MeasurementKind::Absolute, value: MeasurementValue::Number(21.5) },
                gauge("temperature_sensor_2", 19.0),
            ]
        );
    }

    #[test]
    fn string_kind_stores_text_and_numeric_kinds_read_numbers_bools_and_numeric_text() {
        let o = object(json!({"state": "open", "code": 7, "flag": true, "txt": " 2.5 ", "bad": "n/a"}));
        let defs = BTreeMap::from([
            ("state".to_string(), def("state", MeasurementKind::String)),
            ("code".to_string(), def("code", MeasurementKind::String)),
            ("flag".to_string(), def("flag", MeasurementKind::Gauge)),
            ("txt".to_string(), def("txt", MeasurementKind::Gauge)),
            ("bad".to_string(), def("bad", MeasurementKind::Gauge)),
        ]);
        let got: BTreeMap<String, MeasurementValue> = measurements(&o, &defs, true).into_iter().map(|m| (m.name, m.value)).collect();
        assert_eq!(
            got,
            BTreeMap::from([
                ("code".to_string(), MeasurementValue::Text("7".into())),
                ("flag".to_string(), MeasurementValue::Number(1.0)),
                ("state".to_string(), MeasurementValue::Text("open".into())),
                ("txt".to_string(), MeasurementValue::Number(2.5)),
            ])
        );
    }

    #[test]
    fn names_are_unique_and_definitions_win_over_derived_names() {
        // `a_b` and `a.b` both derive `a_b`; the first in document order is kept.
        let o = object(json!({"a": {"b": 1}, "a_b": 2, "x": 3}));
        assert_eq!(measurements(&o, &BTreeMap::new(), true), [gauge("a_b", 1.0), gauge("x", 3.0)]);
        // A definition naming `x` after another path takes the name from auto-detected `x`.
        let defs = BTreeMap::from([("a_b".to_string(), def("x", MeasurementKind::Gauge))]);
        assert_eq!(measurements(&o, &defs, true), [gauge("a_b", 1.0), gauge("x", 2.0)]);
    }

    #[test]
    fn an_uplink_gives_at_most_the_bound() {
        let o = object(json!({ "v": (0..500).collect::<Vec<_>>() }));
        assert_eq!(measurements(&o, &BTreeMap::new(), true).len(), MAX_PER_UPLINK);
    }

    #[test]
    fn kinds_serialize_in_screaming_case() {
        assert_eq!(serde_json::to_string(&MeasurementKind::Absolute).unwrap(), "\"ABSOLUTE\"");
        assert_eq!(serde_json::from_str::<MeasurementKind>("\"STRING\"").unwrap(), MeasurementKind::String);
        for k in MeasurementKind::ALL {
            assert_eq!(MeasurementKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn series_names_are_url_safe() {
        assert!(valid_name("temperature_sensor_1") && valid_name("a.b-c"));
        assert!(!valid_name("") && !valid_name("a/b") && !valid_name("é") && !valid_name(&"x".repeat(MAX_NAME_LEN + 1)));
    }
}
