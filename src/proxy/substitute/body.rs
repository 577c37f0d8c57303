//! Body fields: a placeholder that is the whole value of a top-level field of an
//! `application/x-www-form-urlencoded` or `application/json` request body, where a grant names
//! that field in `body_fields` (OAuth2's `client_secret`, say). `scan_body` lists them, with
//! where each value sits in the body as sent; any other placeholder in such a body (inside a
//! longer value, in a nested value, in a key) is refused. `write_body` checks each against its
//! binding (`bind::Rules`, as a header's would be) and writes the values in: percent-encoded
//! into a form, as a JSON string into JSON; every other byte of the body is kept as sent.
//! Pure: no I/O, no logging; a `Refusal` names the secret path and the field, never a value.

use std::ops::Range;

use http::HeaderMap;
use http::header::CONTENT_TYPE;
use percent_encoding::{percent_decode, utf8_percent_encode};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::bind::Rules;
use super::scan::{has_placeholder_text, has_raw_placeholder};
use super::{BoundValue, ErrorCode, Found, Place, Refusal, malformed, refuse};
use crate::domain::policy::{Placeholder, placeholders};
use crate::proxy::forms::QUERY_VALUE;

/// The bodies whose fields can carry a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Form,
    Json,
}

impl BodyKind {
    /// From the request's `Content-Type` (its media type, any case, parameters ignored);
    /// `None` for any other body, or several `Content-Type` headers.
    pub fn of(headers: &HeaderMap) -> Option<BodyKind> {
        let mut values = headers.get_all(CONTENT_TYPE).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let media = value.to_str().ok()?.split(';').next()?.trim();
        if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Some(BodyKind::Form)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(BodyKind::Json)
        } else {
            None
        }
    }
}

/// One placeholder that is the whole value of a top-level body field: the field (as
/// `Place::BodyField`) and the bytes of the body its value takes (quotes included for JSON).
#[derive(Debug, Clone)]
pub struct BodyFound {
    pub found: Found,
    span: Range<usize>,
}

/// Every placeholder of a form or JSON body that is the whole value of a top-level field, in
/// body order (fields and values decoded: percent-decoding for a form, JSON string escapes). A placeholder anywhere else in the body, a malformed one, a field named twice
/// when one of them carries a placeholder, or (holding a placeholder) a body that is not a form
/// or a JSON object is a refusal. A body without placeholder text costs one quick search.
pub fn scan_body(kind: BodyKind, body: &[u8]) -> Result<Vec<BodyFound>, Refusal> {
    if !has_placeholder_text(body) {
        return Ok(Vec::new());
    }
    let fields = match kind {
        BodyKind::Form => form_fields(body),
        BodyKind::Json => json_fields(body)?,
    };
    let mut found: Vec<BodyFound> = Vec::new();
    for Field { name, value, span } in &fields {
        if let Some(placeholder) = whole_placeholder(value)? {
            if fields.iter().filter(|f| f.name == *name).count() > 1 {
                let message = format!(
                    "body field '{name}' appears more than once; a field that carries a placeholder must appear once"
                );
                return Err(refuse(ErrorCode::PlacementNotAllowed, message));
            }
            found.push(BodyFound {
                found: Found { placeholder, place: Place::BodyField(name.clone()) },
                span: span.clone(),
            });
        } else if has_raw_placeholder(value.as_bytes()) || has_raw_placeholder(name.as_bytes()) {
            return Err(elsewhere(value).or_else(|| elsewhere(name)).unwrap_or_else(elsewhere_unnamed));
        }
    }
    Ok(found)
}

