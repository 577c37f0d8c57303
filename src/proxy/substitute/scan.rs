//! Finding placeholders: this module owns reading a request head for `{{secret:` — in header
//! values, inside the base64-decoded `user:pass` of `Authorization: Basic`, in the
//! percent-decoded query (remembering where each decoded byte came from, so the raw query
//! can be rewritten), and in the path and authority, raw or decoded. The write step reads the
//! head again with the same helpers, so what it substitutes is exactly what was found here.

use std::ops::Range;
use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use http::header::{AUTHORIZATION, HeaderName};
use http::request::Parts;
use http::uri::Uri;
use zeroize::Zeroizing;

use super::{ErrorCode, Found, Place, Refusal, malformed, refuse};
use crate::domain::policy::{PLACEHOLDER_OPEN, placeholders};

/// Agents write Basic credentials with or without padding; we re-encode with padding.
const BASIC_DECODE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `{{secret:` exactly: what a placeholder starts with in text that is not decoded further.
static OPEN: LazyLock<AhoCorasick> = LazyLock::new(|| build_finder(&[PLACEHOLDER_OPEN], false));

/// Everything that could become `{{secret:` after one round of percent-decoding: both braces
/// raw or `%7B` in any mix, and when both are raw, `secret:` raw up to a first `%`.
static OPEN_ANY_ENCODING: LazyLock<AhoCorasick> = LazyLock::new(|| {
    let raw_then_escape: Vec<String> = (0..PLACEHOLDER_OPEN.len() - 2)
        .map(|n| format!("{}%", &PLACEHOLDER_OPEN[..2 + n]))
        .chain([PLACEHOLDER_OPEN.to_owned(), "%7b%7b".to_owned(), "%7b{".to_owned(), "{%7b".to_owned()])
        .collect();
    build_finder(&raw_then_escape, true)
});

fn build_finder<P: AsRef<[u8]>>(patterns: &[P], ascii_case_insensitive: bool) -> AhoCorasick {
    AhoCorasick::builder()
        .ascii_case_insensitive(ascii_case_insensitive)
        .build(patterns)
        .expect("a dozen short literal patterns always build")
}

/// A quick, conservative check before `scan`: `false` means no placeholder can be anywhere in
/// `bytes`, not even after percent-decoding (`%7B%7Bsecret:`, `%7b{secret%3A`, …). `true` only
/// means a full scan is needed. No allocation.
pub fn has_placeholder_text(bytes: &[u8]) -> bool {
    OPEN_ANY_ENCODING.is_match(bytes)
}

pub(super) fn has_raw_placeholder(bytes: &[u8]) -> bool {
    OPEN.is_match(bytes)
}

/// Every placeholder in the request head: each header value (and, for `authorization: Basic …`,
/// inside the base64-decoded `user:pass`), the query string (percent-decoded) and the path
/// (raw and percent-decoded; a placeholder there is always a violation). A malformed
/// `{{secret:` (unterminated, bad path, bad field) is an `unresolved_placeholder` refusal.
/// Allocates nothing for a head without placeholders but a Basic credential's decoding.
pub fn scan(head: &Parts) -> Result<Vec<Found>, Refusal> {
    let mut found = Vec::new();
    for (name, value) in &head.headers {
        let place = Place::Header(name.clone());
        if let Some(text) = header_text(value.as_bytes(), &place)? {
            collect(text, &place, &mut found)?;
        } else if let Some(basic) = BasicCredentials::parse(name, value.as_bytes())
            && let Some(text) = basic.text()?
        {
            collect(text, &Place::BasicAuth, &mut found)?;
        }
    }
    scan_url(&head.uri, &mut found)?;
    if let Some(query) = DecodedQuery::parse(&head.uri)? {
        collect(query.text()?, &Place::Query, &mut found)?;
    }
    Ok(found)
}

fn collect(text: &str, place: &Place, found: &mut Vec<Found>) -> Result<(), Refusal> {
    let parsed = placeholders(text).map_err(|e| malformed(place, e))?;
    found.extend(parsed.into_iter().map(|placeholder| Found { placeholder, place: place.clone() }));
    Ok(())
}

/// A header value's text when it holds `{{secret:`; `None` when it holds none.
pub(super) fn header_text<'v>(bytes: &'v [u8], place: &Place) -> Result<Option<&'v str>, Refusal> {
    if !has_raw_placeholder(bytes) {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        refuse(ErrorCode::UnresolvedPlaceholder, format!("{place} holds a placeholder but is not valid UTF-8"))
    })?;
    Ok(Some(text))
}

/// Placeholders in the path or authority, raw or percent-decoded: each one is a `Path` find.
pub(super) fn scan_url(uri: &Uri, found: &mut Vec<Found>) -> Result<(), Refusal> {
    let parts = [uri.path(), uri.authority().map_or("", |a| a.as_str())];
    for raw in parts.into_iter().filter(|raw| has_placeholder_text(raw.as_bytes())) {
        collect(raw, &Place::Path, found)?;
        if raw.contains('%') {
            let decoded = percent_decode(raw.as_bytes(), None);
            if has_raw_placeholder(&decoded) {
                collect(&String::from_utf8_lossy(&decoded), &Place::Path, found)?;
            }
        }
    }
    Ok(())
}

/// Percent-decodes `raw` (`%XX` with two hex digits; anything else, `+` included, stays as
/// it is). When `offsets` is given it receives, for each decoded byte and once more for the
/// end, the offset in `raw` it came from.
pub(super) fn percent_decode(raw: &[u8], mut offsets: Option<&mut Vec<usize>>) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(raw.len()));
    let mut i = 0;
    while i < raw.len() {
        if let Some(offsets) = offsets.as_deref_mut() {
            offsets.push(i);
        }
        let (byte, width) = escaped_byte(raw, i).map_or((raw[i], 1), |byte| (byte, 3));
        out.push(byte);
        i += width;
    }
    if let Some(offsets) = offsets {
        offsets.push(raw.len());
    }
    out
}

