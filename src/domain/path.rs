//! Secret paths: this module owns `SecretPath`, the validated name of a secret
//! (`segment/segment/...` with segments of `[A-Za-z0-9._-]`, at most 512
//! characters, no `.` or `..` segments), the `PathError` that explains why a
//! string is not a valid path, and the segment rules that path globs in
//! `super::scope` reuse. A `SecretPath` cannot be constructed invalid, so code
//! holding one never needs to re-check it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

/// Longest allowed path (and glob), in characters.
pub const MAX_PATH_CHARS: usize = 512;

/// Why a string is not a valid secret path. Positions count characters from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("secret path is empty; give names of [A-Za-z0-9._-] joined by '/'")]
    Empty,
    #[error("secret path is {len} characters long; at most {MAX_PATH_CHARS} are allowed")]
    TooLong { len: usize },
    #[error(
        "secret path has an empty segment (a leading, trailing or doubled '/'); \
         segments must be non-empty names of [A-Za-z0-9._-]"
    )]
    EmptySegment,
    #[error("secret path segment '{0}' is not allowed; use names of [A-Za-z0-9._-]")]
    DotSegment(String),
    #[error(
        "secret path contains {ch:?} at position {position}; \
         only [A-Za-z0-9._-] and '/' between segments are allowed"
    )]
    InvalidChar { ch: char, position: usize },
}

/// A validated secret path such as `production/openai/api-key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct SecretPath(String);

impl SecretPath {
    /// Validates `s` and wraps it.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        validate(s)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Everything before the last `/`; `None` for a single-segment path.
    pub fn namespace(&self) -> Option<&str> {
        self.0.rsplit_once('/').map(|(namespace, _)| namespace)
    }

