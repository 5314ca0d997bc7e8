//! Cayenne Low Power Payload (LPP), both directions.
//!
//! Wire format (myDevices "Cayenne LPP" documentation, data types from the IPSO
//! Alliance Smart Objects guidelines: LPP type = IPSO object id − 3200): a payload
//! is a sequence of `channel (1 byte) | type (1 byte) | value (big endian)` records.
//! Types 0–3, 101–104, 113, 115, 134 and 136 are the original Cayenne set; the
//! others are the extension commonly shipped by the ElectronicCats CayenneLPP
//! library (its `CayenneLPP.h` gives size, sign and resolution for each).
//!
//! The JSON shape follows ChirpStack v4's `codec/cayenne_lpp.rs` so its consumers
//! work unchanged: `{"temperatureSensor": {"3": 27.2}, "gpsLocation": {"1":
//! {"latitude": .., "longitude": .., "altitude": ..}}}`, keyed by type name, then by
//! the channel written as a decimal string. Types ChirpStack does not know use
//! camelCase names of our own (`voltage`, `unixTime`, `colour`, ...).

use serde_json::{Map, Number, Value};

/// Why a Cayenne LPP payload or object could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CayenneError {
    #[error("payload ends inside the record at byte {offset}: {needed} more byte(s) needed")]
    Truncated { offset: usize, needed: usize },
    #[error("unknown Cayenne LPP data type {data_type} at byte {offset}")]
    UnknownType { data_type: u8, offset: usize },
    #[error("object to encode must be a JSON object keyed by Cayenne LPP type name")]
    NotAnObject,
    #[error("unknown Cayenne LPP type name `{0}`")]
    UnknownName(String),
    #[error("`{name}`: channel `{channel}` is not an integer 0..=255 in decimal without leading zeros")]
    BadChannel { name: String, channel: String },
    #[error("`{name}`.`{channel}`: {reason}")]
    BadValue { name: String, channel: String, reason: String },
}

/// One fixed-width field of a record.
#[derive(Debug, Clone, Copy)]
struct Field {
    bytes: usize,
    signed: bool,
    /// The wire carries `value * divisor` as an integer.
    divisor: u32,
}

const fn unsigned(bytes: usize, divisor: u32) -> Field {
    Field { bytes, signed: false, divisor }
}

const fn signed(bytes: usize, divisor: u32) -> Field {
    Field { bytes, signed: true, divisor }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Scalar(Field),
    /// Several fields, rendered as a JSON object with these member names.
    Composite(&'static [(&'static str, Field)]),
}

#[derive(Debug, Clone, Copy)]
struct LppType {
    id: u8,
    name: &'static str,
    shape: Shape,
}

const XYZ_ACCELEROMETER: &[(&str, Field)] = &[("x", signed(2, 1000)), ("y", signed(2, 1000)), ("z", signed(2, 1000))];
const XYZ_GYROMETER: &[(&str, Field)] = &[("x", signed(2, 100)), ("y", signed(2, 100)), ("z", signed(2, 100))];
const RGB: &[(&str, Field)] = &[("r", unsigned(1, 1)), ("g", unsigned(1, 1)), ("b", unsigned(1, 1))];
const GPS: &[(&str, Field)] = &[("latitude", signed(3, 10_000)), ("longitude", signed(3, 10_000)), ("altitude", signed(3, 100))];

