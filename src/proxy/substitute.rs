//! Placeholder substitution: this module owns the step of the proxy pipeline that finds
//! `{{secret:PATH}}` / `{{secret:PATH#field}}` placeholders in a request head (`scan`), checks
//! every one against the binding the agent's policy gives its secret — host, placement,
//! field, value safety, transport — and only when all pass builds the outbound head with the
//! values written in (`inject`). Header values get the raw value, `Authorization: Basic`
//! credentials are decoded, substituted and re-encoded, the query string gets the value
//! percent-encoded; a placeholder in the URL path is always refused. A `Refusal` names the
//! secret path and the host or header, never a value. Pure: no I/O, no logging.

use std::fmt;
use std::ops::Range;
use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use zeroize::Zeroizing;

use crate::domain::SecretValue;
use crate::domain::policy::{Grant, HostPattern, Placeholder, PlaceholderError, placeholders};

const PLACEHOLDER_OPEN: &str = "{{secret:";

/// Headers that may never carry a secret, whatever a grant says: services store or echo
/// them, or they steer routing. The policy parser rejects them too; this is the second lock.
const FORBIDDEN_HEADERS: [&str; 4] = ["host", "cookie", "user-agent", "referer"];
const FORBIDDEN_HEADER_PREFIX: &str = "x-forwarded-";

/// Query values are encoded as everything outside RFC 3986 `unreserved`.
pub(super) const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

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

fn has_raw_placeholder(bytes: &[u8]) -> bool {
    OPEN.is_match(bytes)
}

// ---------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------

/// Why a request may not go upstream. `message` names the secret path and the host or
/// header involved, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    HostNotAllowed,
    PlacementNotAllowed,
    UnresolvedPlaceholder,
    SecretNotGranted,
    UnsafeValue,
    InsecureTransport,
}

impl RefusalCode {
    /// The error code of the API's error format and of `X-Airlock-Error`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::HostNotAllowed => "host_not_allowed",
            RefusalCode::PlacementNotAllowed => "placement_not_allowed",
            RefusalCode::UnresolvedPlaceholder => "unresolved_placeholder",
            RefusalCode::SecretNotGranted => "secret_not_granted",
            RefusalCode::UnsafeValue => "unsafe_value",
            RefusalCode::InsecureTransport => "insecure_transport",
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn refuse(code: RefusalCode, message: String) -> Refusal {
    Refusal { code, message }
}

fn malformed(place: &Place, error: PlaceholderError) -> Refusal {
    refuse(RefusalCode::UnresolvedPlaceholder, format!("{place}: {error}"))
}

// ---------------------------------------------------------------------------------------
// Finding placeholders
// ---------------------------------------------------------------------------------------

/// Where in the request a placeholder sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Header(HeaderName),
    /// Inside the decoded `user:pass` of `Authorization: Basic …`.
    BasicAuth,
    /// In the query string; spans count bytes of the percent-decoded query.
    Query,
    /// In the URL outside the query (the path, or a percent-encoded authority); never allowed.
    Path,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Header(name) => write!(f, "header '{name}'"),
            Place::BasicAuth => f.write_str("the Basic credentials of header 'authorization'"),
            Place::Query => f.write_str("the query string"),
            Place::Path => f.write_str("the URL path"),
        }
    }
}

/// One placeholder of a request head and where it sits.
#[derive(Debug, Clone)]
pub struct Found {
    pub placeholder: Placeholder,
    pub place: Place,
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
fn header_text<'v>(bytes: &'v [u8], place: &Place) -> Result<Option<&'v str>, Refusal> {
    if !has_raw_placeholder(bytes) {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        refuse(RefusalCode::UnresolvedPlaceholder, format!("{place} holds a placeholder but is not valid UTF-8"))
    })?;
    Ok(Some(text))
}