/// The body with every found value written in, after each passed its binding check for the
/// field it is in; every other byte as sent. Nothing is written unless all pass.
pub(super) fn write_body<'b>(
    kind: BodyKind,
    body: &[u8],
    found: &[BodyFound],
    rules: &Rules<'_, 'b>,
) -> Result<Zeroizing<Vec<u8>>, Refusal> {
    let mut resolved = Vec::with_capacity(found.len());
    for f in found {
        resolved.push(rules.check(&f.found.placeholder, &f.found.place)?);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 64));
    let mut at = 0;
    for (f, value) in found.iter().zip(&resolved) {
        out.extend_from_slice(&body[at..f.span.start]);
        match kind {
            BodyKind::Form => {
                for piece in utf8_percent_encode(value.as_str(), QUERY_VALUE) {
                    out.extend_from_slice(piece.as_bytes());
                }
            }
            BodyKind::Json => {
                // Writing a string into a Vec cannot fail.
                let quoted = Zeroizing::new(serde_json::to_string(value.as_str()).unwrap_or_default());
                out.extend_from_slice(quoted.as_bytes());
            }
        }
        at = f.span.end;
    }
    out.extend_from_slice(&body[at..]);
    Ok(out)
}

/// Checks `found` and writes the values into `body` (see `write_body`); the body-side twin of
/// `substitute::inject`, with the same arguments.
pub fn inject_body<'b>(
    kind: BodyKind,
    body: &[u8],
    found: &[BodyFound],
    (host, is_tls, plain_http_allowed): (&str, bool, bool),
    bindings: &dyn Fn(&Placeholder) -> Option<BoundValue<'b>>,
) -> Result<Zeroizing<Vec<u8>>, Refusal> {
    let rules = Rules { host, is_tls, plain_http_allowed, bindings };
    write_body(kind, body, found, &rules)
}

/// A top-level field: its decoded name and value, and the bytes of the body its value takes.
struct Field {
    name: String,
    value: String,
    span: Range<usize>,
}

/// `a=1&b=2`: names and values percent-decoded (`+` as a space), spans of the raw values.
fn form_fields(body: &[u8]) -> Vec<Field> {
    let decode = |raw: &[u8]| {
        let spaced: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
        percent_decode(&spaced).decode_utf8_lossy().into_owned()
    };
    let mut fields = Vec::new();
    let mut start = 0;
    for pair in body.split(|&b| b == b'&') {
        let end = start + pair.len();
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], start + eq + 1..end),
            None => (pair, end..end),
        };
        fields.push(Field { name: decode(name), value: decode(&body[value.clone()]), span: value });
        start = end + 1;
    }
    fields
}

/// A JSON object's members, in order: names decoded, string values decoded (others as
/// written), spans of the raw values. Not an object (or not JSON) is refused: it holds
/// placeholder text, or it would not be read.
fn json_fields(body: &[u8]) -> Result<Vec<Field>, Refusal> {
    let not_object = || {
        let message = "the request body holds a placeholder but is not a JSON object; a value may be only the whole \
                       value of a top-level field its grant names in body_fields"
            .to_owned();
        refuse(ErrorCode::PlacementNotAllowed, message)
    };
    let text = std::str::from_utf8(body).map_err(|_| not_object())?;
    let members = Members::parse(text).map_err(|_| not_object())?;
    let base = text.as_ptr() as usize;
    let mut fields = Vec::with_capacity(members.len());
    for (name, raw) in members {
        let raw_text = raw.get();
        let at = raw_text.as_ptr() as usize - base;
        let value = if raw_text.starts_with('"') {
            serde_json::from_str::<String>(raw_text).map_err(|_| not_object())?
        } else {
            // A nested value or a literal: never a field's whole value, only checked.
            raw_text.to_owned()
        };
        fields.push(Field { name, value, span: at..at + raw_text.len() });
    }
    Ok(fields)
}

/// The placeholder `value` is, whole; `None` when it is not exactly one placeholder.
fn whole_placeholder(value: &str) -> Result<Option<Placeholder>, Refusal> {
    if !value.starts_with(crate::domain::policy::PLACEHOLDER_OPEN) {
        return Ok(None);
    }
    let found = placeholders(value).map_err(|e| malformed(&Place::Body, e))?;
    Ok(match <[Placeholder; 1]>::try_from(found) {
        Ok([one]) if one.span() == (0..value.len()) => Some(one),
        _ => None,
    })
}