/// Every supported type, in the order the encoder writes them (as ChirpStack does:
/// by type, then by channel).
const TYPES: &[LppType] = &[
    LppType { id: 0, name: "digitalInput", shape: Shape::Scalar(unsigned(1, 1)) },
    LppType { id: 1, name: "digitalOutput", shape: Shape::Scalar(unsigned(1, 1)) },
    LppType { id: 2, name: "analogInput", shape: Shape::Scalar(signed(2, 100)) },
    LppType { id: 3, name: "analogOutput", shape: Shape::Scalar(signed(2, 100)) },
    LppType { id: 100, name: "genericSensor", shape: Shape::Scalar(unsigned(4, 1)) },
    LppType { id: 101, name: "illuminanceSensor", shape: Shape::Scalar(unsigned(2, 1)) },
    LppType { id: 102, name: "presenceSensor", shape: Shape::Scalar(unsigned(1, 1)) },
    LppType { id: 103, name: "temperatureSensor", shape: Shape::Scalar(signed(2, 10)) },
    LppType { id: 104, name: "humiditySensor", shape: Shape::Scalar(unsigned(1, 2)) },
    LppType { id: 113, name: "accelerometer", shape: Shape::Composite(XYZ_ACCELEROMETER) },
    LppType { id: 115, name: "barometer", shape: Shape::Scalar(unsigned(2, 10)) },
    LppType { id: 116, name: "voltage", shape: Shape::Scalar(unsigned(2, 100)) },
    LppType { id: 117, name: "current", shape: Shape::Scalar(unsigned(2, 1000)) },
    LppType { id: 118, name: "frequency", shape: Shape::Scalar(unsigned(4, 1)) },
    LppType { id: 120, name: "percentage", shape: Shape::Scalar(unsigned(1, 1)) },
    LppType { id: 121, name: "altitude", shape: Shape::Scalar(signed(2, 1)) },
    LppType { id: 125, name: "concentration", shape: Shape::Scalar(unsigned(2, 1)) },
    LppType { id: 128, name: "power", shape: Shape::Scalar(unsigned(2, 1)) },
    LppType { id: 130, name: "distance", shape: Shape::Scalar(unsigned(4, 1000)) },
    LppType { id: 131, name: "energy", shape: Shape::Scalar(unsigned(4, 1000)) },
    LppType { id: 132, name: "direction", shape: Shape::Scalar(unsigned(2, 1)) },
    LppType { id: 133, name: "unixTime", shape: Shape::Scalar(unsigned(4, 1)) },
    LppType { id: 134, name: "gyrometer", shape: Shape::Composite(XYZ_GYROMETER) },
    LppType { id: 135, name: "colour", shape: Shape::Composite(RGB) },
    LppType { id: 136, name: "gpsLocation", shape: Shape::Composite(GPS) },
    LppType { id: 142, name: "switch", shape: Shape::Scalar(unsigned(1, 1)) },
];

fn type_by_id(id: u8) -> Option<&'static LppType> {
    TYPES.iter().find(|t| t.id == id)
}

fn type_by_name(name: &str) -> Option<&'static LppType> {
    TYPES.iter().find(|t| t.name == name)
}

impl Shape {
    fn size(&self) -> usize {
        match self {
            Shape::Scalar(f) => f.bytes,
            Shape::Composite(fields) => fields.iter().map(|(_, f)| f.bytes).sum(),
        }
    }
}

impl Field {
    fn read(&self, b: &[u8]) -> Value {
        let raw = b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
        let raw = if self.signed {
            // Sign-extend from the field's width.
            let shift = 64 - 8 * self.bytes as u32;
            ((raw << shift) as i64) >> shift
        } else {
            raw as i64
        };
        if self.divisor == 1 {
            Value::Number(Number::from(raw))
        } else {
            // Dividing (not multiplying by 0.1) gives the double nearest the
            // decimal value, so 272 renders as 27.2.
            Number::from_f64(raw as f64 / f64::from(self.divisor)).map(Value::Number).unwrap_or(Value::Null)
        }
    }

    fn write(&self, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
        let x = v.as_f64().ok_or_else(|| format!("expected a number, got {v}"))?;
        let raw = (x * f64::from(self.divisor)).round();
        let bits = 8 * self.bytes as u32;
        let (min, max) = if self.signed { (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1) } else { (0, (1i64 << bits) - 1) };
        if !raw.is_finite() || raw < min as f64 || raw > max as f64 {
            return Err(format!(
                "{x} is out of range {} ..= {}",
                min as f64 / f64::from(self.divisor),
                max as f64 / f64::from(self.divisor)
            ));
        }
        let raw = raw as i64;
        out.extend_from_slice(&raw.to_be_bytes()[8 - self.bytes..]);
        Ok(())
    }
}

