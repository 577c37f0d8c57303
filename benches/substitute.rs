//! Criterion benchmark of the proxy's per-request substitution work: `scan` + `inject` on a
//! typical head (three headers) with one Bearer placeholder (target: under 2 µs), the same
//! without a placeholder, the `has_placeholder_text` quick skip, and `Redactor::push` over a
//! 16 KiB response chunk, and SigV4 re-signing (`credentials::sigv4`: strip the agent's
//! signature, sign again) next to the header injection, so its cost over an injection shows:
//! `cargo bench --bench substitute` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use airlock::domain::SecretValue;
use airlock::domain::policy::Policy;
use airlock::proxy::credentials::sigv4::{self, Keys, Payload};
use airlock::proxy::redact::Redactor;
use airlock::proxy::substitute::{BoundValue, has_placeholder_text, inject, scan};

const POLICY: &str = r#"
[agent]
name = "bench-agent"

[egress]
allow = ["api.openai.com"]

[[grant]]
secrets = "production/openai/*"
hosts = ["api.openai.com"]
"#;

fn head(authorization: &str) -> http::request::Parts {
    let request = http::Request::builder()
        .method("POST")
        .uri("https://api.openai.com/v1/chat/completions")
        .header("host", "api.openai.com")
        .header("user-agent", "python-requests/2.32.3")
        .header("authorization", authorization)
        .body(())
        .expect("a valid request");
    request.into_parts().0
}

fn substitution(c: &mut Criterion) {
    let policy = Policy::parse("bench.toml", POLICY).expect("the bench policy parses");
    let grant = &policy.grants()[0];
    let value = SecretValue::new(format!("sk-proj-{}", "x".repeat(156)));
    let bindings =
        |_: &airlock::domain::policy::Placeholder| Some(BoundValue { value: &value, grant, secret_allowed_hosts: &[] });

    // The head is the proxy's own by then (it parsed it); inject writes into it in place, so
    // each iteration gets a fresh one, made outside the timed part.
    for (name, authorization) in [
        ("scan + inject (one Bearer placeholder)", "Bearer {{secret:production/openai/api-key}}"),
        ("scan + inject (no placeholder)", "Bearer agent-own-token-0123456789abcdef"),
    ] {
        c.bench_function(name, |b| {
            b.iter_batched(
                || head(authorization),
                |head| {
                    let found = scan(&head).expect("scan");
                    inject(head, &found, &[], "api.openai.com", true, false, &bindings).expect("inject")
                },
                BatchSize::SmallInput,
            )
        });
    }
    // SigV4 re-signing of a Secrets Manager call (a 1 KiB JSON body, hashed) and of an S3 GET:
    // the agent's signature stripped, the request signed again with the real keys.
    let keys = Keys {
        access_key: "AKIAIOSFODNN7EXAMPLE".to_owned().into(),
        secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned().into(),
        session_token: None,
    };
    let body = vec![b' '; 1024];
    let aws_head = |uri: &str, target: Option<&str>| {
        let mut request = http::Request::builder()
            .method(if target.is_some() { "POST" } else { "GET" })
            .uri(uri)
            .header("host", "127.0.0.1")
            .header("user-agent", "Boto3/1.43.11 md/Botocore#1.43.11 ua/2.1 os/linux#6.8 lang/python#3.12.3")
            .header("x-amz-date", "20260101T000000Z")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDUMMY/20260101/us-east-1/secretsmanager/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=00",
            );
        if let Some(target) = target {
            request = request.header("content-type", "application/x-amz-json-1.1").header("x-amz-target", target);
        }
        request.body(()).expect("a valid request").into_parts().0
    };
    for (name, uri, target, payload) in [
        (
            "SigV4 re-sign (Secrets Manager POST, 1 KiB body hashed)",
            "https://secretsmanager.us-east-1.amazonaws.com/",
            Some("secretsmanager.GetSecretValue"),
            &body[..],
        ),
        ("SigV4 re-sign (S3 GET, empty body)", "https://s3.us-east-1.amazonaws.com/bucket/key.txt", None, &[][..]),
    ] {
        let service = if target.is_some() { "secretsmanager" } else { "s3" };
        c.bench_function(name, |b| {
            b.iter_batched(
                || aws_head(uri, target),
                |mut head| {
                    sigv4::strip(&mut head).expect("strip");
                    let now = std::time::SystemTime::now();
                    sigv4::sign_head(&mut head, uri, &keys, ("us-east-1", service), Payload::Bytes(payload), now)
                        .expect("sign");
                    head
                },
                BatchSize::SmallInput,
            )
        });
    }

    let without = head("Bearer agent-own-token-0123456789abcdef");
    c.bench_function("has_placeholder_text over a head without one", |b| {
        b.iter(|| {
            let head = black_box(&without);
            has_placeholder_text(head.uri.path().as_bytes())
                || head.uri.query().is_some_and(|q| has_placeholder_text(q.as_bytes()))
                || head.headers.values().any(|v| has_placeholder_text(v.as_bytes()))
        })
    });

    let line: &[u8] = b"data: {\"delta\":\"lorem ipsum dolor sit amet\"}\n\n";
    let chunk: Vec<u8> = line.iter().copied().cycle().take(16 * 1024).collect();
    let mut redactor = Redactor::new(&[(value.expose().as_bytes(), "{{secret:production/openai/api-key}}")])
        .expect("a non-empty value");
    let mut group = c.benchmark_group("redaction");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("Redactor::push over a 16 KiB chunk (no match)", |b| {
        b.iter(|| redactor.push(black_box(&chunk)))
    });
    group.finish();
}

criterion_group!(benches, substitution);
criterion_main!(benches);
