//! Log setup: human-readable text by default, JSON with `--log-format json`, and a level
//! or full filter (`info`, `debug,sqlx=warn`) from `--log-level` or `AIRLOCK_LOG`.
//!
//! Log lines carry text that agents and API clients chose (placeholder paths, header values,
//! error messages that quote them). Whatever the call site, that text cannot start a line of
//! its own or steer the terminal: in text format every field value and the message are
//! written with control characters (C0 with CR, LF and ESC, DEL, C1) and the Unicode line
//! and paragraph separators as visible escapes (`\n`, `\r`, `\u{1b}`); in JSON format
//! serde escapes C0 and the writer escapes what serde leaves raw (C1, U+2028, U+2029).

use std::fmt::{self, Write as _};
use std::io;

use clap::{Args, ValueEnum};
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log level or filter directives (trace, debug, info, warn, error)
    #[arg(long, env = "AIRLOCK_LOG", default_value = "info", global = true)]
    log_level: String,
    /// Log line format
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("bad --log-level '{}': {e}", args.log_level))?
        // Whatever the level asked for: the SigV4 signer's trace events print the signing
        // identity, access key id included (`proxy::credentials::sigv4`, `providers::aws`).
        .add_directive("aws_sigv4=off".parse().expect("a valid directive"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    let result = match args.log_format {
        LogFormat::Text => builder.fmt_fields(EscapedFields).with_writer(std::io::stderr).try_init(),
        // The lock is held for the whole line, which the escaping writer may write in parts.
        LogFormat::Json => builder.json().with_writer(JsonEscapes(|| std::io::stderr().lock())).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Whether `c` is written as an escape: it could end a log line (LF, CR, VT, FF, NEL,
/// U+2028, U+2029) or be read by a terminal as a control (ESC, CSI and the rest of C0/C1).
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A `fmt::Write` that passes text through with every `needs_escape` character written as
/// a visible escape. Text with nothing to escape is written as it is, in one piece.
struct Escaping<'w, W: fmt::Write + ?Sized>(&'w mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Printable ASCII is by far the common case: skip it bytewise.
        let Some(first) = s.bytes().position(|b| !(0x20..0x7f).contains(&b)) else {
            return self.0.write_str(s);
        };
        let mut clean = 0;
        for (i, c) in s[first..].char_indices().map(|(i, c)| (first + i, c)) {
            if !needs_escape(c) {
                continue;
            }
            self.0.write_str(&s[clean..i])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{{{:x}}}", other as u32)?,
            }
            clean = i + c.len_utf8();
        }
        self.0.write_str(&s[clean..])
    }
}

/// The text format's fields: like tracing-subscriber's `DefaultFields` (`name=value`,
/// strings quoted, the message bare), with every value escaped (`Escaping`).
pub struct EscapedFields;

impl<'w> MakeVisitor<Writer<'w>> for EscapedFields {
    type Visitor = EscapedVisitor<'w>;

    fn make_visitor(&self, writer: Writer<'w>) -> EscapedVisitor<'w> {
        EscapedVisitor { writer, empty: true, result: Ok(()) }
    }
}

pub struct EscapedVisitor<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

impl Visit for EscapedVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{}", ErrorChain(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // What the `log` crate's records carry about their origin: already in the line's target.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.result = self.write_field(name, value);
    }
}

impl EscapedVisitor<'_> {
    fn write_field(&mut self, name: &str, value: &dyn fmt::Debug) -> fmt::Result {
        if !std::mem::take(&mut self.empty) {
            self.writer.write_char(' ')?;
        }
        if name != "message" {
            write!(self.writer, "{}=", name.strip_prefix("r#").unwrap_or(name))?;
        }
        write!(Escaping(&mut self.writer), "{value:?}")
    }
}