/// The refusal of a placeholder in `text` outside a field's whole value, naming its secret.
fn elsewhere(text: &str) -> Option<Refusal> {
    let first = placeholders(text).ok()?.into_iter().next()?;
    let path = first.path();
    let message = format!(
        "a placeholder for secret '{path}' is in the request body but is not the whole value of a top-level form or \
         JSON field; secret values go in a body only as the whole value of a field its grant names in body_fields"
    );
    Some(refuse(ErrorCode::PlacementNotAllowed, message))
}

fn elsewhere_unnamed() -> Refusal {
    let message = "the request body holds placeholder text that is not the whole value of a top-level form or JSON \
                   field; secret values go in a body only as the whole value of a field its grant names in body_fields"
        .to_owned();
    refuse(ErrorCode::PlacementNotAllowed, message)
}

/// A JSON object's members in order, values as written (borrowed from the text).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Members<'a> {
    fn parse(text: &'a str) -> Result<Vec<(String, &'a RawValue)>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let members = (&mut de).deserialize_map(MembersVisitor)?;
        de.end()?;
        Ok(members.0)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
            members.push(entry);
        }
        Ok(Members(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(kind: BodyKind, body: &str) -> Result<Vec<(String, String, Range<usize>)>, ErrorCode> {
        let found = scan_body(kind, body.as_bytes()).map_err(|r| r.code)?;
        Ok(found
            .into_iter()
            .map(|f| match f.found.place {
                Place::BodyField(name) => (name, f.found.placeholder.to_string(), f.span),
                other => panic!("{other}"),
            })
            .collect())
    }

    #[test]
    fn form_fields_whole_values_only() {
        let body = "grant_type=client_credentials&client_secret=%7B%7Bsecret%3Aoauth%2Fs%7D%7D&x=1";
        let found = scanned(BodyKind::Form, body).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "client_secret");
        assert_eq!(found[0].1, "{{secret:oauth/s}}");
        assert_eq!(&body[found[0].2.clone()], "%7B%7Bsecret%3Aoauth%2Fs%7D%7D");
        assert_eq!(scanned(BodyKind::Form, "a=b&c=d").unwrap(), vec![]);
        for bad in [
            "client_secret=x{{secret:oauth/s}}",
            "{{secret:oauth/s}}=1",
            "client_secret={{secret:oauth/s}}&client_secret=2",
            "note=see+{{secret:oauth/s}}",
        ] {
            assert_eq!(scanned(BodyKind::Form, bad), Err(ErrorCode::PlacementNotAllowed), "{bad}");
        }
        assert_eq!(scanned(BodyKind::Form, "a={{secret:bad path}}"), Err(ErrorCode::UnresolvedPlaceholder));
    }

    #[test]
    fn json_fields_whole_top_level_strings_only() {
        let body = r#"{"client_id": "me", "client_secret":"{{secret:oauth/s}}", "n": [1, 2]}"#;
        let found = scanned(BodyKind::Json, body).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(&body[found[0].2.clone()], r#""{{secret:oauth/s}}""#);
        for bad in [
            r#"{"a": {"client_secret": "{{secret:oauth/s}}"}}"#,
            r#"{"client_secret": "Bearer {{secret:oauth/s}}"}"#,
            r#"["{{secret:oauth/s}}"]"#,
            r#"{"client_secret": "{{secret:oauth/s}}", "client_secret": "x"}"#,
            r#"{"client_secret": "{{secret:oauth/s}}""#,
        ] {
            assert_eq!(scanned(BodyKind::Json, bad), Err(ErrorCode::PlacementNotAllowed), "{bad}");
        }
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert_eq!(BodyKind::of(&h), None);
        h.insert(CONTENT_TYPE, "Application/JSON; charset=utf-8".parse().unwrap());
        assert_eq!(BodyKind::of(&h), Some(BodyKind::Json));
        h.insert(CONTENT_TYPE, "application/x-www-form-urlencoded".parse().unwrap());
        assert_eq!(BodyKind::of(&h), Some(BodyKind::Form));
        h.insert(CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(BodyKind::of(&h), None);
    }
}