/// Placeholders in the path or authority, raw or percent-decoded: each one is a `Path` find.
fn scan_url(uri: &Uri, found: &mut Vec<Found>) -> Result<(), Refusal> {
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
fn percent_decode(raw: &[u8], mut offsets: Option<&mut Vec<usize>>) -> Zeroizing<Vec<u8>> {
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
struct BasicCredentials<'v> {
    /// `Basic ` as the agent wrote it, with the whitespace after it.
    scheme: &'v str,
    decoded: Zeroizing<Vec<u8>>,
}

impl<'v> BasicCredentials<'v> {
    fn parse(name: &HeaderName, value: &'v [u8]) -> Option<BasicCredentials<'v>> {
        if name != AUTHORIZATION || value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"basic ") {
            return None;
        }
        let credentials = value[6..].trim_ascii_start();
        let scheme = std::str::from_utf8(&value[..value.len() - credentials.len()]).ok()?;
        let decoded = Zeroizing::new(BASIC_DECODE.decode(credentials.trim_ascii_end()).ok()?);
        Some(BasicCredentials { scheme, decoded })
    }

    /// The decoded `user:pass` when it holds `{{secret:`.
    fn text(&self) -> Result<Option<&str>, Refusal> {
        header_text(&self.decoded, &Place::BasicAuth)
    }
}

/// The query string, percent-decoded, with where each decoded byte came from.
struct DecodedQuery<'u> {
    raw: &'u str,
    decoded: Zeroizing<Vec<u8>>,
    offsets: Vec<usize>,
}

impl<'u> DecodedQuery<'u> {
    /// `None` when the query cannot hold a placeholder.
    fn parse(uri: &'u Uri) -> Result<Option<DecodedQuery<'u>>, Refusal> {
        let Some(raw) = uri.query().filter(|q| has_placeholder_text(q.as_bytes())) else { return Ok(None) };
        let mut offsets = Vec::with_capacity(raw.len() + 1);
        let decoded = percent_decode(raw.as_bytes(), Some(&mut offsets));
        Ok(has_raw_placeholder(&decoded).then_some(DecodedQuery { raw, decoded, offsets }))
    }

    fn text(&self) -> Result<&str, Refusal> {
        std::str::from_utf8(&self.decoded).map_err(|_| {
            let message = "the query string holds a placeholder but is not valid UTF-8 once percent-decoded";
            refuse(RefusalCode::UnresolvedPlaceholder, message.to_owned())
        })
    }

    /// The range of the raw query that decodes to `decoded` range `span`.
    fn raw_span(&self, span: Range<usize>) -> Range<usize> {
        self.offsets[span.start]..self.offsets[span.end]
    }
}

// ---------------------------------------------------------------------------------------
// Checking bindings and injecting
// ---------------------------------------------------------------------------------------

/// One resolved value and what it is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub value: &'a SecretValue,
    pub grant: &'a Grant,
    /// The secret's own `allowed_hosts` (exact hosts or `*.suffix`); empty means no restriction.
    pub secret_allowed_hosts: &'a [String],
}

/// A header an `[[inject]]` rule writes: its template and the template's placeholders, parsed
/// once when the policy was read. It replaces the agent's header of that name.
#[derive(Debug, Clone)]
pub struct Template<'t> {
    pub header: &'t HeaderName,
    pub text: &'t str,
    pub placeholders: &'t [Placeholder],
}

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

/// Checks every found placeholder, then every template's, against its binding for `host`
/// (the upstream host the request will go to), then writes every value into the head in
/// place, puts each template's header in, and returns the head; extensions are dropped. All
/// is checked before anything is written, and the first failure (`found` order, then
/// `templates`) wins; the head is walked again while substituting and every placeholder met
/// there is checked too, so a `found` that misses one fails closed. Template headers go in
/// last, so a value is never scanned for placeholders itself. On a refusal the head is
/// consumed: the caller sends nothing. Returns the head and what it wrote in a form
/// redaction cannot derive from the values alone (`Written`).
/// `plain_http_allowed`: the upstream is http:// AND a route or inject names it http:// on purpose.
/// `bindings` borrows from the caller (`'b`), not from the placeholder it is asked about.
pub fn inject<'b>(
    mut head: Parts,
    found: &[Found],
    templates: &[Template<'_>],
    host: &str,
    is_tls: bool,
    plain_http_allowed: bool,
    bindings: &dyn Fn(&Placeholder) -> Option<Binding<'b>>,
) -> Result<(Parts, Vec<Written>), Refusal> {
    let rules = Rules { host, is_tls, plain_http_allowed, bindings };
    for found in found {
        rules.check(&found.placeholder, &found.place)?;
    }
    for template in templates {
        let place = Place::Header(template.header.clone());
        for placeholder in template.placeholders {
            rules.check(placeholder, &place)?;
        }
    }
    let mut written = Vec::new();
    for (name, value) in head.headers.iter_mut() {
        if let Some(injected) = rules.header(name, value)? {
            if let Some(basic) = BasicCredentials::parse(name, value.as_bytes()) {
                let at = basic.scheme.len();
                let wrote = Zeroizing::new(injected.as_bytes()[at.min(injected.len())..].to_vec());
                written.push(Written { wrote, sent: value.as_bytes()[at..].to_vec() });
            }
            *value = injected;
        }
    }
    if let Some(uri) = rules.uri(&head.uri)? {
        head.uri = uri;
    }
    for template in templates {
        let place = Place::Header(template.header.clone());
        let spliced = rules.splice(template.placeholders, &place, Encoding::Raw, template.text, |span| span)?;
        head.headers.insert(template.header.clone(), header_value(spliced, &place)?);
    }
    head.extensions = http::Extensions::new();
    Ok((head, written))
}

