//! Structured values: a secret whose value is a JSON object of fields. This module owns the
//! two places such a value is taken apart or put together, so that neither leaves a copy of
//! plaintext outside a zeroizing buffer (a `serde_json::Map` or `Value` would: its strings
//! are never wiped, and neither is the old allocation of a `Vec` that grows):
//!
//! - reading one string field (`GET /v1/secrets/{path}?field=NAME` and the proxy's
//!   `{{secret:PATH#NAME}}`, which therefore write the same text): other fields are skipped
//!   without being copied, the wanted one is borrowed from the value and unescaped straight
//!   into a zeroizing buffer;
//! - writing the canonical text of an object sent as a value (keys sorted, no spaces, the
//!   same text `serde_json` writes for a `Map`), built in buffers that wipe themselves.
//!
//! serde errors (which may quote the input) are dropped unread.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use zeroize::{Zeroize, Zeroizing};

/// The value is not a JSON object (or not valid JSON at all), so it has no fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAnObject;

/// The string value of `field` in the JSON object `json`: `Ok(None)` when the field is
/// missing, repeated or not a string, `Err(NotAnObject)` when `json` is not one JSON object.
pub fn string_field(json: &str, field: &str) -> Result<Option<Zeroizing<String>>, NotAnObject> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let raw = FieldOf(field).deserialize(&mut deserializer).map_err(|_| NotAnObject)?;
    deserializer.end().map_err(|_| NotAnObject)?;
    match raw {
        Some(raw) if raw.get().starts_with('"') => unescape(raw.get()).map(Some).ok_or(NotAnObject),
        _ => Ok(None),
    }
}

/// The string value of `field` in the JSON object `json`; `None` for anything else.
pub fn json_field(json: &str, field: &str) -> Option<Zeroizing<String>> {
    string_field(json, field).ok().flatten()
}

/// Finds the field and borrows its JSON text: the value is not copied.
struct FieldOf<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FieldOf<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldOf<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut repeated = false;
        while let Some(is_field) = map.next_key_seed(KeyIs(self.0))? {
            if !is_field {
                map.next_value::<IgnoredAny>()?;
            } else if found.is_some() {
                repeated = true;
                map.next_value::<IgnoredAny>()?;
            } else {
                found = Some(map.next_value::<&'de RawValue>()?);
            }
        }
        Ok(if repeated { None } else { found })
    }
}

/// Deserializes a map key into whether it equals the wanted field, without copying it.
struct KeyIs<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// The text of the JSON string literal `quoted` (already checked by the parser), decoded
/// into a buffer sized once: the decoded text is never longer than the literal, so the
/// buffer never grows and leaves no copy behind. `None` for a lone surrogate, which
/// `serde_json` refuses in a string too.
fn unescape(quoted: &str) -> Option<Zeroizing<String>> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Zeroizing::new(String::with_capacity(inner.len()));
    let capacity = out.capacity();
    let mut rest = inner;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at + 1..];
        let (ch, used) = match escape.as_bytes().first()? {
            b'"' => ('"', 1),
            b'\\' => ('\\', 1),
            b'/' => ('/', 1),
            b'b' => ('\u{8}', 1),
            b'f' => ('\u{c}', 1),
            b'n' => ('\n', 1),
            b'r' => ('\r', 1),
            b't' => ('\t', 1),
            b'u' => {
                let high = hex4(escape.get(1..5)?)?;
                if (0xD800..0xDC00).contains(&high) {
                    let low = hex4(escape.strip_prefix("u")?.get(4..)?.strip_prefix("\\u")?.get(..4)?)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return None;
                    }
                    (char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))?, 11)
                } else {
                    (char::from_u32(high)?, 5)
                }
            }
            _ => return None,
        };
        out.push(ch);
        rest = &escape[used..];
    }
    out.push_str(rest);
    debug_assert_eq!(out.capacity(), capacity, "the buffer grew");
    Some(out)
}

fn hex4(digits: &str) -> Option<u32> {
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// The canonical JSON text of the object `map` (keys sorted, no spaces, duplicate keys:
/// the last one wins), as `serde_json` writes a `Map`; every intermediate buffer wipes
/// itself.
pub fn canonical_object<'de, A: MapAccess<'de>>(map: A) -> Result<Zeroizing<String>, A::Error> {
    let mut text = Canonical.visit_map(map)?;
    let bytes = std::mem::take(&mut *text.0);
    // Only whole UTF-8 strings and ASCII punctuation were written.
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(serde::de::Error::custom("canonical text is not UTF-8"))
        }
    }
}

/// Bytes wiped on drop and, unlike a plain `Vec`, when they outgrow their allocation.
#[derive(Default)]
struct Wiping(Zeroizing<Vec<u8>>);

impl Wiping {
    fn push(&mut self, bytes: &[u8]) {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(2 * self.0.capacity()).max(64)));
            bigger.extend_from_slice(&self.0);
            self.0 = bigger;
        }
        self.0.extend_from_slice(bytes);
    }

    /// `value` as a JSON literal, escaped as `serde_json` escapes it.
    fn json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer(&mut *self, value).map_err(io::Error::other)
    }
}

