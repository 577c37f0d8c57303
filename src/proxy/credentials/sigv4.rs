//! AWS SigV4 re-signing (`[[sign]]` rules of kind `aws-sigv4`): a request toward a host a
//! sign rule matches loses the agent's own signature material (`Authorization`,
//! `X-Amz-Date`, `X-Amz-Security-Token`, `X-Amz-Content-Sha256`) and is signed again, as it
//! will be sent upstream, with the rule's access key pair (and session token) read like any
//! granted value and bound-checked to the host (`substitute::bind_for_signing`). The agent
//! holds dummy keys; the real ones never reach it, and the access key id and token, which
//! go on the wire, are scrubbed from the response like any injected value.
//!
//! What is signed: `host`, `content-type`, `content-md5` and every `x-amz-*` header, the
//! query, and the payload's SHA-256, or `UNSIGNED-PAYLOAD` (and
//! `STREAMING-UNSIGNED-PAYLOAD-TRAILER`) when the agent sent that. Headers the proxy itself
//! changes on the way (`Accept-Encoding`, hop-by-hop headers, `User-Agent` untouched but
//! often rewritten by middleboxes) are left out of the signature, so nothing after this
//! step can break it. A body to hash is read whole, at most `SIGN_BODY_MAX` bytes; a longer
//! one is refused with `body_too_large` before anything is sent. Presigned URLs (signature
//! in the query) and signed streaming payloads (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, whose
//! chunk signatures chain from the agent's signature) are refused: they cannot be re-signed
//! without rewriting what the agent computed from its own key.
//!
//! The signing itself is `sign_head` (no I/O: the bench calls it); `sign` is the step the
//! pipeline runs, which fetches the values, reads the body and records the values used.

use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign as sigv4_sign,
};
use aws_sigv4::sign::v4;
use http::header::{self, HeaderValue};
use http::request::Parts;
use zeroize::Zeroizing;

use crate::domain::policy::{Placeholder, Sign};
use crate::proxy::Proxy;
use crate::proxy::body::{Body, full};
use crate::proxy::bounded::read_bounded;
use crate::proxy::central::HeldValue;
use crate::proxy::error::{ErrorCode, ProxyError};
use crate::proxy::local::ThreadCache;
use crate::proxy::request::{AccessKind, CarriedValue, Target};
use crate::proxy::substitute::central_error;
use crate::proxy::substitute::{self, BoundValue, Refusal};

/// The most of a request body the proxy reads whole to hash it for a signature: enough for
/// API calls and small objects; larger uploads go as `UNSIGNED-PAYLOAD` (which the agent's
/// SDK sends when told to) or multipart.
pub const SIGN_BODY_MAX: u64 = 8 * 1024 * 1024;

const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/// Query parameters of a presigned URL.
const PRESIGNED_PARAMS: [&str; 3] = ["x-amz-signature", "x-amz-credential", "x-amz-algorithm"];

/// The credentials a request is signed with, each in a zeroizing buffer.
pub struct Keys {
    pub access_key: Zeroizing<String>,
    pub secret_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
}

/// What the payload hash of the signature is.
pub enum Payload<'b> {
    /// The SHA-256 of these bytes (the whole body as sent).
    Bytes(&'b [u8]),
    /// `UNSIGNED-PAYLOAD`: the agent asked for it; the body passes unread.
    Unsigned,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: an aws-chunked body with an unsigned checksum trailer.
    StreamingUnsignedTrailer,
}

/// What the agent's own signature said, read before it is stripped (`strip`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AgentSignature {
    /// The region and service of its credential scope (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`).
    pub region: Option<String>,
    pub service: Option<String>,
    /// Its `X-Amz-Content-Sha256`, when it sent one.
    pub content_sha256: Option<String>,
}

