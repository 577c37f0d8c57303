//! How the CLI prints what the API answers: for people, tables of single printable words
//! (control and bidi characters escaped); for scripts, `--json`, one JSON document on stdout
//! and nothing else.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

/// A response type as JSON, for `--json` and for printing its fields with [`field`].
pub(crate) fn as_json<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// A response field as one printable word: strings as they are, numbers and booleans as
/// JSON, absent or null as `-`. Control and bidi-override characters are escaped, since
/// fields may carry text from untrusted clients (user agents, failed-auth actors) and must
/// not drive the terminal. Also used by `audit`.
pub(crate) fn field(v: &Value, key: &str) -> String {
    let raw = match v.get(key) {
        None | Some(Value::Null) => return "-".to_owned(),
        Some(Value::String(s)) if s.is_empty() => return "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    escaped(&raw)
}

/// `raw` with control and bidi-override characters escaped, as [`field`] prints it.
pub(crate) fn escaped(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn print_json(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn print_table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(format_table(headers, rows).as_bytes())?;
    Ok(())
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
pub(crate) fn format_table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = headers.map(str::to_owned);
    let mut text = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_single_printable_words() {
        let v = json!({"s": "prod/db", "n": 7, "null": null, "empty": "", "esc": "a\u{1b}[2Jb", "bidi": "x\u{202E}y"});
        assert_eq!(field(&v, "s"), "prod/db");
        assert_eq!(field(&v, "n"), "7");
        assert_eq!(field(&v, "null"), "-");
        assert_eq!(field(&v, "missing"), "-");
        assert_eq!(field(&v, "empty"), "-");
        assert_eq!(field(&v, "esc"), "a\\u{1b}[2Jb");
        assert_eq!(field(&v, "bidi"), "x\\u{202e}y");
    }

    #[test]
    fn tables_align_columns() {
        let rows = [
            [
                "prod/openai/api-key".to_owned(),
                "12".to_owned(),
                "sensitive".to_owned(),
                "2025-01-01T00:00:00Z".to_owned(),
            ],
            ["a".to_owned(), "1".to_owned(), "standard".to_owned(), "-".to_owned()],
        ];
        let table = format_table(["PATH", "VERSION", "TIER", "UPDATED"], &rows);
        let expected = "\
PATH                 VERSION  TIER       UPDATED
prod/openai/api-key  12       sensitive  2025-01-01T00:00:00Z
a                    1        standard   -
";
        assert_eq!(table, expected);
    }
}
