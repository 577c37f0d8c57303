//! Micro benchmark of the proxy's per-request substitution work: `scan` + `inject` on a
//! typical head with one Bearer placeholder, the `has_placeholder_text` quick skip on a head
//! without one, and `Redactor::push` over a 16 KiB response chunk. Plain `fn main` with
//! `Instant` (no criterion): `cargo bench --bench substitute`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use airlock::domain::SecretValue;
use airlock::domain::policy::Policy;
use airlock::proxy::redact::Redactor;
use airlock::proxy::substitute::{Binding, has_placeholder_text, inject, scan};

const ITERATIONS: u32 = 200_000;
const WARM_UP: u32 = 20_000;

const POLICY: &str = r#"
[agent]
name = "bench-agent"

[egress]
allow = ["api.openai.com"]

[[grant]]
secrets = "production/openai/*"
hosts = ["api.openai.com"]
"#;

/// Runs `work` `WARM_UP` times, then `iterations` times, and prints the mean time per run.
fn time(name: &str, iterations: u32, mut work: impl FnMut()) -> Duration {
    for _ in 0..WARM_UP {
        work();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        work();
    }
    let per_iteration = start.elapsed() / iterations;
    println!("{name:<48} {:>9.1} ns/iter", per_iteration.as_secs_f64() * 1e9);
    per_iteration
}

/// Like `time`, for work that consumes its input: inputs are made in batches of `BATCH`
/// outside the timed part.
fn time_consuming<I>(name: &str, iterations: u32, make: impl Fn() -> I, mut work: impl FnMut(I)) -> Duration {
    const BATCH: u32 = 1_000;
    let mut run = |n: u32| {
        let mut elapsed = Duration::ZERO;
        for _ in 0..n / BATCH {
            let inputs: Vec<I> = (0..BATCH).map(|_| make()).collect();
            let start = Instant::now();
            for input in inputs {
                work(input);
            }
            elapsed += start.elapsed();
        }
        elapsed
    };
    run(WARM_UP);
    let per_iteration = run(iterations) / iterations;
    println!("{name:<48} {:>9.1} ns/iter", per_iteration.as_secs_f64() * 1e9);
    per_iteration
}

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

fn main() {
    let policy = Policy::parse("bench.toml", POLICY).expect("the bench policy parses");
    let grant = &policy.grants[0];
    let value = SecretValue::new(format!("sk-proj-{}", "x".repeat(156)));
    let bindings =
        |_: &airlock::domain::policy::Placeholder| Some(Binding { value: &value, grant, secret_allowed_hosts: &[] });

    // The head is the proxy's own by then (it parsed it); inject writes into it in place.
    let with_placeholder = || head("Bearer {{secret:production/openai/api-key}}");
    let injected = time_consuming("scan + inject (one Bearer placeholder)", ITERATIONS, with_placeholder, |head| {
        let head = black_box(head);
        let found = scan(&head).expect("scan");
        let out = inject(head, &found, &[], "api.openai.com", true, false, &bindings).expect("inject");
        black_box(out);
    });

    let without = head("Bearer agent-own-token-0123456789abcdef");
    let without_placeholder = || head("Bearer agent-own-token-0123456789abcdef");
    time_consuming("scan + inject (no placeholder)", ITERATIONS, without_placeholder, |head| {
        let head = black_box(head);
        let found = scan(&head).expect("scan");
        black_box(inject(head, &found, &[], "api.openai.com", true, false, &bindings).expect("inject"));
    });

    time("has_placeholder_text over a head without one", ITERATIONS, || {
        let head = black_box(&without);
        let any = has_placeholder_text(head.uri.path().as_bytes())
            || head.uri.query().is_some_and(|q| has_placeholder_text(q.as_bytes()))
            || head.headers.values().any(|v| has_placeholder_text(v.as_bytes()));
        black_box(any);
    });

    let line: &[u8] = b"data: {\"delta\":\"lorem ipsum dolor sit amet\"}\n\n";
    let chunk: Vec<u8> = line.iter().copied().cycle().take(16 * 1024).collect();
    let mut redactor = Redactor::new(&[(value.expose().as_bytes(), "{{secret:production/openai/api-key}}")])
        .expect("a non-empty value");
    let push = time("Redactor::push over a 16 KiB chunk (no match)", ITERATIONS / 10, || {
        black_box(redactor.push(black_box(&chunk)));
    });
    black_box(redactor.finish());
    println!(
        "{:<48} {:>9.2} GiB/s",
        "  redaction throughput",
        chunk.len() as f64 / push.as_secs_f64() / (1u64 << 30) as f64
    );
    black_box(injected);
}
