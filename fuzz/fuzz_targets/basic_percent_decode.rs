//! The decoders the scanner reads through and the encoders the proxy writes and the
//! scrubber looks for, on arbitrary bytes. Never a panic, and:
//! - `percent_decode` records one offset per decoded byte and the end, rising, each byte
//!   coming from one raw byte or one `%XX`; percent-encoding anything (the proxy's query
//!   set, `encodeURIComponent`'s, upper or lower hex) and decoding gives it back;
//! - `Authorization: Basic` credentials: any value is read or left without a panic, the
//!   scheme kept as written; `user:pass` encoded (padded or not, any case of `Basic`, any
//!   spaces after it) decodes back byte for byte, and the proxy's re-encoding (standard,
//!   padded) reads back the same;
//! - the scrubber's forms: JSON-escaped text parses back as the JSON string, a base64
//!   fragment appears in the encoding of the value at its offset whatever surrounds it, and
//!   `forms_of` lists the raw value first and no form twice.
#![no_main]

use airlock::fuzzing::{base64_fragment, basic_credentials, forms_of, json_escaped, percent_decode, percent_encoded};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Percent-decoding arbitrary bytes.
    let (decoded, offsets) = percent_decode(data);
    assert_eq!(offsets.len(), decoded.len() + 1);
    assert_eq!(offsets.last(), Some(&data.len()));
    for (i, byte) in decoded.iter().enumerate() {
        let raw = &data[offsets[i]..offsets[i + 1]];
        match raw {
            [b] => assert_eq!(b, byte),
            [b'%', hi, lo] => {
                let hex = std::str::from_utf8(&[*hi, *lo]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                assert_eq!(hex, Some(*byte), "{raw:?}");
            }
            _ => panic!("decoded byte {i} comes from {raw:?}"),
        }
    }

    // Encode, then decode: the bytes back.
    if let Ok(text) = std::str::from_utf8(data) {
        for uri_component in [false, true] {
            for lower_hex in [false, true] {
                let encoded = percent_encoded(text, uri_component, lower_hex, false);
                assert_eq!(percent_decode(&encoded).0, data, "{encoded:?}");
            }
        }
        let escaped = json_escaped(text, false, false);
        for (ascii_only, escape_slash) in [(false, false), (true, false), (true, true)] {
            let escaped = json_escaped(text, ascii_only, escape_slash);
            let json = [&b"\""[..], &escaped, b"\""].concat();
            let back: String = serde_json::from_slice(&json).expect("escaped text is a JSON string");
            assert_eq!(back, text);
        }
        assert!(!escaped.is_empty() || text.is_empty());
    }
    let raw = percent_encoding::percent_encode(data, percent_encoding::NON_ALPHANUMERIC).to_string();
    assert_eq!(percent_decode(raw.as_bytes()).0, data);

    // Basic credentials: any value, then round trips.
    if let Some((scheme, _)) = basic_credentials(data) {
        assert!(scheme.len() >= 6 && scheme[..6].eq_ignore_ascii_case("basic "), "{scheme:?}");
        assert!(scheme[6..].bytes().all(|b| b.is_ascii_whitespace()), "{scheme:?}");
    }
    let spaces = 1 + data.first().map_or(0, |b| b % 3) as usize;
    for (scheme, engine) in [("Basic", &STANDARD), ("basic", &STANDARD_NO_PAD), ("BASIC", &STANDARD)] {
        let value = format!("{scheme}{}{}", " ".repeat(spaces), engine.encode(data));
        let (written, back) = basic_credentials(value.as_bytes()).expect("encoded credentials are read");
        assert_eq!(back, data, "{value}");
        assert_eq!(written, format!("{scheme}{}", " ".repeat(spaces)));
        // What the proxy writes back (standard, padded) reads the same.
        let rewritten = format!("{written}{}", STANDARD.encode(&back));
        assert_eq!(basic_credentials(rewritten.as_bytes()).map(|(_, d)| d), Some(data.to_vec()));
    }

    // The scrubber's forms of `value`, split off the input: `prefix | value | suffix`.
    let (prefix, rest) = data.split_at(data.len().min(data.first().map_or(0, |&b| b as usize % 4)));
    let (value, suffix) = rest.split_at(rest.len() - rest.len().min(3));
    let forms = forms_of(value);
    if !value.is_empty() {
        assert_eq!(forms.first().map(Vec::as_slice), Some(value), "the raw value first");
    }
    for (i, form) in forms.iter().enumerate() {
        assert!(!forms[..i].contains(form), "a form listed twice");
    }
    let whole = [prefix, value, suffix].concat();
    for (url_safe, engine) in [(false, &STANDARD_NO_PAD), (true, &URL_SAFE_NO_PAD)] {
        if let Some(fragment) = base64_fragment(url_safe, value, prefix.len() % 3) {
            let encoded = engine.encode(&whole);
            assert!(
                encoded.as_bytes().windows(fragment.len()).any(|w| w == fragment),
                "fragment {:?} of {value:?} not in {encoded}",
                String::from_utf8_lossy(&fragment)
            );
            assert!(forms.contains(&fragment), "the fragment is one of the forms");
        }
    }
});
