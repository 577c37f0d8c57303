//! The shared test fixture of this module's tests: a policy with a grant per kind of
//! placement, distinctive secret values, and helpers to build heads and run scan + inject.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::request::Parts;

use super::{BoundValue, Refusal, inject, scan};
use crate::domain::SecretValue;
use crate::domain::policy::{Placeholder, Policy};

pub(super) const POLICY: &str = r#"
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
pub(super) const SECRETS: &[(&str, &str, &[&str])] = &[
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

pub(super) struct Fixture {
    pub(super) policy: Policy,
    values: HashMap<&'static str, (SecretValue, Vec<String>)>,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        let policy = Policy::parse("test.toml", POLICY).unwrap_or_else(|e| panic!("{e}"));
        let values = SECRETS
            .iter()
            .map(|(path, value, hosts)| {
                (*path, (SecretValue::new((*value).to_owned()), hosts.iter().map(|h| (*h).to_owned()).collect()))
            })
            .collect();
        Fixture { policy, values }
    }

    pub(super) fn binding(&self, placeholder: &Placeholder) -> Option<BoundValue<'_>> {
        let (value, hosts) = self.values.get(placeholder.path().as_str())?;
        let grant = self.policy.grant_for(placeholder.path())?;
        Some(BoundValue { value, grant, secret_allowed_hosts: hosts })
    }

    pub(super) fn run(&self, head: &Parts, host: &str, is_tls: bool, plain_ok: bool) -> Result<Parts, Refusal> {
        let found = scan(head)?;
        inject(copy(head), &found, &[], host, is_tls, plain_ok, &|p| self.binding(p)).map(|(head, _)| head)
    }
}

/// A second head like `head` (`Parts` is not `Clone`: its extensions are not).
pub(super) fn copy(head: &Parts) -> Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = head.method.clone();
    parts.uri = head.uri.clone();
    parts.version = head.version;
    parts.headers = head.headers.clone();
    parts
}

pub(super) fn head(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().method("POST").uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

pub(super) fn basic(credentials: &str) -> String {
    format!("Basic {}", STANDARD.encode(credentials))
}
