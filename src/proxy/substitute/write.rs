//! Writing values into the head: this module owns the last step, run only once every
//! placeholder passed the binding check. A header value gets the raw value, `Authorization:
//! Basic` credentials are decoded, substituted and re-encoded with padding, the query gets
//! the value percent-encoded into the raw query; each placeholder met on the way is checked
//! again. Buffers that hold a value are sized up front and zeroized, and a header keeps the
//! buffer it was written into. A Basic token records what it wrote as `Written`, so
//! redaction can find the token and show the agent's own instead.

use std::fmt;
use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use percent_encoding::utf8_percent_encode;
use zeroize::Zeroizing;

use super::bind::Rules;
use super::scan::{BasicCredentials, DecodedQuery, header_text, scan_url};
use super::{ErrorCode, Place, Refusal, Template, malformed, refuse};
use crate::domain::policy::{Placeholder, placeholders};
use crate::proxy::forms::QUERY_VALUE;

/// What a request wrote that holds a value in a form that depends on more than the value: a
/// whole `Basic` token (base64 of `user:value`), with the token the agent sent in its place.
/// Redaction looks for it byte for byte and shows the agent's token instead.
pub struct Written {
    pub wrote: Zeroizing<Vec<u8>>,
    pub sent: Vec<u8>,
}

impl fmt::Debug for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Written").field("wrote_bytes", &self.wrote.len()).finish_non_exhaustive()
    }
}

/// How a value is written where it goes.
#[derive(Clone, Copy)]
enum Encoding {
    Raw,
    Percent,
}

impl Encoding {
    fn len(self, value: &str) -> usize {
        match self {
            Encoding::Raw => value.len(),
            Encoding::Percent => utf8_percent_encode(value, QUERY_VALUE).map(str::len).sum(),
        }
    }

    fn write(self, out: &mut String, value: &str) {
        match self {
            Encoding::Raw => out.push_str(value),
            Encoding::Percent => utf8_percent_encode(value, QUERY_VALUE).for_each(|piece| out.push_str(piece)),
        }
    }
}

impl Rules<'_, '_> {
    /// Writes every value into `head` in place (the checks of `check_all` passed), puts each
    /// template's header in last, and drops the extensions.
    pub(super) fn write(&self, mut head: Parts, templates: &[Template<'_>]) -> Result<(Parts, Vec<Written>), Refusal> {
        let mut written = Vec::new();
        for (name, value) in head.headers.iter_mut() {
            if let Some(injected) = self.header(name, value)? {
                if let Some(basic) = BasicCredentials::parse(name, value.as_bytes()) {
                    let at = basic.scheme.len();
                    let wrote = Zeroizing::new(injected.as_bytes()[at.min(injected.len())..].to_vec());
                    written.push(Written { wrote, sent: value.as_bytes()[at..].to_vec() });
                }
                *value = injected;
            }
        }
        if let Some(uri) = self.uri(&head.uri)? {
            head.uri = uri;
        }
        for template in templates {
            let place = Place::Header(template.header.clone());
            let spliced = self.splice(template.placeholders, &place, Encoding::Raw, template.text, |span| span)?;
            head.headers.insert(template.header.clone(), header_value(spliced, &place)?);
        }
        head.extensions = http::Extensions::new();
        Ok((head, written))
    }
    /// The injected value of one header, or `None` when it holds no placeholder.
    fn header(&self, name: &HeaderName, value: &HeaderValue) -> Result<Option<HeaderValue>, Refusal> {
        let place = Place::Header(name.clone());
        if let Some(text) = header_text(value.as_bytes(), &place)? {
            let found = placeholders(text).map_err(|e| malformed(&place, e))?;
            let spliced = self.splice(&found, &place, Encoding::Raw, text, |span| span)?;
            return header_value(spliced, &place).map(Some);
        }
        let Some(basic) = BasicCredentials::parse(name, value.as_bytes()) else { return Ok(None) };
        let Some(text) = basic.text()? else { return Ok(None) };
        let found = placeholders(text).map_err(|e| malformed(&Place::BasicAuth, e))?;
        let spliced = self.splice(&found, &Place::BasicAuth, Encoding::Raw, text, |span| span)?;
        let mut full = Zeroizing::new(String::with_capacity(basic.scheme.len() + spliced.len().div_ceil(3) * 4));
        full.push_str(basic.scheme);
        STANDARD.encode_string(spliced.as_bytes(), &mut full);
        header_value(full, &Place::BasicAuth).map(Some)
    }

    /// The URI with query placeholders replaced (`None`: it has no query to change); any
    /// placeholder in the path is refused.
    fn uri(&self, uri: &Uri) -> Result<Option<Uri>, Refusal> {
        let mut in_url = Vec::new();
        scan_url(uri, &mut in_url)?;
        for found in &in_url {
            self.check(&found.placeholder, &found.place)?;
        }
        let Some(query) = DecodedQuery::parse(uri)? else { return Ok(None) };
        let found = placeholders(query.text()?).map_err(|e| malformed(&Place::Query, e))?;
        let spliced = self.splice(&found, &Place::Query, Encoding::Percent, query.raw, |span| query.raw_span(span))?;
        let mut path_and_query = Zeroizing::new(String::with_capacity(uri.path().len() + 1 + spliced.len()));
        path_and_query.push_str(uri.path());
        path_and_query.push('?');
        path_and_query.push_str(&spliced);
        let unsafe_uri = || refuse(ErrorCode::UnsafeValue, "the query string is not valid after substitution".into());
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(path_and_query.as_str()).map_err(|_| unsafe_uri())?);
        Uri::from_parts(parts).map(Some).map_err(|_| unsafe_uri())
    }

