//! The scanner's steps as plain data, for the fuzz targets in `fuzz/` (`crate::fuzzing`,
//! built with `--cfg fuzzing`) and this crate's tests; not part of the API otherwise.

use std::ops::Range;

use http::header::AUTHORIZATION;
use http::request::Parts;

use super::scan::{self as scanner, BasicCredentials, DecodedQuery, has_placeholder_text, header_text};
use super::{Place, Refusal, malformed};
use crate::domain::policy::placeholders;

/// `percent_decode` with the offsets it records: one per decoded byte, and the end.
pub fn percent_decode(raw: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut offsets = Vec::new();
    let decoded = scanner::percent_decode(raw, Some(&mut offsets));
    (decoded.to_vec(), offsets)
}

pub fn has_raw_placeholder(bytes: &[u8]) -> bool {
    scanner::has_raw_placeholder(bytes)
}

/// `Authorization: <value>` read as Basic credentials: the scheme as written (with the
/// whitespace after it) and the decoded `user:pass`.
pub fn basic_credentials(value: &[u8]) -> Option<(String, Vec<u8>)> {
    BasicCredentials::parse(&AUTHORIZATION, value).map(|b| (b.scheme.to_owned(), b.decoded.to_vec()))
}

/// One text `scan` reads placeholders in, and what it read there.
#[derive(Debug)]
pub struct Read {
    pub place: String,
    pub text: Vec<u8>,
    /// Each placeholder's span in `text` and the placeholder written out again, or why
    /// the text was refused.
    pub found: Result<Vec<(Range<usize>, String)>, String>,
    /// For the query: the raw query, and each placeholder's span in it.
    pub raw: Option<(Vec<u8>, Vec<Range<usize>>)>,
}

/// The texts `scan` reads in `head`, in its order, each read on its own (`scan` stops
/// at the first refusal). Built from the scanner's own steps.
pub fn reads(head: &Parts) -> Vec<Read> {
    let mut reads = Vec::new();
    let mut read = |place: &Place, text: &str| {
        let found = placeholders(text)
            .map(|found| found.iter().map(|p| (p.span(), p.to_string())).collect())
            .map_err(|e| malformed(place, e).message);
        reads.push(Read { place: place.to_string(), text: text.as_bytes().to_vec(), found, raw: None });
    };
    let refused = |place: &Place, text: &[u8], e: Refusal| Read {
        place: place.to_string(),
        text: text.to_vec(),
        found: Err(e.message),
        raw: None,
    };
    let mut refusals = Vec::new();
    for (name, value) in &head.headers {
        let place = Place::Header(name.clone());
        match header_text(value.as_bytes(), &place) {
            Ok(Some(text)) => read(&place, text),
            Err(e) => refusals.push(refused(&place, value.as_bytes(), e)),
            Ok(None) => {
                if let Some(basic) = BasicCredentials::parse(name, value.as_bytes()) {
                    match basic.text() {
                        Ok(Some(text)) => read(&Place::BasicAuth, text),
                        Ok(None) => {}
                        Err(e) => refusals.push(refused(&Place::BasicAuth, &basic.decoded, e)),
                    }
                }
            }
        }
    }
    let uri = &head.uri;
    for raw in [uri.path(), uri.authority().map_or("", |a| a.as_str())] {
        if has_placeholder_text(raw.as_bytes()) {
            read(&Place::Path, raw);
            if raw.contains('%') {
                let decoded = scanner::percent_decode(raw.as_bytes(), None);
                if scanner::has_raw_placeholder(&decoded) {
                    read(&Place::Path, &String::from_utf8_lossy(&decoded));
                }
            }
        }
    }
    match DecodedQuery::parse(uri) {
        Ok(Some(query)) => match query.text() {
            Ok(text) => {
                read(&Place::Query, text);
                let last = reads.last_mut().expect("just read");
                if let Ok(found) = &last.found {
                    let spans = found.iter().map(|(span, _)| query.raw_span(span.clone())).collect();
                    last.raw = Some((query.raw.as_bytes().to_vec(), spans));
                }
            }
            Err(e) => refusals.push(refused(&Place::Query, &query.decoded, e)),
        },
        Ok(None) => {}
        Err(e) => refusals.push(refused(&Place::Query, uri.query().unwrap_or("").as_bytes(), e)),
    }
    reads.extend(refusals);
    reads
}

/// `scan` itself: how many placeholders it found, or its refusal.
pub fn scan(head: &Parts) -> Result<usize, String> {
    scanner::scan(head).map(|found| found.len()).map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{basic, head};

    #[test]
    fn the_fuzzing_view_reads_what_scan_reads() {
        let head = head(
            "/r/a/v1?k=%7B%7Bsecret:team/maps%7D%7D&x=%7b{secret:team/db%23password}}",
            &[
                ("authorization", &basic("user:{{secret:team/basic}}")),
                ("x-api-key", "key {{secret:team/key}} and {{secret:team/other}}"),
            ],
        );
        assert_eq!(super::scan(&head), Ok(5));
        let reads = super::reads(&head);
        let places: Vec<&str> = reads.iter().map(|r| r.place.as_str()).collect();
        assert_eq!(
            places,
            ["the Basic credentials of header 'authorization'", "header 'x-api-key'", "the query string"]
        );
        let query = &reads[2];
        let (raw, spans) = query.raw.as_ref().expect("the query's raw spans");
        let found = query.found.as_ref().expect("placeholders");
        assert_eq!(found[1].1, "{{secret:team/db#password}}");
        assert_eq!(&raw[spans[1].clone()], b"%7b{secret:team/db%23password}}");
        assert_eq!(super::basic_credentials(b"basic  dXNlcg"), Some(("basic  ".into(), b"user".to_vec())));
        assert_eq!(super::percent_decode(b"a%41%g"), (b"aA%g".to_vec(), vec![0, 1, 4, 5, 6]));
    }
}