/// Decodes a Cayenne LPP payload into the ChirpStack-shaped JSON object.
///
/// A record repeated for the same type and channel keeps the last value, as in
/// ChirpStack. An empty payload decodes to `{}`.
pub fn decode(bytes: &[u8]) -> Result<Value, CayenneError> {
    let mut out = Map::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < 2 {
            return Err(CayenneError::Truncated { offset, needed: 2 - rest.len() });
        }
        let (channel, id) = (rest[0], rest[1]);
        let lpp = type_by_id(id).ok_or(CayenneError::UnknownType { data_type: id, offset: offset + 1 })?;
        let size = lpp.shape.size();
        let body = rest.get(2..2 + size).ok_or_else(|| CayenneError::Truncated { offset, needed: 2 + size - rest.len() })?;
        let value = match lpp.shape {
            Shape::Scalar(f) => f.read(body),
            Shape::Composite(fields) => {
                let mut obj = Map::new();
                let mut at = 0;
                for (name, f) in fields {
                    obj.insert((*name).to_string(), f.read(&body[at..at + f.bytes]));
                    at += f.bytes;
                }
                Value::Object(obj)
            }
        };
        let by_channel = out.entry(lpp.name).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = by_channel {
            m.insert(channel.to_string(), value);
        }
        offset += 2 + size;
    }
    Ok(Value::Object(out))
}

