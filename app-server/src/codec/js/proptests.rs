//! Property tests of what a JavaScript codec's output goes through on its way back to Rust
//! (issue 12 part 8): the glue's `[format, result]` text, the `warnings`/`errors` and `bytes`
//! conversions, and the whole trip through QuickJS: any JSON a script returns arrives as the
//! same JSON (up to number spelling), any `bytes` value is a payload or a refusal.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use super::super::{Codecs, PayloadCodec};
use super::*;

/// Integers beyond 2^53 are not JavaScript numbers; keep to those a script can return.
const JS_SAFE_INT: i64 = (1 << 53) - 1;

fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..10).prop_map(String::from_iter)
}

/// JSON a script can produce: numbers that are JavaScript numbers, any text, nesting a
/// few levels deep.
fn js_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-JS_SAFE_INT..=JS_SAFE_INT).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |x| serde_json::Number::from_f64(x).map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(text(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
        ]
    })
}

fn js_object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(text(), js_json(), 0..5).prop_map(|m| m.into_iter().collect())
}

/// The same JSON up to how a number is spelled: JavaScript has one number type, so `1.0`
/// comes back as `1` and `-0` as `0`.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w))),
        _ => a == b,
    }
}

fn codecs() -> &'static Codecs {
    static CODECS: std::sync::OnceLock<Codecs> = std::sync::OnceLock::new();
    CODECS.get_or_init(|| Codecs::new(CodecConfig::default()))
}

/// A decoder that returns the uplink's variables as its data, so the test picks the result.
const ECHO_DECODER: &str = "function decodeUplink(input) { return { data: input.variables.data, warnings: input.variables.warnings }; }";
/// An encoder that returns the object's `bytes` member as the payload.
const ECHO_ENCODER: &str = "function encodeDownlink(input) { return { bytes: input.data.bytes }; }";

fn recv_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000, 0).unwrap()
}

proptest! {
    #[test]
    fn any_glue_answer_text_is_split_or_refused(s in prop_oneof![".{0,40}", js_json().prop_map(|v| v.to_string())]) {
        let _ = split_tagged(&s, DECODE_FUNCTIONS, 1024);
    }

    #[test]
    fn a_tagged_result_splits_into_its_format_and_value(format in "[a-z0-9_]{1,12}", v in js_json()) {
        let out = serde_json::to_string(&(format.as_str(), &v)).unwrap();
        let split = split_tagged(&out, DECODE_FUNCTIONS, usize::MAX);
        if format == "limit" {
            prop_assert!(matches!(split, Err(CodecError::ResultTooLarge(_))));
        } else {
            prop_assert_eq!(split.unwrap(), (format, v));
        }
    }

    #[test]
    fn a_byte_array_is_read_back_as_its_bytes(bytes in vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(byte_array(serde_json::json!(bytes)).unwrap(), bytes);
    }

    #[test]
    fn any_bytes_value_is_a_payload_of_its_items_or_refused(v in js_json()) {
        match byte_array(v.clone()) {
            Ok(bytes) => {
                let Value::Array(items) = v else { panic!("{v} is not an array") };
                prop_assert_eq!(items.len(), bytes.len());
                for (item, b) in items.iter().zip(bytes) {
                    prop_assert_eq!(item.as_u64(), Some(u64::from(b)));
                }
            }
            Err(e) => prop_assert!(matches!(e, CodecError::BadReturn(_))),
        }
    }

    #[test]
    fn warnings_and_errors_take_any_value(v in proptest::option::of(js_json())) {
        let n = match &v {
            None | Some(Value::Null) => 0,
            Some(Value::Array(items)) => items.len(),
            Some(_) => 1,
        };
        prop_assert_eq!(strings(v.clone()).len(), n);
        let mut r = Map::new();
        if let Some(v) = v {
            r.insert("errors".into(), v);
        }
        prop_assert_eq!(check_errors(&mut r).is_ok(), n == 0);
        prop_assert!(!r.contains_key("errors"));
    }
}

proptest! {
    // Each case is a real QuickJS call on the worker pool: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_object_a_decoder_returns_arrives_unchanged(data in js_object(), warnings in vec(text(), 0..3)) {
        let codec = PayloadCodec::Js(Arc::from(ECHO_DECODER));
        let mut variables = Map::new();
        variables.insert("data".into(), Value::Object(data.clone()));
        variables.insert("warnings".into(), serde_json::json!(warnings));
        let decoded = codecs().decode_uplink(&codec, 1, &[1, 2, 3], recv_time(), &variables).unwrap();
        prop_assert!(same_json(&decoded.object, &Value::Object(data.clone())), "{} became {}", Value::Object(data), decoded.object);
        prop_assert_eq!(decoded.warnings, warnings);
    }

    #[test]
    fn any_value_a_decoder_returns_as_data_is_an_object_or_refused(data in js_json()) {
        let codec = PayloadCodec::Js(Arc::from(ECHO_DECODER));
        let mut variables = Map::new();
        variables.insert("data".into(), data.clone());
        match codecs().decode_uplink(&codec, 1, &[], recv_time(), &variables) {
            Ok(d) => prop_assert!(data.is_object() && same_json(&d.object, &data)),
            Err(e) => prop_assert!(!data.is_object() && matches!(e, CodecError::BadReturn(_)), "{e}"),
        }
    }

    #[test]
    fn any_bytes_an_encoder_returns_are_a_payload_or_refused(bytes in prop_oneof![vec(any::<u8>(), 0..64).prop_map(|b| serde_json::json!(b)), js_json()]) {
        let codec = PayloadCodec::Js(Arc::from(ECHO_ENCODER));
        let object = serde_json::json!({ "bytes": bytes });
        match codecs().encode_downlink(&codec, 1, &object, &Map::new()) {
            // JSON numbers compare as numbers: a returned 0.0 is the byte 0.
            Ok(payload) => prop_assert!(same_json(&serde_json::json!(payload), &bytes), "{bytes} became {payload:?}"),
            Err(e) => prop_assert!(matches!(e, CodecError::BadReturn(_)), "{e}"),
        }
    }
}
