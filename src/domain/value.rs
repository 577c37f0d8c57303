//! Secret values: this module owns `SecretValue`, the plaintext of a secret
//! while it is in memory. The text is wiped when the value is dropped, is
//! never printed (`Debug` shows `SecretValue(***)`, there is no `Display`),
//! and has no `Serialize` impl: the one response that returns a value on
//! purpose opts in with `#[serde(serialize_with = "crate::domain::value::serialize_exposed")]`.
//! Size limits (`MAX_VALUE_BYTES`) are enforced by callers, not here.

use std::fmt;
use std::str::Utf8Error;

use serde::{Deserialize, Deserializer, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// Largest secret value accepted, in bytes of UTF-8.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The plaintext of a secret; zeroized on drop.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// Takes ownership of `bytes` without copying. If they are not UTF-8 they
    /// are zeroized before returning, and the error carries only positions.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, Utf8Error> {
        match String::from_utf8(bytes) {
            Ok(value) => Ok(Self::new(value)),
            Err(error) => {
                let utf8_error = error.utf8_error();
                error.into_bytes().zeroize();
                Err(utf8_error)
            }
        }
    }

    /// The plaintext. Every call site is a place the secret can leak from.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True if the value contains CR, LF or NUL (unsafe in headers and env files).
    pub fn has_control_breaks(&self) -> bool {
        self.0.contains(['\r', '\n', '\0'])
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// Serializes the plaintext as a string; for the one response that returns it.
pub fn serialize_exposed<S: Serializer>(value: &SecretValue, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value.expose())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        for plain in ["hunter2", "", "sk-live-abc\n123"] {
            let value = SecretValue::new(plain.to_owned());
            let debug = format!("{value:?}");
            assert_eq!(debug, "SecretValue(***)");
            assert_eq!(format!("{:?}", Some(&value)), "Some(SecretValue(***))");
            if !plain.is_empty() {
                assert!(!debug.contains(plain));
            }
        }
    }

    #[test]
    fn accessors_table() {
        let cases = [
            ("", 0, true, false),
            ("abc", 3, false, false),
            ("é", 2, false, false),
            ("a\nb", 3, false, true),
            ("a\rb", 3, false, true),
            ("a\0b", 3, false, true),
            ("a\tb", 3, false, false),
        ];
        for (plain, len, empty, breaks) in cases {
            let value = SecretValue::new(plain.to_owned());
            assert_eq!(value.expose(), plain);
            assert_eq!(value.len(), len, "{plain:?}");
            assert_eq!(value.is_empty(), empty, "{plain:?}");
            assert_eq!(value.has_control_breaks(), breaks, "{plain:?}");
            assert_eq!(value.clone().expose(), plain);
        }
    }

    #[test]
    fn from_bytes_table() {
        let cases: [(&[u8], Option<&str>); 4] =
            [(b"token", Some("token")), (b"", Some("")), ("é".as_bytes(), Some("é")), (&[b'a', 0xff, b'b'], None)];
        for (bytes, expected) in cases {
            let got = SecretValue::from_bytes(bytes.to_vec());
            assert_eq!(got.as_ref().ok().map(SecretValue::expose), expected, "{bytes:?}");
        }
        let error = SecretValue::from_bytes(vec![b'a', 0xff]).unwrap_err();
        assert_eq!(error.valid_up_to(), 1);
    }

    #[derive(serde::Serialize, Deserialize)]
    struct Response {
        #[serde(serialize_with = "serialize_exposed")]
        value: SecretValue,
    }

    #[test]
    fn serde_in_and_out() {
        let response: Response = serde_json::from_str(r#"{"value":"s3cr\"t"}"#).unwrap();
        assert_eq!(response.value.expose(), "s3cr\"t");
        assert_eq!(serde_json::to_string(&response).unwrap(), r#"{"value":"s3cr\"t"}"#);
        assert!(serde_json::from_str::<SecretValue>("42").is_err());
    }
}
