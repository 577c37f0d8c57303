//! Tests of whole policy files and sets: parsing the example policies, defaults, errors
//! that point at the offending line, grant lookups, overlapping grants, and serialization.

use super::raw::DEFAULT_TOKEN_TTL;
use super::*;

const RESEARCH: &str = include_str!("../../../policies/research-agent.toml");
const PAYMENTS: &str = include_str!("../../../policies/payments-agent.toml");

/// The start of a valid policy that cases extend.
const HEAD: &str = r#"[agent]
name = "agent-1"

[egress]
allow = ["api.openai.com", "*.github.com"]
"#;

fn parse(text: &str) -> Policy {
    Policy::parse("test.toml", text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn path(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

fn glob(s: &str) -> PathGlob {
    PathGlob::parse(s).unwrap()
}

/// The 1-based line of `text` holding the `# here` marker.
fn marked_line(text: &str) -> usize {
    text.lines().position(|line| line.contains("# here")).expect("case has a '# here' marker") + 1
}

#[test]
fn example_policies_parse() {
    let research = parse(RESEARCH);
    assert_eq!((research.agent.name.as_str(), research.agent.tenant.as_str()), ("research-agent", "default"));
    assert_eq!(research.agent.token_ttl, Duration::from_secs(900));
    assert_eq!(research.egress.rate.unwrap().to_string(), "600/min");
    assert_eq!(research.egress.per_host_rate["api.openai.com"].to_string(), "120/min");
    assert_eq!(research.grants.len(), 2);
    assert_eq!(research.injects[0].header, "authorization");
    assert_eq!(research.injects[0].placeholders[0].path().as_str(), "production/openai/api-key");
    let routes: Vec<String> = research.routes.iter().map(|r| format!("{}={}", r.name, r.upstream)).collect();
    assert_eq!(routes, ["openai=https://api.openai.com/v1", "github=https://api.github.com"]);
    assert!(research.host_allowed("raw.githubusercontent.com") && !research.host_allowed("evil.com"));

    let payments = parse(PAYMENTS);
    assert_eq!(payments.agent.token_ttl, Duration::from_secs(300));
    let grant = payments.grant_for(&path("production/stripe/secret-key")).expect("stripe grant");
    assert!(grant.approval && grant.allows_host("api.stripe.com") && !grant.query);
    assert!(payments.allows_ip("127.0.0.1".parse().unwrap()));
    assert!(payments.allows_ip("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!payments.allows_ip("10.0.0.1".parse().unwrap()));
    assert_eq!(payments.routes[0].upstream.port, 443);
}

#[test]
fn defaults_apply() {
    let policy = parse(&format!("{HEAD}\n[[grant]]\nsecrets = \"a/*\"\nhosts = [\"api.openai.com\"]\n"));
    assert_eq!(policy.agent.tenant, "default");
    assert_eq!(policy.agent.token_ttl, DEFAULT_TOKEN_TTL);
    assert!(policy.allows_ip("203.0.113.9".parse().unwrap()));
    assert!(policy.egress.deny_private_networks && policy.egress.rate.is_none());
    let grant = &policy.grants[0];
    assert_eq!(grant.headers, ["authorization", "x-api-key"]);
    assert!(!grant.approval && !grant.query);
    assert!(grant.body_fields.is_empty() && !policy.has_body_fields());
    assert_eq!(policy.source, "test.toml");
}

#[test]
fn invalid_policies_point_at_the_offending_line() {
    let grant = |body: &str| format!("{HEAD}\n[[grant]]\n{body}\n");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "typo'd key",
            grant("secrets = \"a/*\"\nhostz = [\"api.openai.com\"] # here"),
            "unknown field `hostz`, expected one of",
        ),
        ("unknown table", format!("{HEAD}\n[egres] # here\nallow = []\n"), "unknown field `egres`"),
        ("wrong type", format!("{HEAD}deny_private_networks = \"yes\" # here\n"), "invalid type"),
        ("missing agent name", "[agent] # here\ntenant = \"t\"\n".into(), "missing field `name`"),
        ("bad agent name", "[agent]\nname = \"a b\" # here\n".into(), "'a b' is not a name"),
        ("bad glob", grant("secrets = \"a/**/b\" # here\nhosts = [\"api.openai.com\"]"), "'**' may only be"),
        (
            "forbidden header",
            grant(
                "secrets = \"a/*\"\nhosts = [\"api.openai.com\"]\nheaders = [\"authorization\",\n  \"Cookie\", # here\n]",
            ),
            "header 'cookie' may never carry a secret",
        ),
        (
            "x-forwarded header",
            grant("secrets = \"a/*\"\nhosts = [\"api.openai.com\"]\nheaders = [\"X-Forwarded-For\"] # here"),
            "header 'x-forwarded-for' may never carry a secret",
        ),
        (
            "bad body field",
            grant(
                "secrets = \"a/*\"\nhosts = [\"api.openai.com\"]\nbody_fields = [\"client_secret\",\n  \"a b\", # here\n]",
            ),
            "grant body_fields: 'a b' is not a body field name",
        ),
        (
            "empty body field",
            grant("secrets = \"a/*\"\nhosts = [\"api.openai.com\"]\nbody_fields = [\"\"] # here"),
            "is not a body field name",
        ),
        (
            "header not a token",
            grant("secrets = \"a/*\"\nhosts = [\"api.openai.com\"]\nheaders = [\"x api\"] # here"),
            "'x api' is not a header name",
        ),
        (
            "grant host not in allow",
            grant("secrets = \"a/*\"\nhosts = [\n  \"api.openai.com\",\n  \"api.stripe.com\", # here\n]"),
            "grant host 'api.stripe.com' is not in egress.allow",
        ),
        (
            "grant wildcard wider than allow",
            grant("secrets = \"a/*\"\nhosts = [\"*.openai.com\"] # here"),
            "grant host '*.openai.com' is not in egress.allow",
        ),
        ("empty grant hosts", grant("secrets = \"a/*\"\nhosts = [] # here"), "grant hosts is empty"),
        ("bad host pattern", grant("secrets = \"a/*\"\nhosts = [\"api_openai.com\"] # here"), "not a host pattern"),
        ("bad duration", "[agent]\nname = \"a\"\ntoken_ttl = \"2d\" # here\n".into(), "token_ttl '2d': use a number"),
        ("too long duration", "[agent]\nname = \"a\"\ntoken_ttl = \"25h\" # here\n".into(), "at most 24h"),
        ("zero duration", "[agent]\nname = \"a\"\ntoken_ttl = \"0s\" # here\n".into(), "at least 1s"),
        ("bad cidr", "[agent]\nname = \"a\"\nallowed_ips = [\"10.0.0.0/33\"] # here\n".into(), "not a network"),
        ("bad rate", format!("{HEAD}rate = \"600/day\" # here\n"), "egress.rate: '600/day' is not a rate"),
        (
            "bad per-host rate",
            format!("{HEAD}per_host_rate = {{ \"api.openai.com\" = \"0/s\" }} # here\n"),
            "must allow at least 1 event",
        ),
        (
            "per-host rate for a pattern",
            format!("{HEAD}per_host_rate = {{ \"*.github.com\" = \"1/s\" }} # here\n"),
            "keys are exact hosts",
        ),
        (
            "per-host rate for an unreachable host",
            format!("{HEAD}per_host_rate = {{ \"evil.com\" = \"1/s\" }} # here\n"),
            "host 'evil.com' is not in egress.allow",
        ),
        (
            "passthrough outside allow",
            format!("{HEAD}passthrough = [\"pinned.example.com\"] # here\n"),
            "passthrough host 'pinned.example.com' is not in egress.allow",
        ),
        (
            "inject without grant",
            format!(
                "{HEAD}\n[[inject]]\nhost = \"api.openai.com\"\nheader = \"authorization\"\n\
                 value = \"Bearer {{{{secret:production/openai/key}}}}\" # here\n"
            ),
            "inject uses secret 'production/openai/key' but no grant covers it",
        ),
        (
            "inject to a host its grant does not list",
            format!(
                "{HEAD}\n[[grant]]\nsecrets = \"p/*\"\nhosts = [\"api.openai.com\"]\n\n[[inject]]\n\
                 host = \"api.github.com\"\nheader = \"authorization\"\nvalue = \"{{{{secret:p/k}}}}\" # here\n"
            ),
            "does not list that host",
        ),
        (
            "inject in a header its grant does not allow",
            format!(
                "{HEAD}\n[[grant]]\nsecrets = \"p/*\"\nhosts = [\"api.openai.com\"]\nheaders = [\"x-api-key\"]\n\n\
                 [[inject]]\nhost = \"api.openai.com\"\nheader = \"Authorization\"\nvalue = \"{{{{secret:p/k}}}}\" # here\n"
            ),
            "allows only: x-api-key",
        ),
        (
            "inject without placeholder",
            format!("{HEAD}\n[[inject]]\nhost = \"api.openai.com\"\nheader = \"a\"\nvalue = \"Bearer x\" # here\n"),
            "has no placeholder",
        ),
        (
            "inject with unterminated placeholder",
            format!(
                "{HEAD}\n[[inject]]\nhost = \"api.openai.com\"\nheader = \"a\"\nvalue = \"{{{{secret:p/k\" # here\n"
            ),
            "no closing",
        ),
        (
            "duplicate route",
            format!(
                "{HEAD}\n[[route]]\nname = \"r\"\nupstream = \"https://api.openai.com\"\n\n\
                 [[route]]\nname = \"r\" # here\nupstream = \"https://api.openai.com\"\n"
            ),
            "route name 'r' is used twice",
        ),
        (
            "bad route name",
            format!("{HEAD}\n[[route]]\nname = \"OpenAI\" # here\nupstream = \"https://api.openai.com\"\n"),
            "not a route name",
        ),
        (
            "upstream with query",
            format!("{HEAD}\n[[route]]\nname = \"o\"\nupstream = \"https://api.openai.com/v1?x=1\" # here\n"),
            "may not have a query",
        ),
        (
            "upstream outside allow",
            format!("{HEAD}\n[[route]]\nname = \"o\"\nupstream = \"https://evil.com\" # here\n"),
            "route upstream host 'evil.com' is not in egress.allow",
        ),
    ];
    for (name, text, needle) in cases {
        let err = Policy::parse("bad.toml", &text).err().unwrap_or_else(|| panic!("{name}: parsed\n{text}"));
        assert_eq!(err.file, "bad.toml", "{name}");
        assert!(err.message.contains(needle), "{name}: {err}");
        assert_eq!(err.line, marked_line(&text), "{name}: {err}\n{text}");
        assert!(err.to_string().starts_with(&format!("bad.toml:{}: ", err.line)), "{name}");
    }
}

#[test]
fn grant_lookups_pick_the_most_specific_grant_in_any_order() {
    let narrow = "[[grant]]\nsecrets = \"prod/openai/*\"\nhosts = [\"api.openai.com\", \"*.github.com\"]\n";
    let broad = "[[grant]]\nsecrets = \"prod/**\"\nhosts = [\"*.github.com\", \"api.openai.com\"]\n";
    let middle = "[[grant]]\nsecrets = \"prod/*/key\"\nhosts = [\"api.openai.com\", \"*.github.com\"]\n";
    let orders = [[narrow, broad, middle], [broad, middle, narrow], [middle, narrow, broad], [broad, narrow, middle]];
    for order in orders {
        let policy = parse(&format!("{HEAD}\n{}\n{}\n{}", order[0], order[1], order[2]));
        let first = |g: Option<&Grant>| g.map(|g| g.secrets.to_string());
        assert_eq!(first(policy.grant_for(&path("prod/openai/key"))).as_deref(), Some("prod/*/key"));
        assert_eq!(first(policy.grant_for(&path("prod/openai/other"))).as_deref(), Some("prod/openai/*"));
        assert_eq!(first(policy.grant_for(&path("prod/github/x/y"))).as_deref(), Some("prod/**"));
        assert_eq!(first(policy.grant_for(&path("dev/x"))), None);
        assert_eq!(first(policy.grant_covering(&glob("prod/openai/key"))).as_deref(), Some("prod/*/key"));
        assert_eq!(first(policy.grant_covering(&glob("prod/openai/*"))).as_deref(), Some("prod/openai/*"));
        assert_eq!(first(policy.grant_covering(&glob("prod/*/*"))).as_deref(), Some("prod/**"));
        assert_eq!(first(policy.grant_covering(&glob("**"))), None);
    }
}

/// Issue 17 item 9: a broad grant listed before (or after) a narrow one that overlaps it
/// and disagrees is refused at load, in either order, naming both grants with their lines;
/// grants that overlap and agree, or that are disjoint, load.
#[test]
fn overlapping_grants_that_disagree_are_refused_in_either_order() {
    let head = "[agent]\nname = \"a\"\n\n[egress]\nallow = [\"api.stripe.com\", \"api.openai.com\"]\n";
    let grant = |secrets: &str, rest: &str| {
        format!("\n[[grant]]\nsecrets = \"{secrets}\"\nhosts = [\"api.stripe.com\"]\n{rest}")
    };
    let refused: Vec<(&str, String, String, &str)> = vec![
        ("approval", grant("production/**", ""), grant("production/stripe/*", "approval = true\n"), "approval"),
        (
            "hosts",
            grant("production/**", ""),
            "\n[[grant]]\nsecrets = \"production/stripe/*\"\nhosts = [\"api.stripe.com\", \"api.openai.com\"]\n"
                .to_owned(),
            "hosts",
        ),
        ("headers", grant("**", ""), grant("production/stripe/key", "headers = [\"x-api-key\"]\n"), "headers"),
        ("query", grant("*/stripe/*", ""), grant("production/*/*", "query = true\n"), "query"),
        (
            "body fields",
            grant("production/**", ""),
            grant("production/stripe/*", "body_fields = [\"client_secret\"]\n"),
            "body_fields",
        ),
        (
            "several",
            grant("production/*/key", "approval = true\n"),
            grant("production/stripe/*", "query = true\n"),
            "approval, query",
        ),
    ];
    for (name, a, b, what) in refused {
        for (first, second) in [(&a, &b), (&b, &a)] {
            let text = format!("{head}{first}{second}");
            let err = Policy::parse("research.toml", &text).err().unwrap_or_else(|| panic!("{name}: loaded\n{text}"));
            let line = |grant: &str| {
                let secrets = grant.lines().find(|l| l.starts_with("secrets")).unwrap();
                text.lines().position(|l| l == secrets).unwrap() + 1
            };
            let glob = |grant: &str| grant.split('"').nth(1).unwrap().to_owned();
            assert_eq!(err.line, line(second), "{name}: the later grant is the error");
            assert_eq!(
                err.to_string(),
                format!(
                    "research.toml:{}: grant '{}' overlaps grant '{}' (line {}) but differs in {what}; \
                     make them agree or make their secrets disjoint",
                    err.line,
                    glob(second),
                    glob(first),
                    line(first),
                ),
                "{name}"
            );
        }
    }

    let loaded = [
        ("agreeing", grant("production/**", "approval = true\n"), grant("production/stripe/*", "approval = true\n")),
        ("disjoint", grant("production/openai/*", ""), grant("production/stripe/*", "approval = true\n")),
        ("one longer", grant("production/*", ""), grant("production/stripe/*", "approval = true\n")),
        (
            "same hosts another way",
            grant("a/**", ""),
            grant("a/b", "").replace("[\"api.stripe.com\"]", "[\"API.Stripe.com\", \"api.stripe.com\"]"),
        ),
    ];
    for (name, a, b) in loaded {
        for (first, second) in [(&a, &b), (&b, &a)] {
            let text = format!("{head}{first}{second}");
            assert!(Policy::parse("research.toml", &text).is_ok(), "{name}: refused\n{text}");
        }
    }
}

#[test]
fn policy_serializes_for_the_api() {
    let json = serde_json::to_value(parse(RESEARCH)).unwrap();
    assert_eq!(json["agent"]["token_ttl_seconds"], 900);
    assert_eq!(json["agent"]["allowed_ips"], serde_json::json!(["127.0.0.1/32", "::1/128"]));
    assert_eq!(json["egress"]["rate"], "600/min");
    assert_eq!(json["egress"]["per_host_rate"]["api.openai.com"], "120/min");
    assert_eq!(json["egress"]["allow"][2], "*.githubusercontent.com");
    assert_eq!(json["grants"][0]["secrets"], "production/openai/*");
    assert_eq!(json["routes"][0]["upstream"]["host"], "api.openai.com");
    assert_eq!(json["injects"][0]["placeholders"][0]["path"], "production/openai/api-key");
}

#[test]
fn policy_set_from_files() {
    let files =
        vec![("payments.toml".to_owned(), PAYMENTS.to_owned()), ("research.toml".to_owned(), RESEARCH.to_owned())];
    let set = PolicySet::from_files(&files).unwrap();
    assert_eq!(set.len(), 2);
    assert!(set.get("default", "payments-agent").is_some());
    assert!(set.get("other", "payments-agent").is_none());

    let other_tenant = format!("{}\ntenant = \"acme\"\n", "[agent]\nname = \"payments-agent\"");
    let files = [files, vec![("acme.toml".to_owned(), other_tenant)]].concat();
    assert_eq!(PolicySet::from_files(&files).unwrap().len(), 3);

    let copy = ("z-copy.toml".to_owned(), PAYMENTS.to_owned());
    let err = PolicySet::from_files(&[files, vec![copy]].concat()).unwrap_err();
    assert_eq!(err.file, "z-copy.toml");
    assert!(err.message.contains("already defined in payments.toml"), "{err}");
    assert_eq!(err.line, PAYMENTS.lines().position(|l| l.starts_with("name =")).unwrap() + 1);

    let broken = [("ok.toml".to_owned(), RESEARCH.to_owned()), ("bad.toml".to_owned(), "[agent]\n".to_owned())];
    assert_eq!(PolicySet::from_files(&broken).unwrap_err().file, "bad.toml");
    assert!(PolicySet::from_files(&[]).unwrap().is_empty());
}

/// The start of a policy with an AWS grant that `[[sign]]` cases extend.
const SIGN_HEAD: &str = r#"[agent]
name = "agent-1"

[egress]
allow = ["*.amazonaws.com", "api.openai.com"]

[[grant]]
secrets = "aws/prod/*"
hosts = ["*.amazonaws.com"]

[[grant]]
secrets = "openai/*"
hosts = ["api.openai.com"]
"#;

#[test]
fn sign_rules_parse_and_match_their_host() {
    let text = format!(
        "{SIGN_HEAD}\n[[sign]]\nhost = \"*.amazonaws.com\"\nkind = \"aws-sigv4\"\n\
         access_key = \"{{{{secret:aws/prod/access-key-id}}}}\"\nsecret_key = \"{{{{secret:aws/prod/secret-access-key}}}}\"\n\
         session_token = \"{{{{secret:aws/prod/session-token}}}}\"\nregion = \"eu-west-1\"\n"
    );
    let policy = parse(&text);
    let sign = policy.sign_for("s3.eu-west-1.amazonaws.com").expect("the rule matches");
    assert_eq!(sign.kind(), SignKind::AwsSigV4);
    assert_eq!(sign.access_key().path().as_str(), "aws/prod/access-key-id");
    assert_eq!(sign.session_token().map(|p| p.path().as_str()), Some("aws/prod/session-token"));
    assert_eq!((sign.region(), sign.service()), (Some("eu-west-1"), None));
    assert_eq!(sign.placeholders().count(), 3);
    assert!(policy.sign_for("api.openai.com").is_none() && policy.sign_for("amazonaws.com.evil.com").is_none());
    assert!(policy.closed("gone").signs().is_empty());
}

#[test]
fn sign_rule_errors_point_at_their_line() {
    let rule = |body: &str| format!("{SIGN_HEAD}\n[[sign]]\n{body}");
    let ak = "access_key = \"{{secret:aws/prod/ak}}\"";
    let sk = "secret_key = \"{{secret:aws/prod/sk}}\"";
    let cases = [
        (
            "unknown kind",
            rule(&format!("host = \"*.amazonaws.com\"\nkind = \"gcp-hmac\" # here\n{ak}\n{sk}\n")),
            "sign kind 'gcp-hmac' is unknown",
        ),
        (
            "unknown key",
            rule(&format!("host = \"*.amazonaws.com\"\nkind = \"aws-sigv4\"\n{ak}\n{sk}\nregoin = \"x\" # here\n")),
            "unknown field `regoin`",
        ),
        (
            "host outside egress",
            rule(&format!("host = \"s3.example.com\" # here\nkind = \"aws-sigv4\"\n{ak}\n{sk}\n")),
            "not in egress.allow",
        ),
        (
            "ungranted secret",
            rule(&format!(
                "host = \"*.amazonaws.com\"\nkind = \"aws-sigv4\"\naccess_key = \"{{{{secret:aws/dev/ak}}}}\" # here\n{sk}\n"
            )),
            "not covered by any grant",
        ),
        (
            "grant for another host",
            rule(&format!(
                "host = \"*.amazonaws.com\"\nkind = \"aws-sigv4\"\n{ak}\nsecret_key = \"{{{{secret:openai/key}}}}\" # here\n"
            )),
            "does not list that host",
        ),
        (
            "not one placeholder",
            rule(&format!(
                "host = \"*.amazonaws.com\"\nkind = \"aws-sigv4\"\naccess_key = \"AKIA{{{{secret:aws/prod/ak}}}}\" # here\n{sk}\n"
            )),
            "exactly one placeholder",
        ),
        (
            "bad region",
            rule(&format!(
                "host = \"*.amazonaws.com\"\nkind = \"aws-sigv4\"\n{ak}\n{sk}\nregion = \"EU West\" # here\n"
            )),
            "not a region or service name",
        ),
        (
            "an inject rule for Authorization toward the host",
            rule(&format!(
                "host = \"*.amazonaws.com\" # here\nkind = \"aws-sigv4\"\n{ak}\n{sk}\n\n[[inject]]\n\
                 host = \"s3.amazonaws.com\"\nheader = \"Authorization\"\nvalue = \"Bearer {{{{secret:aws/prod/t}}}}\"\n"
            )),
            "overlaps an inject rule for 'authorization' toward 's3.amazonaws.com'",
        ),
        (
            "an oauth2 rule on the host",
            rule(&format!(
                "host = \"*.amazonaws.com\" # here\nkind = \"aws-sigv4\"\n{ak}\n{sk}\n\n[[oauth2]]\n\
                 host = \"s3.amazonaws.com\"\ntoken_url = \"https://sts.amazonaws.com/token\"\nclient_id = \"me\"\n\
                 client_secret = \"{{{{secret:aws/prod/cs}}}}\"\n"
            )),
            "overlaps the oauth2 rule for 's3.amazonaws.com'",
        ),
        (
            "missing secret key",
            format!("{SIGN_HEAD}\n[[sign]] # here\nhost = \"*.amazonaws.com\"\nkind = \"aws-sigv4\"\n{ak}\n"),
            "missing field `secret_key`",
        ),
    ];
    for (name, text, needle) in cases {
        let err = Policy::parse("bad.toml", &text).err().unwrap_or_else(|| panic!("{name}: parsed\n{text}"));
        assert!(err.message.contains(needle), "{name}: {err}");
        assert_eq!(err.line, marked_line(&text), "{name}: {err}\n{text}");
    }
}