/// Takes the agent's signature material off `head`, returning what it said; refuses a
/// presigned URL (its signature is in the query).
pub fn strip(head: &mut Parts) -> Result<AgentSignature, ProxyError> {
    if let Some(query) = head.uri.query() {
        let presigned = query
            .split('&')
            .filter_map(|pair| pair.split('=').next())
            .any(|name| PRESIGNED_PARAMS.iter().any(|p| name.eq_ignore_ascii_case(p)));
        if presigned {
            return Err(ProxyError::bad_request(
                "this is a presigned URL (X-Amz-Signature in the query) toward a host the proxy signs for; send the \
                 request unsigned or signed with any key, and the proxy signs it in headers",
            ));
        }
    }
    let mut agent = AgentSignature::default();
    if let Some(scope) = head.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(scope_of) {
        agent.region = Some(scope.0.to_owned());
        agent.service = Some(scope.1.to_owned());
    }
    agent.content_sha256 =
        head.headers.get(X_AMZ_CONTENT_SHA256).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_owned());
    for name in [header::AUTHORIZATION.as_str(), X_AMZ_DATE, X_AMZ_SECURITY_TOKEN, X_AMZ_CONTENT_SHA256] {
        head.headers.remove(name);
    }
    Ok(agent)
}

/// The region and service of a SigV4 `Authorization` value's credential scope.
fn scope_of(authorization: &str) -> Option<(&str, &str)> {
    let rest = authorization.strip_prefix("AWS4-HMAC-SHA256")?;
    let credential = rest.split(',').find_map(|part| part.trim().strip_prefix("Credential="))?;
    // AKID/DATE/REGION/SERVICE/aws4_request; the key id itself is not looked at.
    let mut parts = credential.rsplit('/');
    let (terminator, service, region) = (parts.next()?, parts.next()?, parts.next()?);
    let fits = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (terminator == "aws4_request" && fits(region) && fits(service)).then_some((region, service))
}

/// The service and region an AWS host names: `SERVICE.REGION.amazonaws.com`,
/// `SERVICE.amazonaws.com` (us-east-1), and S3's virtual hosts (`BUCKET.s3.REGION…`,
/// `BUCKET.s3-REGION…`, `BUCKET.s3.amazonaws.com`).
pub fn scope_of_host(host: &str) -> Option<(String, String)> {
    let host = host.to_ascii_lowercase();
    let name = host.strip_suffix(".amazonaws.com").or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let labels: Vec<&str> = name.split('.').collect();
    let is_region = |l: &str| l.contains('-') && l.bytes().any(|b| b.is_ascii_digit());
    if let Some(at) = labels.iter().rposition(|l| *l == "s3" || l.starts_with("s3-")) {
        let region = match labels[at].strip_prefix("s3-") {
            Some(region) if is_region(region) => region,
            _ => labels[at + 1..].iter().copied().find(|l| is_region(l)).unwrap_or("us-east-1"),
        };
        return Some(("s3".to_owned(), region.to_owned()));
    }
    match labels.as_slice() {
        [.., service, region] if is_region(region) => Some(((*service).to_owned(), (*region).to_owned())),
        [.., service] if !service.is_empty() => Some(((*service).to_owned(), "us-east-1".to_owned())),
        _ => None,
    }
}

/// Whether a header goes into the signature: what a service checks, and nothing the proxy
/// changes on the way.
fn signed_header(name: &str) -> bool {
    name == "content-type" || name == "content-md5" || name.starts_with("x-amz-")
}

