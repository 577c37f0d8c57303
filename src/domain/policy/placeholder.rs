//! The placeholder grammar: how an agent names a secret value in a request or an inject
//! template (`{{secret:PATH}}` or `{{secret:PATH#FIELD}}`), how such text is found and read,
//! and how a placeholder is written back (in redacted text). The delimiters are defined here
//! once.

use std::ops::Range;

use serde::Serialize;

use crate::domain::path::{PathError, SecretPath};

/// What every placeholder starts with.
pub const PLACEHOLDER_OPEN: &str = "{{secret:";
/// What ends a placeholder.
pub const PLACEHOLDER_CLOSE: &str = "}}";

/// One `{{secret:PATH}}` or `{{secret:PATH#FIELD}}` found in a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placeholder {
    path: SecretPath,
    field: Option<String>,
    span: Range<usize>,
}

impl Placeholder {
    pub fn path(&self) -> &SecretPath {
        &self.path
    }

    /// The `#FIELD` part: a field of a JSON-object secret value.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// Byte range of the whole `{{secret:…}}` in the scanned string.
    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }
}

/// The placeholder as an agent writes it: `{{secret:PATH}}` or `{{secret:PATH#FIELD}}`.
impl std::fmt::Display for Placeholder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&placeholder_text(&self.path, self.field.as_deref()))
    }
}

/// `{{secret:PATH}}` or `{{secret:PATH#FIELD}}`: how a value is named in a request, and
/// shown when redacted.
pub fn placeholder_text(path: &SecretPath, field: Option<&str>) -> String {
    match field {
        Some(field) => format!("{PLACEHOLDER_OPEN}{path}#{field}{PLACEHOLDER_CLOSE}"),
        None => format!("{PLACEHOLDER_OPEN}{path}{PLACEHOLDER_CLOSE}"),
    }
}

/// Why a string's placeholders cannot be read. Offsets are bytes from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    #[error(
        "placeholder at byte {at} has no closing '{close}'; write {open}PATH{close} or {open}PATH#field{close}",
        open = PLACEHOLDER_OPEN,
        close = PLACEHOLDER_CLOSE
    )]
    Unterminated { at: usize },
    #[error("placeholder '{text}' names an invalid secret path: {source}")]
    InvalidPath { text: String, source: PathError },
    #[error("placeholder '{text}' has an invalid field; a field is 1 to 64 characters of [A-Za-z0-9_.-]")]
    InvalidField { text: String },
}

/// Every placeholder in `s`, in order. Text that does not start with `{{secret:` is left
/// alone; a `{{secret:` without its `}}`, a bad path or a bad field is an error.
pub fn placeholders(s: &str) -> Result<Vec<Placeholder>, PlaceholderError> {
    use memchr::memmem::Finder;
    // Built once: a one-shot `memmem::find` sets up its searcher on every call, which costs
    // more than the search itself over a header value.
    static OPEN: std::sync::LazyLock<Finder<'static>> =
        std::sync::LazyLock::new(|| Finder::new(PLACEHOLDER_OPEN.as_bytes()));
    static CLOSE: std::sync::LazyLock<Finder<'static>> =
        std::sync::LazyLock::new(|| Finder::new(PLACEHOLDER_CLOSE.as_bytes()));
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = OPEN.find(&s.as_bytes()[from..]) {
        let start = from + offset;
        let body_start = start + PLACEHOLDER_OPEN.len();
        let body_len = CLOSE.find(&s.as_bytes()[body_start..]).ok_or(PlaceholderError::Unterminated { at: start })?;
        let end = body_start + body_len + PLACEHOLDER_CLOSE.len();
        found.push(placeholder(&s[body_start..body_start + body_len], &s[start..end], start..end)?);
        from = end;
    }
    Ok(found)
}

fn placeholder(body: &str, text: &str, span: Range<usize>) -> Result<Placeholder, PlaceholderError> {
    let (path, field) = match body.split_once('#') {
        Some((path, field)) => (path, Some(field)),
        None => (body, None),
    };
    let path =
        SecretPath::parse(path).map_err(|source| PlaceholderError::InvalidPath { text: text.to_owned(), source })?;
    let field_ok = |f: &str| {
        (1..=64).contains(&f.len()) && f.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    if field.is_some_and(|f| !field_ok(f)) {
        return Err(PlaceholderError::InvalidField { text: text.to_owned() });
    }
    Ok(Placeholder { path, field: field.map(str::to_owned), span })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_parsing() {
        type Found<'a> = Vec<(&'a str, Option<&'a str>, Range<usize>)>;
        let cases: Vec<(&str, Found)> = vec![
            ("no placeholders", vec![]),
            ("{{other}} and {{ secret:x }}", vec![]),
            ("Bearer {{secret:prod/openai/key}}", vec![("prod/openai/key", None, 7..33)]),
            ("{{secret:db/main#password}}", vec![("db/main", Some("password"), 0..27)]),
            ("{{secret:a}}:{{secret:b/c#user_1}}", vec![("a", None, 0..12), ("b/c", Some("user_1"), 13..34)]),
            ("{{secret:a}}}}", vec![("a", None, 0..12)]),
        ];
        for (input, expected) in cases {
            let found = placeholders(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            let got: Found = found.iter().map(|p| (p.path().as_str(), p.field(), p.span())).collect();
            assert_eq!(got, expected, "{input}");
            for p in &found {
                assert!(input[p.span()].starts_with("{{secret:") && input[p.span()].ends_with("}}"));
            }
        }
        let errors = [
            ("{{secret:a", "no closing"),
            ("{{secret:a}} then {{secret:b", "at byte 18"),
            ("{{secret:}}", "invalid secret path"),
            ("{{secret:a/../b}}", "invalid secret path"),
            ("{{secret:a b}}", "invalid secret path"),
            ("{{secret:a#}}", "invalid field"),
            ("{{secret:a#b#c}}", "invalid field"),
            ("{{secret:a{{secret:b}}", "invalid secret path"),
        ];
        for (input, needle) in errors {
            let message = placeholders(input).unwrap_err().to_string();
            assert!(message.contains(needle), "{input}: {message}");
        }
        let long_field = format!("{{{{secret:a#{}}}}}", "f".repeat(65));
        assert!(placeholders(&long_field).is_err());
    }

    /// The texts built from the delimiter constants read as they did when the delimiters
    /// were spelled out.
    #[test]
    fn texts_spell_the_delimiters() {
        let path = SecretPath::parse("db/main").unwrap();
        assert_eq!(placeholder_text(&path, None), "{{secret:db/main}}");
        assert_eq!(placeholder_text(&path, Some("password")), "{{secret:db/main#password}}");
        assert_eq!(
            placeholders("x {{secret:a").unwrap_err().to_string(),
            "placeholder at byte 2 has no closing '}}'; write {{secret:PATH}} or {{secret:PATH#field}}"
        );
    }
}