    /// Checks the placeholders `found` (parsed from a text at `place`) and returns `source` with
    /// their values written in: `to_source` maps a placeholder's span in that text to the range
    /// it replaces in `source` (the same span for headers, the raw span for the decoded query).
    /// Sized up front so the buffer holding values is never reallocated, which would leave an
    /// unwiped copy behind.
    fn splice(
        &self,
        found: &[Placeholder],
        place: &Place,
        encoding: Encoding,
        source: &str,
        to_source: impl Fn(Range<usize>) -> Range<usize>,
    ) -> Result<Zeroizing<String>, Refusal> {
        let mut pieces = Vec::with_capacity(found.len());
        for placeholder in found {
            pieces.push((to_source(placeholder.span()), self.check(placeholder, place)?));
        }
        let replaced: usize = pieces.iter().map(|(span, _)| span.len()).sum();
        let written: usize = pieces.iter().map(|(_, resolved)| encoding.len(resolved.as_str())).sum();
        let mut out = Zeroizing::new(String::with_capacity(source.len() - replaced + written));
        let mut at = 0;
        for (span, resolved) in &pieces {
            out.push_str(&source[at..span.start]);
            encoding.write(&mut out, resolved.as_str());
            at = span.end;
        }
        out.push_str(&source[at..]);
        Ok(out)
    }
}

