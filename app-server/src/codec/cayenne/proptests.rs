//! Property tests of the Cayenne LPP codec (issue 12 part 8): any payload decodes to an
//! object or an error, and a decoded object encodes to the canonical payload (records by type
//! in table order, then by channel) that decodes to the same object; canonical payloads come
//! back byte for byte; any JSON given to the encoder is encoded or refused, never a panic.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

use super::*;

/// Canonical payloads: at most one record per (type, channel), written in encoder order, with
/// any value bytes (every bit pattern is a value of its type).
fn canonical_payload() -> impl Strategy<Value = Vec<u8>> {
    btree_map((0..TYPES.len(), any::<u8>()), any::<prop::sample::Index>(), 0..12).prop_flat_map(|records| {
        let bodies: Vec<_> = records.keys().map(|&(t, _)| vec(any::<u8>(), TYPES[t].shape.size())).collect();
        let keys: Vec<_> = records.into_keys().collect();
        bodies.prop_map(move |bodies| {
            let mut out = Vec::new();
            for (&(t, channel), body) in keys.iter().zip(bodies) {
                out.extend_from_slice(&[channel, TYPES[t].id]);
                out.extend(body);
            }
            out
        })
    })
}

/// Payloads a device might send: canonical ones cut or extended at random, records in any
/// order, repeated, or unknown types.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let record = (
        any::<u8>(),
        prop_oneof![3 => prop::sample::select(TYPES.iter().map(|t| t.id).collect::<Vec<_>>()), 1 => any::<u8>()],
        vec(any::<u8>(), 0..12),
    )
        .prop_map(|(channel, id, body)| {
            let size = type_by_id(id).map_or(body.len(), |t| t.shape.size());
            let mut r = vec![channel, id];
            r.extend(body.into_iter().take(size));
            r
        });
    prop_oneof![
        vec(any::<u8>(), 0..40),
        vec(record, 0..8).prop_map(|rs| rs.concat()),
        (canonical_payload(), vec(any::<u8>(), 0..4), any::<prop::sample::Index>()).prop_map(|(mut p, tail, cut)| {
            p.truncate(cut.index(p.len() + 1));
            p.extend(tail);
            p
        }),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |x| Number::from_f64(x).map(Value::Number)),
        (-100_000i64..100_000, 1u32..=10_000).prop_map(|(n, d)| Value::from(n as f64 / f64::from(d))),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![4 => number(), 1 => Just(Value::Null), 1 => any::<bool>().prop_map(Value::Bool), 1 => ".{0,6}".prop_map(Value::String)]
}

/// What a user may post as the object to encode: type names (known or not) to channels
/// (numbers or not) to values (numbers of any size, or members for the composite types).
fn object() -> impl Strategy<Value = Value> {
    let names =
        prop_oneof![4 => prop::sample::select(TYPES.iter().map(|t| t.name).collect::<Vec<_>>()).prop_map(str::to_string), 1 => ".{0,8}"];
    let channel = prop_oneof![4 => any::<u8>().prop_map(|c| c.to_string()), 1 => "[-+ 0-9a]{0,4}"];
    let members = btree_map(
        prop_oneof![
            Just("x"),
            Just("y"),
            Just("z"),
            Just("r"),
            Just("g"),
            Just("b"),
            Just("latitude"),
            Just("longitude"),
            Just("altitude"),
            Just("other")
        ],
        leaf(),
        0..5,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    let value = prop_oneof![2 => leaf(), 1 => members];
    let by_channel = prop_oneof![8 => btree_map(channel, value, 0..4).prop_map(to_object), 1 => leaf()];
    prop_oneof![8 => btree_map(names, by_channel, 0..5).prop_map(to_object), 1 => leaf()]
}

fn to_object(m: BTreeMap<String, Value>) -> Value {
    Value::Object(m.into_iter().collect::<Map<_, _>>())
}

proptest! {
    #[test]
    fn any_payload_decodes_to_an_object_that_encodes_canonically(p in payload()) {
        let Ok(object) = decode(&p) else { return Ok(()) };
        let canonical = encode(&object).unwrap();
        prop_assert_eq!(decode(&canonical).unwrap(), object);
        prop_assert!(canonical.len() <= p.len());
    }

    #[test]
    fn canonical_payloads_decode_and_encode_to_the_same_bytes(p in canonical_payload()) {
        let object = decode(&p).unwrap();
        prop_assert_eq!(encode(&object).unwrap(), p);
    }

    #[test]
    fn any_object_encodes_to_a_payload_or_is_refused(object in object()) {
        if let Ok(bytes) = encode(&object) {
            let back = decode(&bytes).unwrap();
            // Every record written names a type and channel of the object.
            for (name, channels) in back.as_object().unwrap() {
                prop_assert!(object.get(name).is_some(), "{name} was not in {object}");
                prop_assert!(!channels.as_object().unwrap().is_empty());
            }
        }
    }
}