/// Signs `head` for `uri` (the absolute upstream URI, as it will be sent): the signature
/// headers (`Authorization`, `X-Amz-Date`, the token and the payload hash) are added,
/// marked sensitive. `head` holds no signature material of the agent's (`strip`).
pub fn sign_head(
    head: &mut Parts,
    uri: &str,
    keys: &Keys,
    (region, service): (&str, &str),
    payload: Payload<'_>,
    now: SystemTime,
) -> Result<(), ProxyError> {
    let s3 = service.starts_with("s3");
    let mut settings = SigningSettings::default();
    if s3 {
        // S3 signs the path as sent, neither normalized nor encoded again.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let hash_header = s3 || !matches!(payload, Payload::Bytes(_));
    settings.payload_checksum_kind =
        if hash_header { PayloadChecksumKind::XAmzSha256 } else { PayloadChecksumKind::NoHeader };
    let mut headers = Vec::new();
    for (name, value) in &head.headers {
        if signed_header(name.as_str()) {
            let value = value.to_str().map_err(|_| {
                ProxyError::bad_request(format!("header '{name}' is not text, so the proxy cannot sign it"))
            })?;
            headers.push((name.as_str(), value));
        }
    }
    let body = match payload {
        Payload::Bytes(bytes) => SignableBody::Bytes(bytes),
        Payload::Unsigned => SignableBody::UnsignedPayload,
        Payload::StreamingUnsignedTrailer => SignableBody::StreamingUnsignedPayloadTrailer,
    };
    let identity = Credentials::new(
        keys.access_key.as_str(),
        keys.secret_key.as_str(),
        keys.session_token.as_ref().map(|t| t.to_string()),
        None,
        "airlock-sign-rule",
    )
    .into();
    let cannot = |what: &str| ProxyError::bad_request(format!("the proxy cannot sign this request: {what}"));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|_| cannot("the signing parameters are incomplete"))?
        .into();
    let signable = SignableRequest::new(head.method.as_str(), uri, headers.into_iter(), body)
        .map_err(|_| cannot("its URI or a header is not valid for SigV4"))?;
    // The crate's error can quote the request; it is not passed on.
    let (instructions, _signature) =
        sigv4_sign(signable, &params).map_err(|_| cannot("SigV4 signing failed"))?.into_parts();
    let (new_headers, _params) = instructions.into_parts();
    for h in new_headers {
        let mut value = HeaderValue::from_str(h.value()).map_err(|_| cannot("a signature header is not valid"))?;
        value.set_sensitive(true);
        head.headers.insert(h.name(), value);
    }
    Ok(())
}

/// The pipeline's signing step: for a request toward a host a `[[sign]]` rule matches, the
/// agent's signature is stripped, the rule's values fetched and bound-checked, the body read
/// (within `SIGN_BODY_MAX`) when its hash is signed, and the request signed as it will go
/// upstream; the values join `used` with kind `aws_sigv4` (recorded, scrubbed from the
/// response). Any other request passes untouched. `body` is `None` on the HTTP/1.1 fast
/// path, which hands requests toward sign hosts to hyper (`h1`), so meets one here only when
/// a policy update added its rule in between (refused: the body was not read).
pub(in crate::proxy) async fn sign(
    proxy: &Proxy,
    cache: &ThreadCache<'_>,
    head: &mut Parts,
    body: Option<Body>,
    target: &Target,
    used: &mut Arc<[CarriedValue]>,
) -> Result<Option<Body>, ProxyError> {
    let Some(rule) = cache.policy().sign_for(&target.host) else { return Ok(body) };
    let Some(body) = body else {
        // Only when a policy update added the rule between the fast path's look and this one.
        return Err(ProxyError::bad_request(
            "the agent's policy changed while this request was read, and it now has the proxy sign requests to \
             this host; send the request again",
        ));
    };
    let agent = strip(head)?;
    let (keys, fetched) = keys(proxy, cache, rule, target).await?;
    let scope = scope(rule, &agent, &target.host)?;
    let uri = target.uri_for(&head.uri)?.to_string();
    let now = SystemTime::now();
    let body = match agent.content_sha256.as_deref() {
        Some(UNSIGNED_PAYLOAD) => {
            sign_head(head, &uri, &keys, scope.pair(), Payload::Unsigned, now)?;
            body
        }
        Some(STREAMING_UNSIGNED_TRAILER) => {
            sign_head(head, &uri, &keys, scope.pair(), Payload::StreamingUnsignedTrailer, now)?;
            body
        }
        Some(streaming) if streaming.starts_with("STREAMING-") => {
            return Err(ProxyError::bad_request(
                "the request's payload is a signed stream (STREAMING-…-PAYLOAD), whose chunk signatures chain from \
                 the agent's own signature; toward a host the proxy signs for, send the payload whole or as \
                 UNSIGNED-PAYLOAD",
            ));
        }
        _ => {
            let declared = head
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > SIGN_BODY_MAX) {
                return Err(too_large());
            }
            let bytes = read_bounded(body, SIGN_BODY_MAX, too_large).await?;
            sign_head(head, &uri, &keys, scope.pair(), Payload::Bytes(&bytes), now)?;
            head.headers.remove(header::TRANSFER_ENCODING);
            head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            full(bytes)
        }
    };
    let mut all: Vec<CarriedValue> = used.iter().cloned().collect();
    for (placeholder, value) in rule.placeholders().zip(fetched) {
        let field = match placeholder.field() {
            None => None,
            Some(name) => substitute::json_field(value.value.expose(), name).map(|text| (name.to_owned(), text)),
        };
        let same = |u: &CarriedValue| {
            u.fetched.path == value.path && u.field.as_ref().map(|f| &f.0) == field.as_ref().map(|f| &f.0)
        };
        if !all.iter().any(same) {
            all.push(CarriedValue { fetched: value, field, kind: Some(AccessKind::AwsSigV4) });
        }
    }
    *used = all.into();
    Ok(Some(body))
}

