//! The binding check: this module owns deciding whether one placeholder's value may go where
//! the agent put it — the secret is granted to the agent, the upstream host is one of its
//! grant's hosts and inside the secret's own `allowed_hosts`, the place (header, Basic
//! credentials, query) is one the grant allows and never a forbidden header, a `#field`
//! resolves, the value holds nothing unsafe for that place, and the transport is TLS (or
//! plain http named on purpose). Every check says why in a `Refusal`, never with a value.

use http::header::AUTHORIZATION;
use zeroize::Zeroizing;

use super::json_field;
use super::{BoundValue, ErrorCode, Found, Place, Refusal, Template, refuse};
use crate::domain::SecretValue;
use crate::domain::policy::{Grant, HostPattern, Placeholder, header_may_carry_secret};

/// What one request's placeholders are checked against.
pub(super) struct Rules<'r, 'b> {
    pub(super) host: &'r str,
    pub(super) is_tls: bool,
    pub(super) plain_http_allowed: bool,
    pub(super) bindings: &'r dyn Fn(&Placeholder) -> Option<BoundValue<'b>>,
}

/// The text that replaces a placeholder: the whole value or one field of it.
pub(super) enum Resolved<'a> {
    Whole(&'a SecretValue),
    Field(Zeroizing<String>),
}

impl Resolved<'_> {
    pub(super) fn as_str(&self) -> &str {
        match self {
            Resolved::Whole(value) => value.expose(),
            Resolved::Field(text) => text,
        }
    }
}

impl<'b> Rules<'_, 'b> {
    /// Checks every found placeholder, then every template's; the first failure wins.
    pub(super) fn check_all(&self, found: &[Found], templates: &[Template<'_>]) -> Result<(), Refusal> {
        for found in found {
            self.check(&found.placeholder, &found.place)?;
        }
        for template in templates {
            let place = Place::Header(template.header.clone());
            for placeholder in template.placeholders {
                self.check(placeholder, &place)?;
            }
        }
        Ok(())
    }

    /// The checks of one placeholder, in order; the value to write when all pass. A refusal
    /// names the placeholder's secret, so the access event is recorded against it.
    pub(super) fn check(&self, placeholder: &Placeholder, place: &Place) -> Result<Resolved<'b>, Refusal> {
        self.check_one(placeholder, place).map_err(|r| r.about(placeholder.path().as_str()))
    }

    fn check_one(&self, placeholder: &Placeholder, place: &Place) -> Result<Resolved<'b>, Refusal> {
        let path = placeholder.path().as_str();
        let host = self.host;
        if *place == Place::Body {
            let message = format!(
                "a placeholder for secret '{path}' is in the request body outside a top-level field's whole value; \
                 secret values go in a body only as the whole value of a field the grant names in body_fields"
            );
            return Err(refuse(ErrorCode::PlacementNotAllowed, message));
        }
        if *place == Place::Path {
            let message = format!(
                "a placeholder for secret '{path}' is in the URL path; secret values may go only in headers, \
                 Basic credentials or the query string, where the agent's grant allows"
            );
            return Err(refuse(ErrorCode::PlacementNotAllowed, message));
        }
        let Some(binding) = (self.bindings)(placeholder) else {
            let message = format!("secret '{path}' is not granted to this agent (or does not exist)");
            return Err(refuse(ErrorCode::SecretNotGranted, message));
        };
        if !binding.grant.allows_host(host) {
            let hosts: Vec<String> = binding.grant.hosts().iter().map(HostPattern::to_string).collect();
            let message =
                format!("secret '{path}' may not be sent to host '{host}'; its grant allows only {}", hosts.join(", "));
            return Err(refuse(ErrorCode::HostNotAllowed, message));
        }
        if !secret_allows_host(binding.secret_allowed_hosts, host) {
            let message = format!(
                "secret '{path}' may not be sent to host '{host}'; the secret's allowed_hosts do not include it"
            );
            return Err(refuse(ErrorCode::HostNotAllowed, message));
        }
        if !placement_allowed(binding.grant, place) {
            let message = format!("secret '{path}' may not be placed in {place}; its grant does not allow that place");
            return Err(refuse(ErrorCode::PlacementNotAllowed, message));
        }
        let resolved = match placeholder.field() {
            None => Resolved::Whole(binding.value),
            Some(field) => Resolved::Field(json_field(binding.value.expose(), field).ok_or_else(|| {
                let message = format!(
                    "placeholder for secret '{path}' asks for field '{field}', but the secret is not a JSON object \
                     with a string field of that name"
                );
                refuse(ErrorCode::UnresolvedPlaceholder, message)
            })?),
        };
        let in_header = matches!(place, Place::Header(_) | Place::BasicAuth | Place::Signature);
        if in_header && memchr::memchr3(b'\r', b'\n', b'\0', resolved.as_str().as_bytes()).is_some() {
            let message = format!("the value of secret '{path}' holds CR, LF or NUL and is never written into {place}");
            return Err(refuse(ErrorCode::UnsafeValue, message));
        }
        if !self.is_tls && !self.plain_http_allowed {
            let message = format!(
                "secret '{path}' would go to host '{host}' over plain http://; use https://, or name the http:// \
                 upstream in a route or inject rule on purpose"
            );
            return Err(refuse(ErrorCode::InsecureTransport, message));
        }
        Ok(resolved)
    }
}