    /// The `/`-separated segments, in order; never empty strings.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// True if the path lies strictly below `namespace` (given without a
    /// trailing slash; one trailing slash is ignored).
    pub fn is_within(&self, namespace: &str) -> bool {
        let namespace = namespace.strip_suffix('/').unwrap_or(namespace);
        self.0.strip_prefix(namespace).is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Checks a namespace used as a list filter; same rules as a path.
pub fn validate_namespace(namespace: &str) -> Result<(), PathError> {
    validate(namespace)
}

/// True for the characters allowed inside a segment.
pub(super) fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Checks the overall length of a path or glob.
pub(super) fn check_length(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.len() <= MAX_PATH_CHARS {
        return Ok(()); // never more characters than bytes
    }
    let len = s.chars().count();
    if len > MAX_PATH_CHARS {
        return Err(PathError::TooLong { len });
    }
    Ok(())
}

/// Checks one literal segment; `offset` is the character position where it
/// starts in the whole string, used in error messages.
pub(super) fn validate_segment(segment: &str, offset: usize) -> Result<(), PathError> {
    if segment.is_empty() {
        return Err(PathError::EmptySegment);
    }
    let bad = segment.chars().enumerate().find(|&(_, c)| !is_segment_char(c));
    if let Some((i, ch)) = bad {
        return Err(PathError::InvalidChar { ch, position: offset + i });
    }
    if segment == "." || segment == ".." {
        return Err(PathError::DotSegment(segment.to_owned()));
    }
    Ok(())
}

fn validate(s: &str) -> Result<(), PathError> {
    check_length(s)?;
    let mut offset = 0;
    for segment in s.split('/') {
        validate_segment(segment, offset)?;
        offset += segment.len() + 1; // a valid segment is ASCII: bytes are characters
    }
    Ok(())
}

impl TryFrom<String> for SecretPath {
    type Error = PathError;

    fn try_from(s: String) -> Result<Self, PathError> {
        validate(&s)?;
        Ok(Self(s))
    }
}

impl FromStr for SecretPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, PathError> {
        Self::parse(s)
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for SecretPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for SecretPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_valid_paths() {
        let max = "a".repeat(MAX_PATH_CHARS);
        for ok in ["a", "production/openai/api-key", "A.b_c-D/9", "..a/b..", "x/.hidden", &max] {
            let path = SecretPath::parse(ok).expect(ok);
            assert_eq!(path.as_str(), ok);
        }
    }

    #[test]
    fn parse_rejects_invalid_paths() {
        let long = "a".repeat(MAX_PATH_CHARS + 1);
        let cases: Vec<(&str, PathError)> = vec![
            ("", PathError::Empty),
            (&long, PathError::TooLong { len: MAX_PATH_CHARS + 1 }),
            ("/a", PathError::EmptySegment),
            ("a/", PathError::EmptySegment),
            ("a//b", PathError::EmptySegment),
            ("/", PathError::EmptySegment),
            (".", PathError::DotSegment(".".into())),
            ("a/../b", PathError::DotSegment("..".into())),
            ("a/./b", PathError::DotSegment(".".into())),
            ("a b", PathError::InvalidChar { ch: ' ', position: 1 }),
            ("ab/c*d", PathError::InvalidChar { ch: '*', position: 4 }),
            ("é/x", PathError::InvalidChar { ch: 'é', position: 0 }),
            ("a/bé\n", PathError::InvalidChar { ch: 'é', position: 3 }),
            ("a\\b", PathError::InvalidChar { ch: '\\', position: 1 }),
            ("a:b", PathError::InvalidChar { ch: ':', position: 1 }),
        ];
        for (input, expected) in cases {
            assert_eq!(SecretPath::parse(input), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn error_messages_quote_the_problem() {
        let cases = [
            ("a/../b", "secret path segment '..' is not allowed; use names of [A-Za-z0-9._-]"),
            ("a b", "' ' at position 1"),
            ("a\nb", "'\\n' at position 1"),
            ("a//b", "empty segment"),
        ];
        for (input, needle) in cases {
            let message = SecretPath::parse(input).unwrap_err().to_string();
            assert!(message.contains(needle), "{input:?}: {message}");
        }
    }

    #[test]
    fn namespace_and_segments() {
        let cases: [(&str, Option<&str>, &[&str]); 3] = [
            ("a", None, &["a"]),
            ("a/b", Some("a"), &["a", "b"]),
            ("prod/openai/key", Some("prod/openai"), &["prod", "openai", "key"]),
        ];
        for (input, namespace, segments) in cases {
            let path = SecretPath::parse(input).unwrap();
            assert_eq!(path.namespace(), namespace, "{input}");
            assert_eq!(path.segments().collect::<Vec<_>>(), segments, "{input}");
        }
    }

    #[test]
    fn is_within_table() {
        let cases = [
            ("production/openai/key", "production", true),
            ("production/openai/key", "production/", true),
            ("production/openai/key", "production/openai", true),
            ("production/openai/key", "production/openai/key", false),
            ("production/openai/key", "prod", false),
            ("production/openai/key", "production/open", false),
            ("productionx/a", "production", false),
            ("production", "production", false),
            ("a/b", "", false),
            ("a/b", "/", false),
        ];
        for (path, namespace, expected) in cases {
            let path = SecretPath::parse(path).unwrap();
            assert_eq!(path.is_within(namespace), expected, "{path} within {namespace:?}");
        }
    }

    #[test]
    fn validate_namespace_uses_path_rules() {
        assert_eq!(validate_namespace("prod/openai"), Ok(()));
        assert_eq!(validate_namespace("prod/"), Err(PathError::EmptySegment));
        assert_eq!(validate_namespace(".."), Err(PathError::DotSegment("..".into())));
    }

    #[test]
    fn traits_round_trip() {
        let path: SecretPath = "prod/db".parse().unwrap();
        assert_eq!(path.to_string(), "prod/db");
        assert_eq!(path.as_ref(), "prod/db");
        let json = serde_json::to_string(&path).unwrap();
        assert_eq!(json, "\"prod/db\"");
        assert_eq!(serde_json::from_str::<SecretPath>(&json).unwrap(), path);
        for bad in ["\"../x\"", "\"\"", "\"a//b\"", "3"] {
            assert!(serde_json::from_str::<SecretPath>(bad).is_err(), "{bad}");
        }
    }
}