impl io::Write for Wiping {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A field name, wiped on drop, in `String` order (which `serde_json::Map` sorts by).
#[derive(PartialEq, Eq)]
struct Key(Zeroizing<String>);

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_str().cmp(other.0.as_str())
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Any JSON value, as its canonical text.
struct Canonical;

impl<'de> DeserializeSeed<'de> for Canonical {
    type Value = Wiping;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Wiping, D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn literal<T: serde::Serialize + ?Sized, E: serde::de::Error>(value: &T) -> Result<Wiping, E> {
    let mut out = Wiping::default();
    out.json(value).map_err(|_| E::custom("a value cannot be written as JSON"))?;
    Ok(out)
}

impl<'de> Visitor<'de> for Canonical {
    type Value = Wiping;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Wiping, E> {
        literal(&v)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Wiping, E> {
        literal(&v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Wiping, E> {
        literal(&v)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Wiping, E> {
        // As `serde_json::Value` keeps it: a float that is not finite is `null`.
        if v.is_finite() { literal(&v) } else { literal(&()) }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Wiping, E> {
        literal(v)
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Wiping, E> {
        let v = Zeroizing::new(v);
        literal(v.as_str())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Wiping, E> {
        literal(&())
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Wiping, E> {
        literal(&())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Wiping, D::Error> {
        Canonical.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Wiping, A::Error> {
        let mut out = Wiping::default();
        out.push(b"[");
        let mut first = true;
        while let Some(item) = seq.next_element_seed(Canonical)? {
            if !std::mem::take(&mut first) {
                out.push(b",");
            }
            out.push(&item.0);
        }
        out.push(b"]");
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wiping, A::Error> {
        let mut fields = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let key = Key(Zeroizing::new(key));
            let value = map.next_value_seed(Canonical)?;
            fields.insert(key, value);
        }
        let mut out = Wiping::default();
        out.push(b"{");
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b",");
            }
            out.json(key.0.as_str()).map_err(|_| serde::de::Error::custom("a key cannot be written as JSON"))?;
            out.push(b":");
            out.push(&value.0);
        }
        out.push(b"}");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_field_table() {
        type Want = Result<Option<&'static str>, NotAnObject>;
        let cases: [(&str, &str, Want); 16] = [
            (r#"{"user":"u","password":"p"}"#, "password", Ok(Some("p"))),
            (r#"{"password":"p\"q\\r\/s\b\f\n\r\t"}"#, "password", Ok(Some("p\"q\\r/s\u{8}\u{c}\n\r\t"))),
            (r#"{"password":"caf\u00e9 \ud83d\ude00 \u0041"}"#, "password", Ok(Some("café 😀 A"))),
            (r#"{"password":"ünï 😀"}"#, "password", Ok(Some("ünï 😀"))),
            (r#"{"password":""}"#, "password", Ok(Some(""))),
            (r#" { "a" : {"password":"nested"} , "password" : "top" } "#, "password", Ok(Some("top"))),
            (r#"{"user":"u"}"#, "password", Ok(None)),
            (r#"{"password":42}"#, "password", Ok(None)),
            (r#"{"password":null}"#, "password", Ok(None)),
            (r#"{"password":{"x":"y"}}"#, "password", Ok(None)),
            (r#"{"password":"a","password":"b"}"#, "password", Ok(None)),
            (r#""just a string""#, "password", Err(NotAnObject)),
            (r#"["password"]"#, "password", Err(NotAnObject)),
            (r#"{"password":"p"} trailing"#, "password", Err(NotAnObject)),
            (r#"{"password":"p""#, "password", Err(NotAnObject)),
            (r#"{"password":"\ud83d"}"#, "password", Err(NotAnObject)),
        ];
        for (json, field, want) in cases {
            let got = string_field(json, field);
            assert_eq!(got.as_ref().map(|v| v.as_ref().map(|s| s.as_str())).map_err(|e| *e), want, "{json}");
            if let Ok(Some(s)) = &got {
                assert_eq!(json_field(json, field).as_deref().map(String::as_str), Some(s.as_str()));
            }
        }
    }

    /// The decoded text agrees with serde_json's for every escape it can meet.
    #[test]
    fn unescape_agrees_with_serde_json() {
        for text in ["plain", "", "\"\\/", "\u{0}\u{1f}\u{7f}", "é😀\u{2028}", "a\\u0041", "\u{10ffff}"] {
            let quoted = serde_json::to_string(text).unwrap();
            assert_eq!(unescape(&quoted).as_deref().map(String::as_str), Some(text), "{quoted}");
        }
        assert_eq!(unescape(r#""\u00E9\/""#).as_deref().map(String::as_str), Some("é/"));
        for bad in [r#""\ud83dx""#, r#""\ude00""#, r#""\ud83d\u0041""#, r#""\x""#, r#""\u12""#] {
            assert!(unescape(bad).is_none(), "{bad}");
        }
    }

    fn canonical(json: &str) -> String {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Zeroizing<String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                canonical_object(map)
            }
        }
        let mut de = serde_json::Deserializer::from_str(json);
        de.deserialize_map(Object).unwrap().to_string()
    }

    /// The canonical text is what serde_json writes for the same object parsed as a `Map`.
    #[test]
    fn canonical_text_is_serde_jsons() {
        for json in [
            r#"{}"#,
            r#"{"b":"2","a":"1"}"#,
            r#"{ "z" : [1, -2, 3.5, -0.0, 1e300, true, false, null, "x\ny", {"d":1,"c":[]}], "a" : {} }"#,
            r#"{"k\"ey":"v\u0000al\u00e9","é":"😀","A":"a","a":"A"}"#,
            r#"{"dup":"first","dup":"second"}"#,
            r#"{"big":18446744073709551615,"neg":-9223372036854775808,"f":0.1}"#,
        ] {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).unwrap();
            assert_eq!(canonical(json), serde_json::to_string(&map).unwrap(), "{json}");
        }
    }

    #[test]
    fn a_wiping_buffer_keeps_what_was_pushed_across_growth() {
        let mut buf = Wiping::default();
        let mut want = Vec::new();
        for i in 0..500u32 {
            let chunk = i.to_string().repeat((i % 7) as usize);
            buf.push(chunk.as_bytes());
            want.extend_from_slice(chunk.as_bytes());
        }
        assert_eq!(buf.0.as_slice(), want.as_slice());
    }
}