/// The rule's values, each fetched through this thread's cache and bound-checked to the
/// target (`Place::Signature`), in `Sign::placeholders` order.
async fn keys(
    proxy: &Proxy,
    cache: &ThreadCache<'_>,
    rule: &Sign,
    target: &Target,
) -> Result<(Keys, Vec<Arc<HeldValue>>), ProxyError> {
    let mut fetched = Vec::new();
    let mut texts = Vec::new();
    for placeholder in rule.placeholders() {
        let path = placeholder.path();
        let Some(grant) = cache.policy().grant_for(path) else {
            return Err(Refusal {
                code: ErrorCode::SecretNotGranted,
                message: format!("secret '{path}' of the sign rule for '{}' is not granted", rule.host()),
                secret: Some(path.to_string()),
            }
            .into());
        };
        let value = cache.value(path, || proxy.central.value(path)).await.map_err(central_error)?;
        let bindings = |_: &Placeholder| {
            Some(BoundValue { value: &value.value, grant, secret_allowed_hosts: &value.allowed_hosts })
        };
        let text =
            substitute::bind_for_signing(placeholder, &target.host, target.tls, target.plain_http_allowed, &bindings)?;
        texts.push(text);
        fetched.push(value);
    }
    let mut texts = texts.into_iter();
    let (Some(access_key), Some(secret_key)) = (texts.next(), texts.next()) else {
        unreachable!("a sign rule has an access key and a secret key")
    };
    Ok((Keys { access_key, secret_key, session_token: texts.next() }, fetched))
}

/// The region and service a request is signed for.
struct Scope {
    region: String,
    service: String,
}

impl Scope {
    fn pair(&self) -> (&str, &str) {
        (&self.region, &self.service)
    }
}

/// The rule's region and service, else the agent's credential scope's, else the host's.
fn scope(rule: &Sign, agent: &AgentSignature, host: &str) -> Result<Scope, ProxyError> {
    let from_host = scope_of_host(host);
    let region = rule.region().map(str::to_owned).or_else(|| agent.region.clone());
    let service = rule.service().map(str::to_owned).or_else(|| agent.service.clone());
    let region = region.or_else(|| from_host.as_ref().map(|(_, region)| region.clone()));
    let service = service.or_else(|| from_host.map(|(service, _)| service));
    match (region, service) {
        (Some(region), Some(service)) => Ok(Scope { region, service }),
        _ => Err(ProxyError::bad_request(format!(
            "the proxy cannot tell which region and service to sign a request to '{host}' for: the sign rule names \
             none, the request carries no SigV4 credential scope, and the host is not an AWS one; set region and \
             service in the sign rule"
        ))),
    }
}