/// A header value built from substituted text; invalid bytes fail closed.
/// The header keeps the zeroizing buffer the value was written into (no copy) and wipes it
/// when its last clone goes.
fn header_value(text: Zeroizing<String>, place: &Place) -> Result<HeaderValue, Refusal> {
    let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(WipedText(text))).map_err(|_| {
        let message = format!("{place} would not be a valid header value after substitution");
        refuse(ErrorCode::UnsafeValue, message)
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Text holding a value, seen as bytes by the `Bytes` that owns it.
struct WipedText(Zeroizing<String>);

impl AsRef<[u8]> for WipedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{Fixture, basic, head};
    use super::super::{ErrorCode, scan};
    use super::*;

    enum Expect {
        /// This header has this value afterwards.
        Header(&'static str, String),
        /// The URI is this afterwards.
        Uri(&'static str),
        Refused(ErrorCode),
    }

    #[test]
    fn injection_table() {
        use ErrorCode::*;
        use Expect::*;
        let openai = "api.openai.com";
        let cases: Vec<(&str, Parts, &str, Expect)> = vec![
            (
                "bearer header",
                head("/v1/chat", &[("authorization", "Bearer {{secret:prod/openai/key}}")]),
                openai,
                Header("authorization", "Bearer sk-openai-1111".into()),
            ),
            (
                "basic auth",
                head("/", &[("authorization", &basic("user:{{secret:prod/db/pass}}"))]),
                "db.example.com",
                Header("authorization", basic("user:p@ss:w0rd-8888")),
            ),
            (
                "basic auth, lower-case scheme and no padding",
                head("/", &[("authorization", "basic dTp7e3NlY3JldDpwcm9kL2RiL3Bhc3N9fQ")]),
                "db.example.com",
                Header("authorization", "basic dTpwQHNzOncwcmQtODg4OA==".into()),
            ),
            (
                "query value percent-encoded",
                head("/v1/x?key={{secret:prod/q/token}}&a=1+2", &[]),
                openai,
                Uri("/v1/x?key=a%26b%20c%2F%C3%A9%3D6666&a=1+2"),
            ),
            (
                "percent-encoded placeholder in the query",
                head("https://a.example.com/s?q=%7B%7Bsecret%3Aprod%2Fq%2Ftoken%7D%7D&x=%2B", &[]),
                "a.example.com",
                Uri("https://a.example.com/s?q=a%26b%20c%2F%C3%A9%3D6666&x=%2B"),
            ),
            (
                "placeholder as a query key, CR/LF value is fine there",
                head("/?{{secret:prod/q/lines}}=1", &[]),
                openai,
                Uri("/?line1%0Aline2-7777=1"),
            ),
            (
                "json field",
                head("/", &[("x-api-key", "{{secret:prod/db/json#password}}")]),
                "db.example.com",
                Header("x-api-key", "pw\"9999".into()),
            ),
            (
                "two placeholders in one header",
                head("/", &[("x-api-key", "{{secret:prod/openai/key}}:{{secret:prod/openai/other}}")]),
                openai,
                Header("x-api-key", "sk-openai-1111:sk-other-2222".into()),
            ),
            (
                "secret allowed_hosts excluding the host",
                head("/", &[("authorization", "{{secret:prod/openai/scoped}}")]),
                "api.openai.com",
                Refused(HostNotAllowed),
            ),
            (
                "no placeholder",
                head("/plain?a=%7B%7D", &[("authorization", "Bearer agent-own-token")]),
                openai,
                Uri("/plain?a=%7B%7D"),
            ),
            (
                "wrong host",
                head("/", &[("authorization", "Bearer {{secret:prod/openai/key}}")]),
                "evil.example.com",
                Refused(HostNotAllowed),
            ),
            (
                "host that only ends like the granted one",
                head("/", &[("authorization", "Bearer {{secret:prod/openai/key}}")]),
                "api.openai.com.evil.net",
                Refused(HostNotAllowed),
            ),
            (
                "header not in the grant",
                head("/", &[("x-custom", "{{secret:prod/openai/key}}")]),
                openai,
                Refused(PlacementNotAllowed),
            ),
            ("cookie", head("/", &[("cookie", "s={{secret:prod/openai/key}}")]), openai, Refused(PlacementNotAllowed)),
            (
                "user-agent",
                head("/", &[("user-agent", "{{secret:prod/openai/key}}")]),
                openai,
                Refused(PlacementNotAllowed),
            ),
            (
                "query without grant.query",
                head("/?k={{secret:prod/openai/key}}", &[]),
                openai,
                Refused(PlacementNotAllowed),
            ),
            (
                "basic auth without authorization in the grant",
                head("/", &[("authorization", &basic("u:{{secret:prod/hdr/key}}"))]),
                openai,
                Refused(PlacementNotAllowed),
            ),
            (
                "base64 in another header is not decoded",
                head("/", &[("x-api-key", &basic("u:{{secret:prod/openai/key}}"))]),
                openai,
                Header("x-api-key", basic("u:{{secret:prod/openai/key}}")),
            ),
            (
                "placeholder in percent-encoded user info",
                head("http://%7B%7Bsecret%3Aprod%2Fopenai%2Fkey%7D%7D@api.openai.com/", &[]),
                openai,
                Refused(PlacementNotAllowed),
            ),
            ("placeholder in path", head("/v1/{{secret:prod/openai/key}}", &[]), openai, Refused(PlacementNotAllowed)),
            (
                "percent-encoded placeholder in path",
                head("/v1/%7B%7Bsecret:prod%2Fopenai%2Fkey%7D%7D", &[]),
                openai,
                Refused(PlacementNotAllowed),
            ),
            (
                "CR/LF value in a header",
                head("/", &[("authorization", "Bearer {{secret:prod/openai/crlf}}")]),
                openai,
                Refused(UnsafeValue),
            ),
            (
                "CR/LF value in Basic credentials",
                head("/", &[("authorization", &basic("u:{{secret:prod/openai/crlf}}"))]),
                openai,
                Refused(UnsafeValue),
            ),
            (
                "control character fails closed",
                head("/", &[("authorization", "{{secret:prod/openai/ctl}}")]),
                openai,
                Refused(UnsafeValue),
            ),
            (
                "unknown secret",
                head("/", &[("authorization", "{{secret:prod/openai/missing}}")]),
                openai,
                Refused(SecretNotGranted),
            ),
            (
                "secret outside every grant",
                head("/", &[("authorization", "{{secret:dev/key}}")]),
                openai,
                Refused(SecretNotGranted),
            ),
            (
                "missing json field",
                head("/", &[("x-api-key", "{{secret:prod/db/json#token}}")]),
                "db.example.com",
                Refused(UnresolvedPlaceholder),
            ),
            (
                "non-string json field",
                head("/", &[("x-api-key", "{{secret:prod/db/json#port}}")]),
                "db.example.com",
                Refused(UnresolvedPlaceholder),
            ),
            (
                "field of a value that is not json",
                head("/", &[("x-api-key", "{{secret:prod/db/notjson#password}}")]),
                "db.example.com",
                Refused(UnresolvedPlaceholder),
            ),
            (
                "first failure wins",
                head("/", &[("authorization", "{{secret:nope/x}}"), ("cookie", "{{secret:prod/openai/key}}")]),
                openai,
                Refused(SecretNotGranted),
            ),
            (
                "unterminated",
                head("/", &[("x-api-key", "{{secret:prod/openai/key")]),
                openai,
                Refused(UnresolvedPlaceholder),
            ),
            ("bad path", head("/?q={{secret:a/../b}}", &[]), openai, Refused(UnresolvedPlaceholder)),
        ];
        let fixture = Fixture::new();
        for (name, head, host, expect) in cases {
            let result = fixture.run(&head, host, true, false);
            match (expect, result) {
                (Header(header, value), Ok(out)) => {
                    assert_eq!(out.headers[header], value.as_str(), "{name}");
                    assert_eq!(out.uri, head.uri, "{name}");
                }
                (Uri(uri), Ok(out)) => {
                    assert_eq!(out.uri, uri, "{name}");
                    assert_eq!(out.headers, head.headers, "{name}");
                }
                (Refused(code), Err(refusal)) => assert_eq!(refusal.code, code, "{name}: {refusal}"),
                (_, result) => panic!("{name}: unexpected {:?}", result.map(|p| (p.uri, p.headers))),
            }
        }
    }

    #[test]
    fn no_placeholder_leaves_the_head_unchanged() {
        let fixture = Fixture::new();
        let request = head(
            "https://api.openai.com/v1/models?limit=5&q=%7B%7Bsecret",
            &[("host", "api.openai.com"), ("authorization", "Basic dXNlcjpwYXNz"), ("accept", "*/*")],
        );
        assert!(scan(&request).unwrap().is_empty());
        let out = fixture.run(&request, "api.openai.com", true, false).unwrap();
        assert_eq!(
            (&out.method, &out.uri, out.version, &out.headers),
            (&request.method, &request.uri, request.version, &request.headers)
        );
        assert!(out.headers.values().all(|v| !v.is_sensitive()));
    }

    #[test]
    fn injected_headers_are_sensitive() {
        let fixture = Fixture::new();
        let request = head("/", &[("authorization", "Bearer {{secret:prod/openai/key}}"), ("accept", "*/*")]);
        let out = fixture.run(&request, "api.openai.com", true, false).unwrap();
        assert!(out.headers["authorization"].is_sensitive());
        assert!(!out.headers["accept"].is_sensitive());
    }
}
