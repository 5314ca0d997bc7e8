//! Rules for the text a REST body carries, checked before anything reaches the database so
//! that every backend answers the same: PostgreSQL cannot store NUL in `TEXT` or `\u0000` in
//! JSONB, SQLite can, so without this a NUL was a 500 on one backend and stored on the other.
//!
//! - Every string in a body (object keys included): no C0 control characters except tab,
//!   line feed and carriage return (free text such as descriptions and codec scripts keeps
//!   its layout). Checked once for every body in [`super::extract::parse_json`].
//! - Names and device tags are single-line labels: no control characters at all.
//! - Lengths are bounded (bytes of UTF-8), see the constants below.

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::ApiError;

/// `name` of gateways, applications, device profiles and devices.
pub const NAME_MAX: usize = 100;
/// `description` of gateways, applications and devices.
pub const DESCRIPTION_MAX: usize = 10_000;
/// Device tags: how many, key and value length, and keys plus values together. Tags travel
/// in every event of the device, so they must stay far below the MQTT message limit.
pub const TAGS_MAX: usize = 32;
pub const TAG_KEY_MAX: usize = 64;
pub const TAG_VALUE_MAX: usize = 256;
pub const TAGS_TOTAL_MAX: usize = 4096;

/// A control character that no string in a body may hold (tab, LF and CR are free text).
fn forbidden_anywhere(c: char) -> bool {
    c.is_ascii_control() && c != '\u{7f}' && !matches!(c, '\t' | '\n' | '\r')
}

fn describe(c: char) -> String {
    if c == '\0' {
        "a NUL character (U+0000)".to_string()
    } else {
        format!("the control character U+{:04X}", c as u32)
    }
}

/// Checks every string and key of a parsed body; the error names the JSON path of the value
/// (e.g. `tags.room`, `items[2]`) or, for a bad key, of the object holding it.
pub fn check_json_text(value: &Value) -> Result<(), ApiError> {
    walk(value, &mut String::new())
}