fn too_large() -> ProxyError {
    ProxyError::new(
        ErrorCode::BodyTooLarge,
        format!(
            "the request body is over {SIGN_BODY_MAX} bytes; the proxy reads a body whole to hash it for the SigV4 \
             signature it adds, and refuses longer ones (send x-amz-content-sha256: UNSIGNED-PAYLOAD, or upload in \
             parts)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_scope_is_read_from_the_agents_authorization() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                    SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
        assert_eq!(scope_of(auth), Some(("us-east-1", "iam")));
        assert_eq!(scope_of("Bearer x"), None);
        assert_eq!(scope_of("AWS4-HMAC-SHA256 Credential=a/b/c"), None);
        assert_eq!(scope_of("AWS4-HMAC-SHA256 Credential=/20150830/../s3/aws4_request"), None);
    }

    #[test]
    fn host_scopes() {
        let cases = [
            ("secretsmanager.eu-west-1.amazonaws.com", Some(("secretsmanager", "eu-west-1"))),
            ("sts.amazonaws.com", Some(("sts", "us-east-1"))),
            ("my-bucket.s3.eu-central-1.amazonaws.com", Some(("s3", "eu-central-1"))),
            ("my.bucket.s3.amazonaws.com", Some(("s3", "us-east-1"))),
            ("bucket.s3-us-west-2.amazonaws.com", Some(("s3", "us-west-2"))),
            ("s3.dualstack.ap-south-1.amazonaws.com", Some(("s3", "ap-south-1"))),
            ("example.com", None),
            ("amazonaws.com", None),
        ];
        for (host, want) in cases {
            let got = scope_of_host(host);
            assert_eq!(got.as_ref().map(|(s, r)| (s.as_str(), r.as_str())), want, "{host}");
        }
    }

    fn head(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().method("GET").uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn strip_takes_the_agents_signature_and_refuses_presigned_urls() {
        let mut h = head(
            "/bucket/key?list-type=2",
            &[
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIDUMMY/20250101/eu-west-1/s3/aws4_request, Signature=00",
                ),
                ("x-amz-date", "20250101T000000Z"),
                ("x-amz-security-token", "dummy-token"),
                ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
                ("x-amz-meta-colour", "blue"),
            ],
        );
        let agent = strip(&mut h).unwrap();
        assert_eq!(agent.region.as_deref(), Some("eu-west-1"));
        assert_eq!(agent.service.as_deref(), Some("s3"));
        assert_eq!(agent.content_sha256.as_deref(), Some("UNSIGNED-PAYLOAD"));
        let left: Vec<&str> = h.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-amz-meta-colour"]);
        let mut presigned = head("/bucket/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00", &[]);
        let e = strip(&mut presigned).unwrap_err();
        assert_eq!(e.code(), "invalid_request");
        assert!(e.message.contains("presigned"), "{}", e.message);
    }

    /// AWS's published example (sig-v4-test-suite "get-vanilla"): the same keys, time and
    /// request give the same signature.
    #[test]
    fn signs_like_the_aws_test_suite() {
        let keys = Keys {
            access_key: Zeroizing::new("AKIDEXAMPLE".into()),
            secret_key: Zeroizing::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            session_token: None,
        };
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160); // 20150830T123600Z
        let mut h = head("/", &[]);
        sign_head(&mut h, "https://example.amazonaws.com/", &keys, ("us-east-1", "service"), Payload::Bytes(b""), now)
            .unwrap();
        assert_eq!(h.headers["x-amz-date"], "20150830T123600Z");
        assert_eq!(
            h.headers["authorization"],
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert!(h.headers["authorization"].is_sensitive());
    }

    #[test]
    fn s3_signs_the_payload_hash_header_and_a_session_token() {
        let keys = Keys {
            access_key: Zeroizing::new("AKIDREAL".into()),
            secret_key: Zeroizing::new("real-secret".into()),
            session_token: Some(Zeroizing::new("real-token".into())),
        };
        let mut h = head("/bucket/a%20key", &[("content-type", "text/plain"), ("accept-encoding", "identity")]);
        sign_head(
            &mut h,
            "http://127.0.0.1:9000/bucket/a%20key",
            &keys,
            ("us-east-1", "s3"),
            Payload::Unsigned,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(h.headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        assert_eq!(h.headers["x-amz-security-token"], "real-token");
        let auth = h.headers["authorization"].to_str().unwrap();
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"),
            "{auth}"
        );
    }
}
