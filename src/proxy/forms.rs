//! The forms an injected value can come back in that the scrubber looks for, exactly.
//!
//! An upstream that echoes its request (httpbin, many error pages) returns what the proxy
//! wrote, and what it wrote is not always the raw value: a query value goes out
//! percent-encoded, a value inside `Basic` credentials goes out base64-encoded with its user
//! part. JSON bodies carry the value escaped. Each form below is derived from the value
//! alone, so it is built once per value and kept with it (`HeldValue::patterns`):
//!
//! - the raw bytes;
//! - JSON string escaping: as `serde_json` writes it, with non-ASCII as `\uXXXX` (Python's
//!   default), and with `/` as `\/` (PHP's default);
//! - percent-encoding: RFC 3986 `unreserved` kept (what the proxy writes into a query) and
//!   JavaScript's `encodeURIComponent` set, each with upper- and lower-case hex, and with a
//!   space as `+` (form encoding);
//! - base64, standard and URL-safe alphabets: the value's own encoding with and without
//!   padding, and the characters that depend on the value alone when it sits at any of the
//!   three byte offsets inside a longer encoded text (so `base64(user:value)`, or a JSON
//!   document holding the value, base64-encoded, is caught too, up to the two or three
//!   characters at each end that it shares with its neighbours).
//!
//! What the proxy wrote that depends on more than the value (a whole `Basic` token) is added
//! per request, byte for byte (`pipeline::scrub_for`). Forms an upstream makes up itself
//! (a value split, reversed, hashed, or encoded twice) are not recognised. Pure: no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use zeroize::Zeroizing;

/// JavaScript's `encodeURIComponent` keeps these besides RFC 3986 `unreserved`.
/// Query values are encoded as everything outside RFC 3986 `unreserved`.
pub(super) const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
const URI_COMPONENT: &AsciiSet = &QUERY_VALUE.remove(b'!').remove(b'\'').remove(b'(').remove(b')').remove(b'*');

/// Shorter base64 fragments are not looked for: an 8-character fragment is 48 bits of the
/// value, which ordinary text does not hit by chance.
const SHORTEST_FRAGMENT: usize = 8;

/// Every form of `value` the scrubber looks for, the raw value first, each once. Empty for an
/// empty value.
pub fn of(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut forms: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    if value.is_empty() {
        return forms;
    }
    let mut add = |form: Zeroizing<Vec<u8>>| {
        if !form.is_empty() && !forms.iter().any(|f| f[..] == form[..]) {
            forms.push(form);
        }
    };
    add(Zeroizing::new(value.to_vec()));
    if let Ok(text) = std::str::from_utf8(value) {
        for (ascii_only, escape_slash) in [(false, false), (true, false), (true, true)] {
            add(json_escaped(text, ascii_only, escape_slash));
        }
        for set in [QUERY_VALUE, URI_COMPONENT] {
            for lower_hex in [false, true] {
                for plus_for_space in [false, true] {
                    add(percent_encoded(text, set, lower_hex, plus_for_space));
                }
            }
        }
    }
    for engine in [&STANDARD, &URL_SAFE] {
        let mut whole = Zeroizing::new(String::new());
        engine.encode_string(value, &mut whole);
        add(Zeroizing::new(whole.as_bytes().to_vec()));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3 {
            if let Some(fragment) = base64_fragment(engine, value, offset) {
                add(fragment);
            }
        }
    }
    forms
}

/// The value inside a JSON string, without the quotes.
fn json_escaped(text: &str, ascii_only: bool, escape_slash: bool) -> Zeroizing<Vec<u8>> {
    use std::fmt::Write as _;
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 8));
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if escape_slash => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32); // into a String: cannot fail
            }
            c if ascii_only && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    Zeroizing::new(out.as_bytes().to_vec())
}

fn percent_encoded(text: &str, set: &'static AsciiSet, lower_hex: bool, plus_for_space: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 3));
    for piece in utf8_percent_encode(text, set) {
        if plus_for_space && piece == "%20" {
            out.push(b'+');
        } else if lower_hex && piece.starts_with('%') {
            out.extend(piece.bytes().map(|b| b.to_ascii_lowercase()));
        } else {
            out.extend_from_slice(piece.as_bytes());
        }
    }
    out
}