/// The byte `%XX` at `raw[i..]` stands for, if it is one.
fn escaped_byte(raw: &[u8], i: usize) -> Option<u8> {
    let hex = |at: usize| raw.get(at).and_then(|&b| (b as char).to_digit(16));
    if raw[i] != b'%' {
        return None;
    }
    Some((hex(i + 1)? << 4 | hex(i + 2)?) as u8)
}

/// `Authorization: Basic <base64>`, split and decoded.
pub(super) struct BasicCredentials<'v> {
    /// `Basic ` as the agent wrote it, with the whitespace after it.
    pub(super) scheme: &'v str,
    pub(super) decoded: Zeroizing<Vec<u8>>,
}

impl<'v> BasicCredentials<'v> {
    pub(super) fn parse(name: &HeaderName, value: &'v [u8]) -> Option<BasicCredentials<'v>> {
        if name != AUTHORIZATION || value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"basic ") {
            return None;
        }
        let credentials = value[6..].trim_ascii_start();
        let scheme = std::str::from_utf8(&value[..value.len() - credentials.len()]).ok()?;
        let decoded = Zeroizing::new(BASIC_DECODE.decode(credentials.trim_ascii_end()).ok()?);
        Some(BasicCredentials { scheme, decoded })
    }

    /// The decoded `user:pass` when it holds `{{secret:`.
    pub(super) fn text(&self) -> Result<Option<&str>, Refusal> {
        header_text(&self.decoded, &Place::BasicAuth)
    }
}

/// The query string, percent-decoded, with where each decoded byte came from.
pub(super) struct DecodedQuery<'u> {
    pub(super) raw: &'u str,
    pub(super) decoded: Zeroizing<Vec<u8>>,
    offsets: Vec<usize>,
}

impl<'u> DecodedQuery<'u> {
    /// `None` when the query cannot hold a placeholder.
    pub(super) fn parse(uri: &'u Uri) -> Result<Option<DecodedQuery<'u>>, Refusal> {
        let Some(raw) = uri.query().filter(|q| has_placeholder_text(q.as_bytes())) else { return Ok(None) };
        let mut offsets = Vec::with_capacity(raw.len() + 1);
        let decoded = percent_decode(raw.as_bytes(), Some(&mut offsets));
        Ok(has_raw_placeholder(&decoded).then_some(DecodedQuery { raw, decoded, offsets }))
    }

    pub(super) fn text(&self) -> Result<&str, Refusal> {
        std::str::from_utf8(&self.decoded).map_err(|_| {
            let message = "the query string holds a placeholder but is not valid UTF-8 once percent-decoded";
            refuse(ErrorCode::UnresolvedPlaceholder, message.to_owned())
        })
    }

    /// The range of the raw query that decodes to `decoded` range `span`.
    pub(super) fn raw_span(&self, span: Range<usize>) -> Range<usize> {
        self.offsets[span.start]..self.offsets[span.end]
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderName;

    use super::super::fixture::{basic, head};
    use super::*;

    #[test]
    fn scan_reports_places() {
        let request = head(
            // In a URL `#` starts the fragment, so a field is written `%23field` there.
            "/p/{{secret:a/b}}?q={{secret:c/d%23f}}",
            &[("authorization", &basic("u:{{secret:e/f}}")), ("x-api-key", "{{secret:g}}")],
        );
        let found: Vec<(String, Option<String>, Place)> = scan(&request)
            .unwrap()
            .into_iter()
            .map(|f| (f.placeholder.path().to_string(), f.placeholder.field().map(str::to_owned), f.place))
            .collect();
        let expected = vec![
            ("e/f".to_owned(), None, Place::BasicAuth),
            ("g".to_owned(), None, Place::Header(HeaderName::from_static("x-api-key"))),
            ("a/b".to_owned(), None, Place::Path),
            ("c/d".to_owned(), Some("f".to_owned()), Place::Query),
        ];
        assert_eq!(found, expected);
    }

    #[test]
    fn has_placeholder_text_table() {
        let cases: [(&str, bool); 14] = [
            ("", false),
            ("Bearer sk-live", false),
            ("{{secret:a}}", true),
            ("x%7B%7Bsecret:a%7D%7D", true),
            ("%7b%7bsecret%3aa", true),
            ("%7B{secret:a}}", true),
            ("{%7bsecret:a}}", true),
            ("{{%73ecret:a}}", true),
            ("{{sec%72et:a}}", true),
            ("{{secret%3Aa}}", true),
            ("{{other}}", false),
            ("{secret:a}", false),
            ("%7Bsecret", false),
            ("a=%7B%7D", false),
        ];
        for (text, expected) in cases {
            assert_eq!(has_placeholder_text(text.as_bytes()), expected, "{text}");
        }
    }

    #[test]
    fn encoded_placeholders_in_the_query_are_found() {
        for query in ["%7B%7Bsecret%3Aa%7D%7D", "{{%73ecret:a}}", "%7b{sec%72et:a%7d}", "{{secret:a}}"] {
            let request = head(&format!("/?x={query}"), &[]);
            let found = scan(&request).unwrap();
            assert_eq!(found.len(), 1, "{query}");
            assert_eq!((found[0].placeholder.path().as_str(), &found[0].place), ("a", &Place::Query), "{query}");
        }
    }
}