fn walk(value: &Value, path: &mut String) -> Result<(), ApiError> {
    match value {
        Value::String(s) => match s.chars().find(|c| forbidden_anywhere(*c)) {
            Some(c) => Err(ApiError::field(field_name(path), format!("must not contain {}", describe(c)))),
            None => Ok(()),
        },
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                if let Some(c) = key.chars().find(|c| forbidden_anywhere(*c)) {
                    return Err(ApiError::field(field_name(path), format!("a key must not contain {}", describe(c))));
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn field_name(path: &str) -> &str {
    if path.is_empty() {
        "body"
    } else {
        path
    }
}

/// A label on one line: no control character at all.
pub fn single_line(field: &str, s: &str) -> Result<(), ApiError> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(ApiError::field(field, format!("must be a single line without {}", describe(c)))),
        None => Ok(()),
    }
}

pub fn at_most(field: &str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.len() > max {
        return Err(ApiError::field(field, format!("must be at most {max} bytes, got {}", s.len())));
    }
    Ok(())
}

/// A required, non-blank, single-line name of at most [`NAME_MAX`] bytes.
pub fn required_name(name: Option<String>) -> Result<String, ApiError> {
    let Some(n) = name.filter(|n| !n.trim().is_empty()) else {
        return Err(ApiError::field("name", "must not be empty"));
    };
    at_most("name", &n, NAME_MAX)?;
    single_line("name", &n)?;
    Ok(n)
}

pub fn description(s: &str) -> Result<(), ApiError> {
    at_most("description", s, DESCRIPTION_MAX)
}

/// Device tags within the limits above; errors name `tags.<key>` or `tags`.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if tags.len() > TAGS_MAX {
        return Err(ApiError::field("tags", format!("at most {TAGS_MAX} tags, got {}", tags.len())));
    }
    let mut total = 0;
    for (key, value) in tags {
        if key.is_empty() {
            return Err(ApiError::field("tags", "a key must not be empty"));
        }
        if key.len() > TAG_KEY_MAX {
            let shown: String = key.chars().take(16).collect();
            return Err(ApiError::field("tags", format!("key {shown:?}… is {} bytes, at most {TAG_KEY_MAX} are allowed", key.len())));
        }
        let field = format!("tags.{key}");
        single_line(&field, key)
            .map_err(|_| ApiError::field("tags", format!("key {key:?} must be a single line without control characters")))?;
        at_most(&field, value, TAG_VALUE_MAX)?;
        single_line(&field, value)?;
        total += key.len() + value.len();
    }
    if total > TAGS_TOTAL_MAX {
        return Err(ApiError::field("tags", format!("keys and values together must be at most {TAGS_TOTAL_MAX} bytes, got {total}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(r: Result<(), ApiError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn nul_anywhere_in_a_body_names_its_path() {
        assert!(err(check_json_text(&json!({"name": "a\u{0}b"}))).starts_with("name: must not contain a NUL"));
        assert!(err(check_json_text(&json!({"tags": {"room": "x\u{0}"}}))).starts_with("tags.room: "));
        assert!(err(check_json_text(&json!({"object": {"list": [1, "ok", "\u{0}"]}}))).starts_with("object.list[2]: "));
        assert!(err(check_json_text(&json!({"tags": {"ro\u{0}om": "x"}}))).starts_with("tags: a key must not contain"));
        assert!(err(check_json_text(&json!("\u{0}"))).starts_with("body: "));
    }

    #[test]
    fn other_control_characters_are_refused_but_layout_is_kept() {
        assert!(err(check_json_text(&json!({"description": "bell\u{7}"}))).contains("U+0007"));
        assert!(err(check_json_text(&json!({"description": "esc\u{1b}[31m"}))).contains("U+001B"));
        check_json_text(&json!({"description": "line 1\r\nline\t2", "payloadCodecScript": "function f() {\n\treturn 1;\n}"})).unwrap();
        check_json_text(&json!({"name": "Zürich 東京 🚀", "n": 1, "b": true, "z": null})).unwrap();
    }

    #[test]
    fn names_are_single_line_non_blank_and_bounded() {
        assert_eq!(required_name(Some("gw 1".into())).unwrap(), "gw 1");
        assert!(err(required_name(None).map(|_| ())).starts_with("name: must not be empty"));
        assert!(err(required_name(Some("  ".into())).map(|_| ())).starts_with("name: "));
        assert!(err(required_name(Some("a\nb".into())).map(|_| ())).starts_with("name: must be a single line"));
        assert!(err(required_name(Some("x".repeat(NAME_MAX + 1))).map(|_| ())).starts_with("name: must be at most 100 bytes"));
        required_name(Some("x".repeat(NAME_MAX))).unwrap();
    }

    #[test]
    fn tags_limits_name_the_field() {
        let tags = |pairs: Vec<(String, String)>| pairs.into_iter().collect::<BTreeMap<_, _>>();
        check_tags(&tags((0..TAGS_MAX).map(|i| (format!("k{i}"), "v".repeat(100))).collect())).unwrap();
        assert!(err(check_tags(&tags((0..=TAGS_MAX).map(|i| (format!("k{i}"), "v".into())).collect()))).starts_with("tags: at most 32"));
        assert!(err(check_tags(&tags(vec![("k".repeat(TAG_KEY_MAX + 1), "v".into())]))).starts_with("tags: key "));
        assert!(err(check_tags(&tags(vec![(String::new(), "v".into())]))).starts_with("tags: a key must not be empty"));
        assert!(err(check_tags(&tags(vec![("room".into(), "v".repeat(TAG_VALUE_MAX + 1))]))).starts_with("tags.room: must be at most 256"));
        assert!(err(check_tags(&tags(vec![("room".into(), "a\nb".into())]))).starts_with("tags.room: must be a single line"));
        let big: Vec<_> = (0..20).map(|i| (format!("k{i:02}"), "v".repeat(TAG_VALUE_MAX - 1))).collect();
        assert!(err(check_tags(&tags(big))).starts_with("tags: keys and values together must be at most 4096"));
    }
}