/// The base64 characters that encode bits of `value` alone when it starts `offset` bytes
/// (mod 3) into the encoded text; `None` when they are too few to look for.
fn base64_fragment(engine: &base64::engine::GeneralPurpose, value: &[u8], offset: usize) -> Option<Zeroizing<Vec<u8>>> {
    let mut shifted = Zeroizing::new(vec![0u8; offset]);
    shifted.extend_from_slice(value);
    let mut encoded = Zeroizing::new(String::new());
    engine.encode_string(&shifted[..], &mut encoded);
    // Character i carries bits [6i, 6i + 6); the value's bits are [8 offset, 8 (offset + len)).
    let first = (8 * offset).div_ceil(6);
    let end = (8 * (offset + value.len())) / 6;
    (end >= first + SHORTEST_FRAGMENT).then(|| Zeroizing::new(encoded.as_bytes()[first..end].to_vec()))
}

/// The forms as plain data, for the fuzz targets in `fuzz/` (`crate::fuzzing`, built with
/// `--cfg fuzzing`) and this crate's tests; not part of the API otherwise.
#[cfg(any(fuzzing, test))]
pub mod fuzzing {
    /// Every form of `value` the scrubber looks for (`forms::of`).
    pub fn forms_of(value: &[u8]) -> Vec<Vec<u8>> {
        super::of(value).into_iter().map(|form| form.to_vec()).collect()
    }

    /// `text` percent-encoded as the proxy writes a query value (`uri_component`: as
    /// JavaScript's `encodeURIComponent` does).
    pub fn percent_encoded(text: &str, uri_component: bool, lower_hex: bool, plus_for_space: bool) -> Vec<u8> {
        let set = if uri_component { super::URI_COMPONENT } else { super::QUERY_VALUE };
        super::percent_encoded(text, set, lower_hex, plus_for_space).to_vec()
    }

    /// `text` inside a JSON string, as `forms::of` writes it.
    pub fn json_escaped(text: &str, ascii_only: bool, escape_slash: bool) -> Vec<u8> {
        super::json_escaped(text, ascii_only, escape_slash).to_vec()
    }

    /// The base64 characters of `value` alone at `offset` (mod 3) inside a longer text.
    pub fn base64_fragment(url_safe: bool, value: &[u8], offset: usize) -> Option<Vec<u8>> {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let engine = if url_safe { &URL_SAFE_NO_PAD } else { &STANDARD_NO_PAD };
        super::base64_fragment(engine, value, offset).map(|fragment| fragment.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(forms: &[Zeroizing<Vec<u8>>], form: &str) -> bool {
        forms.iter().any(|f| f[..] == *form.as_bytes())
    }

    #[test]
    fn each_form_is_listed_once_and_the_raw_value_first() {
        let forms = of(b"sk-abc123XYZ_def456");
        assert_eq!(&forms[0][..], b"sk-abc123XYZ_def456");
        for (i, f) in forms.iter().enumerate() {
            assert!(!forms[..i].iter().any(|g| g[..] == f[..]), "listed twice: {:?}", String::from_utf8_lossy(f));
        }
        assert!(of(b"").is_empty());
    }

    #[test]
    fn json_and_percent_forms() {
        let forms = of("pa\"ss/wörd key+1".as_bytes());
        for form in [
            r#"pa\"ss/wörd key+1"#,
            r#"pa\"ss/w\u00f6rd key+1"#,
            r#"pa\"ss\/w\u00f6rd key+1"#,
            "pa%22ss%2Fw%C3%B6rd%20key%2B1",
            "pa%22ss%2fw%c3%b6rd%20key%2b1",
            "pa%22ss%2Fw%C3%B6rd+key%2B1",
        ] {
            assert!(has(&forms, form), "{form} missing");
        }
        // What the proxy writes into a query is one of them.
        let written: String = utf8_percent_encode("pa\"ss/wörd key+1", QUERY_VALUE).collect();
        assert!(has(&forms, &written));
    }

    #[test]
    fn a_value_inside_any_base64_text_is_found_by_one_fragment() {
        let value = b"sk-SeCrEt-base64-0123456789";
        let forms = of(value);
        for prefix in ["", "u:", "user:", "{\"key\":\"", "ab"] {
            for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD] {
                let mut text = prefix.as_bytes().to_vec();
                text.extend_from_slice(value);
                text.extend_from_slice(b"\"} and more");
                let encoded = engine.encode(&text);
                let hit = forms
                    .iter()
                    .any(|f| f.len() >= SHORTEST_FRAGMENT && encoded.contains(&*String::from_utf8_lossy(f)));
                assert!(hit, "{prefix:?}: no fragment found in {encoded}");
            }
        }
        assert!(has(&forms, &STANDARD.encode(value)));
    }

    #[test]
    fn short_values_get_no_short_fragments() {
        let forms = of(b"abc");
        let forms: Vec<&[u8]> = forms.iter().map(|f| &f[..]).collect();
        assert_eq!(forms, [&b"abc"[..], b"YWJj"]);
    }
}
