//! Property tests of measurement flattening (issue 12 part 8): any decoded object gives
//! leaves that are really in it, all of them up to the bounds; any path gives a series name
//! that is URL-safe snake case and names itself; any object and profile give unique series
//! within the per-uplink bound.

use std::collections::{BTreeMap, HashSet};

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::flatten::{leaves, series_name, Leaf, MAX_DEPTH, MAX_LEAVES};
use super::*;

/// Keys as codecs write them, dots left out so that a path can be split back into keys.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-zA-Z0-9_]{1,8}", 1 => "[^.]{0,6}"]
}

fn json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |x| serde_json::Number::from_f64(x).map(Value::Number)),
        ".{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 300, 12, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..12).prop_map(Value::Array),
            btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect()))
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(key(), json(MAX_DEPTH as u32 + 2), 0..6).prop_map(|m| m.into_iter().collect())
}

/// Follows a dotted path of member names and array indexes.
fn lookup<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut v = object.get(parts.next()?)?;
    for p in parts {
        v = match v {
            Value::Object(m) => m.get(p)?,
            Value::Array(items) => items.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Non-null scalars at most `MAX_DEPTH` levels down: what `leaves` should find.
fn scalar_count(v: &Value, depth: usize) -> usize {
    match v {
        Value::Null => 0,
        Value::Array(items) if depth < MAX_DEPTH => items.iter().map(|i| scalar_count(i, depth + 1)).sum(),
        Value::Object(m) if depth < MAX_DEPTH => m.values().map(|i| scalar_count(i, depth + 1)).sum(),
        Value::Array(_) | Value::Object(_) => 0,
        _ => 1,
    }
}

fn kind() -> impl Strategy<Value = MeasurementKind> {
    prop::sample::select(MeasurementKind::ALL.to_vec())
}

proptest! {
    // Objects of a few hundred values, to reach the leaf bound: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_leaf_is_the_scalar_at_its_path_and_none_is_missed(o in object()) {
        let found = leaves(&o);
        let expected: usize = o.values().map(|v| scalar_count(v, 1)).sum();
        prop_assert_eq!(found.len(), expected.min(MAX_LEAVES));
        for (path, leaf) in &found {
            prop_assert!(path.split('.').count() <= MAX_DEPTH, "{path}");
            let v = lookup(&o, path);
            let same = match (leaf, v) {
                (Leaf::Number(n), Some(Value::Number(m))) => m.as_f64() == Some(*n),
                (Leaf::Bool(b), Some(Value::Bool(c))) => b == c,
                (Leaf::Text(s), Some(Value::String(t))) => s == t,
                _ => false,
            };
            prop_assert!(same, "{path}: {leaf:?} is not {v:?}");
        }
    }

}

proptest! {
    #[test]
    fn series_names_are_url_safe_snake_case_and_name_themselves(path in prop_oneof![".{0,30}", "[a-zA-Z0-9._ -]{0,30}"]) {
        let name = series_name(&path);
        prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{name}");
        prop_assert!(!name.starts_with('_') && !name.ends_with('_') && !name.contains("__"), "{name}");
        prop_assert_eq!(name.is_empty(), !path.chars().any(|c| c.is_ascii_alphanumeric()));
        prop_assert_eq!(series_name(&name), name.clone());
        if !name.is_empty() && name.len() <= MAX_NAME_LEN {
            prop_assert!(valid_name(&name));
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_object_and_profile_give_unique_series_within_the_bound(
        o in object(),
        defs in btree_map("[a-zA-Z0-9_.]{1,12}", ("[a-z0-9_]{1,8}", kind()), 0..6),
        picked in vec(any::<prop::sample::Index>(), 0..4),
        auto_detect in any::<bool>(),
    ) {
        // Define some of the object's own paths too, so definitions match.
        let paths: Vec<String> = leaves(&o).into_iter().map(|(p, _)| p).collect();
        let mut definitions: BTreeMap<String, MeasurementDefinition> =
            defs.into_iter().map(|(path, (name, kind))| (path, MeasurementDefinition { name, kind })).collect();
        if !paths.is_empty() {
            for (i, at) in picked.iter().enumerate() {
                let kind = MeasurementKind::ALL[i % MeasurementKind::ALL.len()];
                definitions.insert(paths[at.index(paths.len())].clone(), MeasurementDefinition { name: format!("defined_{i}"), kind });
            }
        }
        let got = measurements(&o, &definitions, auto_detect);
        prop_assert!(got.len() <= MAX_PER_UPLINK);
        let names: HashSet<&str> = got.iter().map(|m| m.name.as_str()).collect();
        prop_assert_eq!(names.len(), got.len());
        let defined_names: HashSet<&str> = definitions.values().map(|d| d.name.as_str()).collect();
        for m in &got {
            if !defined_names.contains(m.name.as_str()) {
                prop_assert!(auto_detect);
                prop_assert_eq!(m.kind, MeasurementKind::Gauge);
                prop_assert!(matches!(m.value, MeasurementValue::Number(_)));
                prop_assert!(valid_name(&m.name), "{}", m.name);
            }
            if let MeasurementValue::Number(n) = m.value {
                prop_assert!(n.is_finite());
            }
        }
    }
}
