//! The placeholder scanner on arbitrary header values and request targets.
//!
//! Input: `value1 LF value2 LF target`. The head gets `authorization: value1`,
//! `authorization: Basic base64(value2)` (so decoded credentials are reached), `x-api-key:
//! value2`, and the target as its URI (when they are valid). Properties:
//! - `scan` never panics, and it refuses exactly when one of the texts it reads is refused,
//!   and otherwise finds as many placeholders as they hold;
//! - every placeholder's span lies inside the text it was read in, and that text at the
//!   span is the placeholder written out again (`{{secret:PATH}}` or `{{secret:PATH#f}}`);
//! - in the query, each span maps back to a raw range that percent-decodes to the same
//!   bytes;
//! - `has_placeholder_text` is conservative: when it says no, the text holds no
//!   `{{secret:` even once percent-decoded.
#![no_main]

use airlock::fuzzing::{has_raw_placeholder, percent_decode, reads, scan};
use airlock::proxy::substitute::has_placeholder_text;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (first, second, target) =
        (parts.next().unwrap_or(b""), parts.next().unwrap_or(b""), parts.next().unwrap_or(b""));

    for text in [first, second, target] {
        if !has_placeholder_text(text) {
            assert!(!has_raw_placeholder(text), "quick check missed a raw placeholder");
            assert!(!has_raw_placeholder(&percent_decode(text).0), "quick check missed an encoded placeholder");
        }
    }

    let mut request = http::Request::get("/");
    if let Ok(uri) = http::Uri::try_from(target) {
        request = request.uri(uri);
    }
    let (mut head, ()) = match request.body(()) {
        Ok(r) => r.into_parts(),
        Err(_) => http::Request::new(()).into_parts(),
    };
    let mut add = |name: &'static str, value: Vec<u8>| {
        if let Ok(value) = http::HeaderValue::from_bytes(&value) {
            head.headers.append(name, value);
        }
    };
    add("authorization", first.to_vec());
    add("authorization", format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(second)).into_bytes());
    add("x-api-key", second.to_vec());

    let scanned = scan(&head);
    let reads = reads(&head);
    let refused = reads.iter().any(|r| r.found.is_err());
    match &scanned {
        Ok(n) => {
            assert!(!refused, "scan found {n} but a text it reads is refused: {reads:?}");
            let total: usize = reads.iter().map(|r| r.found.as_ref().map_or(0, Vec::len)).sum();
            assert_eq!(*n, total, "scan's count against its texts': {reads:?}");
        }
        Err(e) => assert!(refused, "scan refused ({e}) but no text it reads is: {reads:?}"),
    }
    for read in &reads {
        let Ok(found) = &read.found else { continue };
        for (span, written) in found {
            assert!(span.start < span.end && span.end <= read.text.len(), "span {span:?} outside {}", read.place);
            let at = &read.text[span.clone()];
            assert!(at.starts_with(b"{{secret:") && at.ends_with(b"}}"), "{} at {span:?}", read.place);
            assert_eq!(at, written.as_bytes(), "{} at {span:?} does not re-read as the placeholder", read.place);
        }
        if let Some((raw, spans)) = &read.raw {
            for ((span, _), raw_span) in found.iter().zip(spans) {
                assert!(raw_span.start <= raw_span.end && raw_span.end <= raw.len(), "raw span {raw_span:?}");
                let decoded = percent_decode(&raw[raw_span.clone()]).0;
                assert_eq!(
                    decoded,
                    read.text[span.clone()],
                    "raw span {raw_span:?} does not decode to the placeholder"
                );
            }
        }
    }
});