/// Encodes a ChirpStack-shaped object (as produced by [`decode`]) into an LPP payload.
///
/// Values are rounded to the type's resolution; a value outside the type's range is
/// an error rather than silently wrapped.
pub fn encode(object: &Value) -> Result<Vec<u8>, CayenneError> {
    let obj = object.as_object().ok_or(CayenneError::NotAnObject)?;
    if let Some(unknown) = obj.keys().find(|k| type_by_name(k).is_none()) {
        return Err(CayenneError::UnknownName(unknown.clone()));
    }
    let mut out = Vec::new();
    for lpp in TYPES {
        let Some(by_channel) = obj.get(lpp.name) else {
            continue;
        };
        let by_channel = by_channel.as_object().ok_or_else(|| CayenneError::BadValue {
            name: lpp.name.to_string(),
            channel: String::new(),
            reason: "expected an object keyed by channel".to_string(),
        })?;
        let mut channels = Vec::with_capacity(by_channel.len());
        for (key, value) in by_channel {
            // Only the decimal form decode writes ("3", not "03" or "+3"): two spellings of one
            // channel would write two records, of which a decoder keeps only the last.
            let channel: u8 = key
                .parse()
                .ok()
                .filter(|c: &u8| c.to_string() == *key)
                .ok_or_else(|| CayenneError::BadChannel { name: lpp.name.to_string(), channel: key.clone() })?;
            channels.push((channel, key, value));
        }
        channels.sort_by_key(|(channel, _, _)| *channel);
        for (channel, key, value) in channels {
            let bad = |reason: String| CayenneError::BadValue { name: lpp.name.to_string(), channel: key.clone(), reason };
            out.extend_from_slice(&[channel, lpp.id]);
            match lpp.shape {
                Shape::Scalar(f) => f.write(value, &mut out).map_err(bad)?,
                Shape::Composite(fields) => {
                    let members = value.as_object().ok_or_else(|| bad(format!("expected an object, got {value}")))?;
                    for (name, f) in fields {
                        let member = members.get(*name).ok_or_else(|| bad(format!("missing `{name}`")))?;
                        f.write(member, &mut out).map_err(|e| bad(format!("`{name}`: {e}")))?;
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    #[test]
    fn a_channel_has_one_spelling() {
        let ok = serde_json::json!({"temperatureSensor": {"3": 21.5}});
        assert_eq!(super::encode(&ok).unwrap(), vec![3, 0x67, 0x00, 0xd7]);
        for key in ["03", "+3", " 3", "256", "-1"] {
            let bad = serde_json::json!({"temperatureSensor": {key: 21.5, "3": 20.0}});
            assert!(matches!(super::encode(&bad), Err(super::CayenneError::BadChannel { .. })), "{key}");
        }
    }

    use super::*;
    use serde_json::json;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    // Source of the next four vectors: the examples of the myDevices Cayenne LPP
    // documentation ("Cayenne Low Power Payload", section "Examples").
    #[test]
    fn spec_example_two_temperature_sensors_decodes() {
        let v = decode(&hex("03 67 01 10 05 67 00 FF")).unwrap();
        assert_eq!(v, json!({"temperatureSensor": {"3": 27.2, "5": 25.5}}));
    }

    #[test]
    fn spec_example_negative_temperature_decodes() {
        let v = decode(&hex("01 67 FF D7")).unwrap();
        assert_eq!(v, json!({"temperatureSensor": {"1": -4.1}}));
    }

    #[test]
    fn spec_example_accelerometer_decodes() {
        let v = decode(&hex("06 71 04 D2 FB 2E 00 00")).unwrap();
        assert_eq!(v, json!({"accelerometer": {"6": {"x": 1.234, "y": -1.234, "z": 0.0}}}));
    }

    #[test]
    fn spec_example_gps_decodes() {
        let v = decode(&hex("01 88 06 76 5f f2 96 0a 00 03 e8")).unwrap();
        assert_eq!(v, json!({"gpsLocation": {"1": {"latitude": 42.3519, "longitude": -87.9094, "altitude": 10.0}}}));
    }

    /// One vector per type: (payload hex, expected JSON). Values are computed by hand
    /// from the size/sign/resolution columns of the LPP type table.
    fn vectors() -> Vec<(&'static str, Value)> {
        vec![
            ("01 00 01", json!({"digitalInput": {"1": 1}})),
            ("02 01 FF", json!({"digitalOutput": {"2": 255}})),
            ("03 02 FF 9C", json!({"analogInput": {"3": -1.0}})),
            ("04 03 04 D2", json!({"analogOutput": {"4": 12.34}})),
            ("05 64 FF FF FF FF", json!({"genericSensor": {"5": 4294967295u32}})),
            ("06 65 01 2C", json!({"illuminanceSensor": {"6": 300}})),
            ("07 66 01", json!({"presenceSensor": {"7": 1}})),
            ("08 67 FF 38", json!({"temperatureSensor": {"8": -20.0}})),
            ("09 68 61", json!({"humiditySensor": {"9": 48.5}})),
            ("0A 71 FC 18 03 E8 00 01", json!({"accelerometer": {"10": {"x": -1.0, "y": 1.0, "z": 0.001}}})),
            ("0B 73 27 8D", json!({"barometer": {"11": 1012.5}})),
            ("0C 74 01 4A", json!({"voltage": {"12": 3.3}})),
            ("0D 75 05 DC", json!({"current": {"13": 1.5}})),
            ("0E 76 00 00 03 E8", json!({"frequency": {"14": 1000}})),
            ("0F 78 64", json!({"percentage": {"15": 100}})),
            ("10 79 FF 9C", json!({"altitude": {"16": -100}})),
            ("11 7D 01 90", json!({"concentration": {"17": 400}})),
            ("12 80 00 64", json!({"power": {"18": 100}})),
            ("13 82 00 00 30 39", json!({"distance": {"19": 12.345}})),
            ("14 83 00 01 E2 40", json!({"energy": {"20": 123.456}})),
            ("15 84 01 0E", json!({"direction": {"21": 270}})),
            ("16 85 65 4C 7A 80", json!({"unixTime": {"22": 1699510912}})),
            ("17 86 00 64 FF 9C 27 10", json!({"gyrometer": {"23": {"x": 1.0, "y": -1.0, "z": 100.0}}})),
            ("18 87 FF 80 00", json!({"colour": {"24": {"r": 255, "g": 128, "b": 0}}})),
            (
                "19 88 F9 89 A1 00 C3 50 FF FF 9C",
                json!({"gpsLocation": {"25": {"latitude": -42.3519, "longitude": 5.0, "altitude": -1.0}}}),
            ),
            ("1A 8E 01", json!({"switch": {"26": 1}})),
        ]
    }

    #[test]
    fn every_type_decodes_its_vector() {
        let vectors = vectors();
        assert_eq!(vectors.len(), TYPES.len(), "one vector per supported type");
        for (payload, expected) in vectors {
            assert_eq!(decode(&hex(payload)).unwrap(), expected, "payload {payload}");
        }
    }

    #[test]
    fn every_type_encodes_back_to_its_vector() {
        for (payload, object) in vectors() {
            assert_eq!(encode(&object).unwrap(), hex(payload), "object {object}");
        }
    }

    #[test]
    fn all_types_in_one_payload_round_trip() {
        let payload: Vec<u8> = vectors().iter().flat_map(|(p, _)| hex(p)).collect();
        let object = decode(&payload).unwrap();
        assert_eq!(object.as_object().unwrap().len(), TYPES.len());
        assert_eq!(encode(&object).unwrap(), payload);
    }

    #[test]
    fn encoder_rounds_to_the_nearest_step_instead_of_truncating() {
        // 27.2 * 10 is 271.999... in binary floating point.
        let b = encode(&json!({"temperatureSensor": {"3": 27.2}})).unwrap();
        assert_eq!(b, hex("03 67 01 10"));
    }

    #[test]
    fn encoder_writes_types_then_channels_in_order() {
        let b = encode(&json!({
            "humiditySensor": {"5": 48.5},
            "temperatureSensor": {"7": 1.0, "3": 27.2}
        }))
        .unwrap();
        assert_eq!(b, hex("03 67 01 10 07 67 00 0A 05 68 61"));
    }

    #[test]
    fn truncated_record_is_an_error() {
        assert_eq!(decode(&hex("03 67 01")), Err(CayenneError::Truncated { offset: 0, needed: 1 }));
        assert_eq!(decode(&hex("03 67 01 10 05")), Err(CayenneError::Truncated { offset: 4, needed: 1 }));
        assert!(matches!(decode(&hex("01 88 06 76 5f f2 96 0a 00 03")), Err(CayenneError::Truncated { .. })));
    }

    #[test]
    fn unknown_type_is_an_error() {
        assert_eq!(decode(&hex("01 FE 00")), Err(CayenneError::UnknownType { data_type: 0xFE, offset: 1 }));
    }

    #[test]
    fn empty_payload_decodes_to_an_empty_object() {
        assert_eq!(decode(&[]).unwrap(), json!({}));
    }

    #[test]
    fn encoder_rejects_bad_objects() {
        assert_eq!(encode(&json!([1])), Err(CayenneError::NotAnObject));
        assert_eq!(encode(&json!({"temperature": {"1": 2}})), Err(CayenneError::UnknownName("temperature".into())));
        assert!(matches!(encode(&json!({"temperatureSensor": {"256": 2}})), Err(CayenneError::BadChannel { .. })));
        assert!(matches!(encode(&json!({"humiditySensor": {"1": 200}})), Err(CayenneError::BadValue { .. })));
        assert!(matches!(encode(&json!({"digitalOutput": {"1": -1}})), Err(CayenneError::BadValue { .. })));
        assert!(matches!(encode(&json!({"gpsLocation": {"1": {"latitude": 1.0, "longitude": 2.0}}})), Err(CayenneError::BadValue { .. })));
        assert!(matches!(encode(&json!({"digitalOutput": {"1": "on"}})), Err(CayenneError::BadValue { .. })));
    }
}