/// Whether a secret's own `allowed_hosts` (empty: any of its grant's) let it go to `host`.
pub fn secret_allows_host(allowed_hosts: &[String], host: &str) -> bool {
    allowed_hosts.is_empty()
        || allowed_hosts.iter().any(|pattern| HostPattern::parse(pattern).is_ok_and(|p| p.matches(host)))
}

/// Whether the grant lets a value go in `place`. A header that may never carry a secret is
/// refused whatever the grant says: the policy parser refuses it too; this is the second lock.
fn placement_allowed(grant: &Grant, place: &Place) -> bool {
    match place {
        Place::Header(name) => {
            let name = name.as_str();
            grant.allows_header(name) && header_may_carry_secret(name)
        }
        Place::BasicAuth => grant.allows_header(AUTHORIZATION.as_str()),
        Place::Query => grant.query(),
        Place::BodyField(name) => grant.allows_body_field(name),
        // A sign rule's secrets: its policy check found their grants list its host.
        Place::Signature => true,
        Place::Path | Place::Body => false,
    }
}

#[cfg(test)]
mod tests {
    use http::request::Parts;

    use super::super::fixture::{Fixture, SECRETS, basic, copy, head};
    use super::super::{BoundValue, ErrorCode, inject, scan};
    use crate::domain::SecretValue;
    use crate::domain::policy::Placeholder;
    use http::header::HeaderValue;

    #[test]
    fn secret_allowed_hosts() {
        let fixture = Fixture::new();
        let request = head("/", &[("authorization", "{{secret:prod/openai/scoped}}")]);
        // The grant allows only api.openai.com, the secret only *.example.com: no host is both.
        let refusal = fixture.run(&request, "api.openai.com", true, false).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::HostNotAllowed);
        assert!(refusal.message.contains("allowed_hosts"), "{refusal}");

        let value = SecretValue::new("sk-scoped-3333".into());
        let grant = &fixture.policy.grants()[0];
        let found = scan(&request).unwrap();
        let with_allowed = |allowed: &[&str]| {
            let allowed: Vec<String> = allowed.iter().map(|h| (*h).to_owned()).collect();
            let binding = |_: &Placeholder| Some(BoundValue { value: &value, grant, secret_allowed_hosts: &allowed });
            inject(copy(&request), &found, &[], "api.openai.com", true, false, &binding)
                .map(|(head, _)| head)
                .map_err(|r| r.code)
        };
        let injected = |out: Result<Parts, ErrorCode>| out.map(|p| p.headers["authorization"].clone());
        assert_eq!(injected(with_allowed(&["*.openai.com"])), Ok(HeaderValue::from_static("sk-scoped-3333")));
        assert_eq!(injected(with_allowed(&[])), Ok(HeaderValue::from_static("sk-scoped-3333")));
        assert_eq!(injected(with_allowed(&["api.other.com", "not a pattern"])), Err(ErrorCode::HostNotAllowed));
    }

    #[test]
    fn plain_http_needs_an_allowance() {
        let fixture = Fixture::new();
        let request = head("http://plain.example.org/", &[("x-api-key", "{{secret:prod/db/pass}}")]);
        let refusal = fixture.run(&request, "plain.example.org", false, false).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::InsecureTransport);
        let out = fixture.run(&request, "plain.example.org", false, true).unwrap();
        assert_eq!(out.headers["x-api-key"], "p@ss:w0rd-8888");
        // Without any placeholder, plain http is none of this module's business.
        let plain = head("http://plain.example.org/", &[]);
        assert!(fixture.run(&plain, "plain.example.org", false, false).is_ok());
    }

    #[test]
    fn forbidden_headers_are_refused_even_when_a_grant_lists_them() {
        let fixture = Fixture::new();
        let mut grant = fixture.policy.grants()[0].clone();
        grant.headers_mut().extend(["cookie", "user-agent", "referer", "host", "x-forwarded-for"].map(str::to_owned));
        let value = SecretValue::new("sk-openai-1111".into());
        for header in ["cookie", "user-agent", "referer", "host", "x-forwarded-for"] {
            let request = head("/", &[(header, "{{secret:prod/openai/key}}")]);
            let found = scan(&request).unwrap();
            let refusal = inject(copy(&request), &found, &[], "api.openai.com", true, false, &|_| {
                Some(BoundValue { value: &value, grant: &grant, secret_allowed_hosts: &[] })
            })
            .unwrap_err();
            assert_eq!(refusal.code, ErrorCode::PlacementNotAllowed, "{header}");
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
        assert_eq!(refusal.code, ErrorCode::PlacementNotAllowed);
    }
}