/// What one request's placeholders are checked against.
struct Rules<'r, 'b> {
    host: &'r str,
    is_tls: bool,
    plain_http_allowed: bool,
    bindings: &'r dyn Fn(&Placeholder) -> Option<Binding<'b>>,
}

/// The text that replaces a placeholder: the whole value or one field of it.
enum Resolved<'a> {
    Whole(&'a SecretValue),
    Field(Zeroizing<String>),
}

impl Resolved<'_> {
    fn as_str(&self) -> &str {
        match self {
            Resolved::Whole(value) => value.expose(),
            Resolved::Field(text) => text,
        }
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

impl<'b> Rules<'_, 'b> {
    /// The checks of one placeholder, in order; the value to write when all pass.
    fn check(&self, placeholder: &Placeholder, place: &Place) -> Result<Resolved<'b>, Refusal> {
        let path = placeholder.path().as_str();
        let host = self.host;
        if *place == Place::Path {
            let message = format!(
                "a placeholder for secret '{path}' is in the URL path; secret values may go only in headers, \
                 Basic credentials or the query string, where the agent's grant allows"
            );
            return Err(refuse(RefusalCode::PlacementNotAllowed, message));
        }
        let Some(binding) = (self.bindings)(placeholder) else {
            let message = format!("secret '{path}' is not granted to this agent (or does not exist)");
            return Err(refuse(RefusalCode::SecretNotGranted, message));
        };
        if !binding.grant.allows_host(host) {
            let hosts: Vec<String> = binding.grant.hosts.iter().map(HostPattern::to_string).collect();
            let message =
                format!("secret '{path}' may not be sent to host '{host}'; its grant allows only {}", hosts.join(", "));
            return Err(refuse(RefusalCode::HostNotAllowed, message));
        }
        if !secret_allows_host(binding.secret_allowed_hosts, host) {
            let message = format!(
                "secret '{path}' may not be sent to host '{host}'; the secret's allowed_hosts do not include it"
            );
            return Err(refuse(RefusalCode::HostNotAllowed, message));
        }
        if !placement_allowed(binding.grant, place) {
            let message = format!("secret '{path}' may not be placed in {place}; its grant does not allow that place");
            return Err(refuse(RefusalCode::PlacementNotAllowed, message));
        }
        let resolved = match placeholder.field() {
            None => Resolved::Whole(binding.value),
            Some(field) => Resolved::Field(json_field(binding.value.expose(), field).ok_or_else(|| {
                let message = format!(
                    "placeholder for secret '{path}' asks for field '{field}', but the secret is not a JSON object \
                     with a string field of that name"
                );
                refuse(RefusalCode::UnresolvedPlaceholder, message)
            })?),
        };
        let in_header = matches!(place, Place::Header(_) | Place::BasicAuth);
        if in_header && memchr::memchr3(b'\r', b'\n', b'\0', resolved.as_str().as_bytes()).is_some() {
            let message = format!("the value of secret '{path}' holds CR, LF or NUL and is never written into {place}");
            return Err(refuse(RefusalCode::UnsafeValue, message));
        }
        if !self.is_tls && !self.plain_http_allowed {
            let message = format!(
                "secret '{path}' would go to host '{host}' over plain http://; use https://, or name the http:// \
                 upstream in a route or inject rule on purpose"
            );
            return Err(refuse(RefusalCode::InsecureTransport, message));
        }
        Ok(resolved)
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
        let unsafe_uri = || refuse(RefusalCode::UnsafeValue, "the query string is not valid after substitution".into());
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
        refuse(RefusalCode::UnsafeValue, message)
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

fn secret_allows_host(allowed_hosts: &[String], host: &str) -> bool {
    allowed_hosts.is_empty()
        || allowed_hosts.iter().any(|pattern| HostPattern::parse(pattern).is_ok_and(|p| p.matches(host)))
}

fn placement_allowed(grant: &Grant, place: &Place) -> bool {
    match place {
        Place::Header(name) => {
            let name = name.as_str();
            grant.allows_header(name)
                && !FORBIDDEN_HEADERS.contains(&name)
                && !name.starts_with(FORBIDDEN_HEADER_PREFIX)
        }
        Place::BasicAuth => grant.allows_header(AUTHORIZATION.as_str()),
        Place::Query => grant.query,
        Place::Path => false,
    }
}

/// The string value of `field` in the JSON object `json`; `None` when `json` is not an
/// object, the field is missing, repeated or not a string. Other fields are skipped without
/// being copied, and serde errors (which may quote the input) are dropped unread.
pub fn json_field(json: &str, field: &str) -> Option<Zeroizing<String>> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let value = FieldOf(field).deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    value
}

