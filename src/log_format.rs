//! Field formatting for the text log format: every field value and message is written with
//! its control characters escaped (`\n`, `\r`, `\u{1b}` …), so a value that came from the
//! network (a gateway's TX_ACK error name, an MQTT topic, a codec's error text) can never end
//! the line and forge the next one, whichever way the call site formatted it (`%` Display
//! included). The JSON format escapes by itself.

use std::fmt::{self, Write as _};

use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{self, Writer};
use tracing_subscriber::fmt::FormatFields;

/// The field formatter for `tracing_subscriber::fmt().fmt_fields(…)`: `name=value` pairs
/// separated by spaces, the message first as written, control characters escaped.
pub fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(write_field as fn(&mut Writer<'_>, &Field, &dyn fmt::Debug) -> fmt::Result).delimited(" ")
}

fn write_field(writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let mut out = Escaping(writer);
    match field.name() {
        "message" => write!(out, "{value:?}"),
        name => write!(out, "{}={value:?}", name.strip_prefix("r#").unwrap_or(name)),
    }
}

/// Passes text through, writing each control character as its Rust escape.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(char::is_control) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found a char here");
            write!(self.0, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn capture(f: impl FnOnce()) -> String {
        let buf = Buffer::default();
        let writer = buf.clone();
        let subscriber =
            tracing_subscriber::fmt().with_ansi(false).fmt_fields(escaped_fields()).with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_newline_in_a_display_field_does_not_start_a_line() {
        let forged = "x\n2026-01-01T00:00:00Z ERROR forged: database dropped";
        let out = capture(|| {
            tracing::warn!(error = %forged, other = ?forged, "TX_ACK with an unknown error name");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains(r#"error=x\n2026-01-01T00:00:00Z ERROR forged"#), "{out}");
        assert!(out.contains("TX_ACK with an unknown error name error="), "{out}");
    }

    #[test]
    fn a_newline_in_the_message_or_a_span_field_is_escaped_too() {
        let out = capture(|| {
            let span = tracing::info_span!("uplink", topic = %"a\r\nb");
            let _entered = span.enter();
            tracing::info!("decoder said {}", "bad\nthing\u{1b}[31m");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains(r"decoder said bad\nthing\u{1b}[31m"), "{out}");
        assert!(out.contains(r"topic=a\r\nb"), "{out}");
    }

    #[test]
    fn plain_fields_are_written_as_before() {
        let out = capture(|| tracing::info!(count = 3, name = "gw", "dropped"));
        assert!(out.trim_end().ends_with(r#"dropped count=3 name="gw""#), "{out}");
    }
}