impl VisitOutput<fmt::Result> for EscapedVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for EscapedVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// An error and its sources, `error: source: source`.
struct ErrorChain<'e>(&'e (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// The JSON format's writer: serde_json escapes C0 controls but leaves C1 controls and
/// U+2028/U+2029 raw, which some terminals act on and some viewers break lines at. Every
/// non-ASCII byte of a JSON line is inside a string, so they are rewritten as `\u0085`-style
/// escapes, which mean the same to a JSON reader.
pub struct JsonEscapes<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for JsonEscapes<M> {
    type Writer = JsonEscaping<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        JsonEscaping(self.0.make_writer())
    }
}

pub struct JsonEscaping<W>(W);

impl<W: io::Write> io::Write for JsonEscaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut clean = 0;
        let mut from = 0;
        // U+0080..U+009F is C2 80..C2 9F in UTF-8; U+2028 and U+2029 are E2 80 A8 and E2 80 A9.
        while let Some(at) = memchr::memchr2(0xc2, 0xe2, &buf[from..]).map(|i| from + i) {
            let escaped = match buf[at..] {
                [0xc2, b @ 0x80..=0x9f, ..] => Some((u32::from(b), 2)),
                [0xe2, 0x80, b @ (0xa8 | 0xa9), ..] => Some((0x2000 + u32::from(b) - 0x80, 3)),
                _ => None,
            };
            from = at + 1;
            if let Some((code, width)) = escaped {
                self.0.write_all(&buf[clean..at])?;
                write!(self.0, "\\u{code:04x}")?;
                clean = at + width;
                from = clean;
            }
        }
        self.0.write_all(&buf[clean..])
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    const HOSTILE: &str =
        "a\r\n2026-01-01T00:00:00.000000Z  INFO forged line\u{1b}[2J\u{7}\u{85}\u{9b}\u{2028}\u{2029}\tb";

    /// One event with the hostile text in the message, in a Display field, in a Debug field,
    /// in a str field, in an error field and in a span field.
    fn log_everything() {
        let error = io::Error::other(HOSTILE);
        let span = tracing::info_span!("conn", peer = %HOSTILE);
        let _entered = span.enter();
        tracing::warn!(shown = %HOSTILE, debugged = ?HOSTILE, plain = HOSTILE, error = &error as &(dyn std::error::Error + 'static), "refused {HOSTILE}");
    }

    fn text_lines() -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log_everything);
        out.text()
    }

    #[test]
    fn text_lines_escape_every_control_and_line_separator_in_every_field() {
        let text = text_lines();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        let line = text.trim_end_matches('\n');
        assert!(!line.chars().any(needs_escape), "{line:?}");
        assert!(
            line.contains(
                r"a\r\n2026-01-01T00:00:00.000000Z  INFO forged line\u{1b}[2J\u{7}\u{85}\u{9b}\u{2028}\u{2029}\tb"
            ),
            "{line}"
        );
        for field in
            [r"shown=a\r\n", r#"debugged="a\r\n"#, r#"plain="a\r\n"#, r"error=a\r\n", r"refused a\r\n", r"peer=a\r\n"]
        {
            assert!(line.contains(field), "{field} missing: {line}");
        }
    }

    #[test]
    fn json_lines_escape_every_control_and_line_separator() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_writer(JsonEscapes(move || writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, log_everything);
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        let line = text.trim_end_matches('\n');
        assert!(!line.chars().any(needs_escape), "{line:?}");
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["fields"]["shown"], HOSTILE, "the JSON still means the same text");
        assert_eq!(event["fields"]["message"], format!("refused {HOSTILE}"));
    }

    #[test]
    fn the_json_writer_leaves_other_text_alone() {
        let mut out = JsonEscaping(Vec::new());
        let text = "{\"m\":\"é ü \u{2027} \u{202a} \u{a0} \u{85}\u{2029}\"}\n";
        io::Write::write_all(&mut out, text.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(out.0).unwrap(), "{\"m\":\"é ü \u{2027} \u{202a} \u{a0} \\u0085\\u2029\"}\n");
    }

    #[test]
    fn escaping_writes_clean_text_unchanged() {
        let mut out = String::new();
        write!(Escaping(&mut out), "plain ascii, é, 日本 {}", 42).unwrap();
        assert_eq!(out, "plain ascii, é, 日本 42");
    }
}