struct FieldOf<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FieldOf<'_> {
    type Value = Option<Zeroizing<String>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldOf<'_> {
    type Value = Option<Zeroizing<String>>;

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
                found = map.next_value_seed(StringValue)?;
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

/// A string value straight into a zeroizing buffer; any other JSON value is `None`.
struct StringValue;

impl<'de> DeserializeSeed<'de> for StringValue {
    type Value = Option<Zeroizing<String>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringValue {
    type Value = Option<Zeroizing<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Some(Zeroizing::new(value.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(Some(Zeroizing::new(value)))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// The scanner's steps as plain data, for the fuzz targets in `fuzz/` (`crate::fuzzing`,
/// built with `--cfg fuzzing`) and this crate's tests; not part of the API otherwise.
#[cfg(any(fuzzing, test))]
pub mod fuzzing {
    use super::*;

    /// `percent_decode` with the offsets it records: one per decoded byte, and the end.
    pub fn percent_decode(raw: &[u8]) -> (Vec<u8>, Vec<usize>) {
        let mut offsets = Vec::new();
        let decoded = super::percent_decode(raw, Some(&mut offsets));
        (decoded.to_vec(), offsets)
    }

    pub fn has_raw_placeholder(bytes: &[u8]) -> bool {
        super::has_raw_placeholder(bytes)
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
                    let decoded = super::percent_decode(raw.as_bytes(), None);
                    if super::has_raw_placeholder(&decoded) {
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
        super::scan(head).map(|found| found.len()).map_err(|e| e.message)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::domain::policy::Policy;

    const POLICY: &str = r#"
[agent]
name = "agent-1"

[egress]
allow = ["api.openai.com", "*.example.com", "plain.example.org"]

[[grant]]
secrets = "prod/openai/*"
hosts = ["api.openai.com"]

[[grant]]
secrets = "prod/q/*"
hosts = ["api.openai.com", "*.example.com"]
query = true

[[grant]]
secrets = "prod/db/*"
hosts = ["db.example.com", "plain.example.org"]
headers = ["authorization", "x-api-key", "x-custom"]

[[grant]]
secrets = "prod/hdr/*"
hosts = ["api.openai.com"]
headers = ["x-api-key"]
"#;

    /// Secret values by path, with their `allowed_hosts`. Every value is distinctive, so a
    /// message containing one is easy to spot.
    const SECRETS: &[(&str, &str, &[&str])] = &[
        ("prod/openai/key", "sk-openai-1111", &[]),
        ("prod/openai/other", "sk-other-2222", &[]),
        ("prod/openai/scoped", "sk-scoped-3333", &["*.example.com"]),
        ("prod/openai/crlf", "sk-bad\r\nx-evil: 4444", &[]),
        ("prod/openai/ctl", "sk-ctl\u{1}5555", &[]),
        ("prod/q/token", "a&b c/é=6666", &[]),
        ("prod/q/lines", "line1\nline2-7777", &[]),
        ("prod/db/pass", "p@ss:w0rd-8888", &[]),
        ("prod/db/json", r#"{"user":"svc","password":"pw\"9999","port":5432}"#, &[]),
        ("prod/db/notjson", "not-json-0000", &[]),
        ("prod/hdr/key", "hdr-only-1212", &[]),
    ];

    struct Fixture {
        policy: Policy,
        values: HashMap<&'static str, (SecretValue, Vec<String>)>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let policy = Policy::parse("test.toml", POLICY).unwrap_or_else(|e| panic!("{e}"));
            let values = SECRETS
                .iter()
                .map(|(path, value, hosts)| {
                    (*path, (SecretValue::new((*value).to_owned()), hosts.iter().map(|h| (*h).to_owned()).collect()))
                })
                .collect();
            Fixture { policy, values }
        }

        fn binding(&self, placeholder: &Placeholder) -> Option<Binding<'_>> {
            let (value, hosts) = self.values.get(placeholder.path().as_str())?;
            let grant = self.policy.grant_for(placeholder.path())?;
            Some(Binding { value, grant, secret_allowed_hosts: hosts })
        }

        fn run(&self, head: &Parts, host: &str, is_tls: bool, plain_ok: bool) -> Result<Parts, Refusal> {
            let found = scan(head)?;
            inject(copy(head), &found, &[], host, is_tls, plain_ok, &|p| self.binding(p)).map(|(head, _)| head)
        }
    }

    /// A second head like `head` (`Parts` is not `Clone`: its extensions are not).
    fn copy(head: &Parts) -> Parts {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = head.method.clone();
        parts.uri = head.uri.clone();
        parts.version = head.version;
        parts.headers = head.headers.clone();
        parts
    }

    fn head(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().method("POST").uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn basic(credentials: &str) -> String {
        format!("Basic {}", STANDARD.encode(credentials))
    }

    #[test]
    fn the_fuzzing_view_reads_what_scan_reads() {
        let head = head(
            "/r/a/v1?k=%7B%7Bsecret:team/maps%7D%7D&x=%7b{secret:team/db%23password}}",
            &[
                ("authorization", &basic("user:{{secret:team/basic}}")),
                ("x-api-key", "key {{secret:team/key}} and {{secret:team/other}}"),
            ],
        );
        assert_eq!(fuzzing::scan(&head), Ok(5));
        let reads = fuzzing::reads(&head);
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
        assert_eq!(fuzzing::basic_credentials(b"basic  dXNlcg"), Some(("basic  ".into(), b"user".to_vec())));
        assert_eq!(fuzzing::percent_decode(b"a%41%g"), (b"aA%g".to_vec(), vec![0, 1, 4, 5, 6]));
    }

    enum Expect {
        /// This header has this value afterwards.
        Header(&'static str, String),
        /// The URI is this afterwards.
        Uri(&'static str),
        Refused(RefusalCode),
    }

    #[test]
    fn injection_table() {
        use Expect::*;
        use RefusalCode::*;
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
    fn secret_allowed_hosts() {
        let fixture = Fixture::new();
        let request = head("/", &[("authorization", "{{secret:prod/openai/scoped}}")]);
        // The grant allows only api.openai.com, the secret only *.example.com: no host is both.
        let refusal = fixture.run(&request, "api.openai.com", true, false).unwrap_err();
        assert_eq!(refusal.code, RefusalCode::HostNotAllowed);
        assert!(refusal.message.contains("allowed_hosts"), "{refusal}");

        let value = SecretValue::new("sk-scoped-3333".into());
        let grant = &fixture.policy.grants[0];
        let found = scan(&request).unwrap();
        let with_allowed = |allowed: &[&str]| {
            let allowed: Vec<String> = allowed.iter().map(|h| (*h).to_owned()).collect();
            let binding = |_: &Placeholder| Some(Binding { value: &value, grant, secret_allowed_hosts: &allowed });
            inject(copy(&request), &found, &[], "api.openai.com", true, false, &binding)
                .map(|(head, _)| head)
                .map_err(|r| r.code)
        };
        let injected = |out: Result<Parts, RefusalCode>| out.map(|p| p.headers["authorization"].clone());
        assert_eq!(injected(with_allowed(&["*.openai.com"])), Ok(HeaderValue::from_static("sk-scoped-3333")));
        assert_eq!(injected(with_allowed(&[])), Ok(HeaderValue::from_static("sk-scoped-3333")));
        assert_eq!(injected(with_allowed(&["api.other.com", "not a pattern"])), Err(RefusalCode::HostNotAllowed));
    }

    #[test]
    fn plain_http_needs_an_allowance() {
        let fixture = Fixture::new();
        let request = head("http://plain.example.org/", &[("x-api-key", "{{secret:prod/db/pass}}")]);
        let refusal = fixture.run(&request, "plain.example.org", false, false).unwrap_err();
        assert_eq!(refusal.code, RefusalCode::InsecureTransport);
        let out = fixture.run(&request, "plain.example.org", false, true).unwrap();
        assert_eq!(out.headers["x-api-key"], "p@ss:w0rd-8888");
        // Without any placeholder, plain http is none of this module's business.
        let plain = head("http://plain.example.org/", &[]);
        assert!(fixture.run(&plain, "plain.example.org", false, false).is_ok());
    }

    #[test]
    fn forbidden_headers_are_refused_even_when_a_grant_lists_them() {
        let fixture = Fixture::new();
        let mut grant = fixture.policy.grants[0].clone();
        grant.headers.extend(["cookie", "user-agent", "referer", "host", "x-forwarded-for"].map(str::to_owned));
        let value = SecretValue::new("sk-openai-1111".into());
        for header in ["cookie", "user-agent", "referer", "host", "x-forwarded-for"] {
            let request = head("/", &[(header, "{{secret:prod/openai/key}}")]);
            let found = scan(&request).unwrap();
            let refusal = inject(copy(&request), &found, &[], "api.openai.com", true, false, &|_| {
                Some(Binding { value: &value, grant: &grant, secret_allowed_hosts: &[] })
            })
            .unwrap_err();
            assert_eq!(refusal.code, RefusalCode::PlacementNotAllowed, "{header}");
            assert!(refusal.message.contains(header) && refusal.message.contains("prod/openai/key"), "{refusal}");
        }
    }

    #[test]
    fn refusals_never_contain_a_value() {
        let fixture = Fixture::new();
        let requests = [
            head("/", &[("authorization", "Bearer {{secret:prod/openai/crlf}}")]),
            head("/", &[("authorization", "{{secret:prod/openai/ctl}}")]),
            head("/", &[("x-custom", "{{secret:prod/openai/key}}")]),
            head("/", &[("x-api-key", "{{secret:prod/db/json#token}}")]),
            head("/", &[("x-api-key", "{{secret:prod/db/json#port}}")]),
            head("/?k={{secret:prod/db/pass}}", &[]),
            head("/", &[("authorization", &basic("u:{{secret:prod/openai/crlf}}"))]),
        ];
        for request in &requests {
            for (host, tls) in [("api.openai.com", true), ("db.example.com", true), ("db.example.com", false)] {
                let Err(refusal) = fixture.run(request, host, tls, false) else { continue };
                let shown = format!("{refusal} {refusal:?}");
                for (_, value, _) in SECRETS {
                    let fragments = [*value, "1111", "4444", "5555", "8888", "9999"];
                    for fragment in fragments.iter().filter(|f| value.contains(**f)) {
                        assert!(!shown.contains(fragment), "{shown}");
                    }
                }
            }
        }
    }

    #[test]
    fn nothing_unchecked_is_injected() {
        let fixture = Fixture::new();
        let request =
            head("/", &[("authorization", "{{secret:prod/openai/key}}"), ("cookie", "{{secret:prod/openai/key}}")]);
        // A caller that passes fewer finds than the head holds still gets every one checked.
        let refusal =
            inject(copy(&request), &[], &[], "api.openai.com", true, false, &|p| fixture.binding(p)).unwrap_err();
        assert_eq!(refusal.code, RefusalCode::PlacementNotAllowed);
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
