//! Unit tests of the scope grammar, globs, roles and the minting rule.

use super::*;

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn glob(s: &str) -> PathGlob {
    PathGlob::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn path(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

#[test]
fn covers_table() {
    let cases = [
        // identical and bare scopes
        ("tokens:create", "tokens:create", true),
        ("tokens:create", "audit:read", false),
        ("keys:manage", "tenants:create", false),
        ("secrets:read:**", "tokens:create", false),
        ("tokens:create", "secrets:read:a", false),
        ("secrets:read:a/b", "secrets:read:a/b", true),
        // * versus **
        ("secrets:read:a/*", "secrets:read:a/b", true),
        ("secrets:read:a/*", "secrets:read:a/*", true),
        ("secrets:read:a/*", "secrets:read:a/**", false),
        ("secrets:read:a/**", "secrets:read:a/*", true),
        ("secrets:read:a/**", "secrets:read:a/*/**", true),
        ("secrets:read:a/*/**", "secrets:read:a/**", false),
        ("secrets:read:*", "secrets:read:**", false),
        ("secrets:read:**", "secrets:read:*", true),
        ("secrets:read:**", "secrets:read:a/b/c", true),
        ("secrets:read:a/b", "secrets:read:a/*", false),
        ("secrets:read:a/b", "secrets:read:a/**", false),
        ("secrets:read:a/*/c", "secrets:read:a/b/c", true),
        ("secrets:read:a/b/c", "secrets:read:a/*/c", false),
        ("secrets:read:a/*", "secrets:read:a/b/c", false),
        ("secrets:read:a/**", "secrets:read:a", false),
        ("secrets:read:*/b", "secrets:read:**", false),
        // look-alike prefixes
        ("secrets:read:prod/x", "secrets:read:production/x", false),
        ("secrets:read:prod/*", "secrets:read:production/a", false),
        ("secrets:read:prod/**", "secrets:read:production/a", false),
        ("secrets:read:production/**", "secrets:read:productionx/a", false),
        ("secrets:read:production/**", "secrets:read:production", false),
        // widening attempts
        ("secrets:read:production/openai/*", "secrets:read:production/**", false),
        ("secrets:read:production/openai/*", "secrets:write:production/openai/*", false),
        ("secrets:read:production/openai/*", "secrets:read:production/openai/x/y", false),
        ("secrets:read:production/**", "secrets:read:production/openai/*", true),
        ("secrets:read_metadata:**", "secrets:read:a", false),
        ("secrets:write:**", "secrets:destroy:a", false),
        ("secrets:delete:**", "secrets:undelete:a", false),
        // read implies read_metadata
        ("secrets:read:**", "secrets:read_metadata:**", true),
        ("secrets:read:**", "secrets:read_metadata:x/y/z", true),
        ("secrets:read:a/*", "secrets:read_metadata:a/b", true),
        ("secrets:read:a/*", "secrets:read_metadata:b/a", false),
    ];
    for (held, requested, expected) in cases {
        let got = scope(held).covers(&scope(requested));
        assert_eq!(got, expected, "held {held}, requested {requested}");
    }
}

#[test]
fn matches_table() {
    let cases = [
        ("production/openai/*", "production/openai/api-key", true),
        ("production/openai/*", "production/openai/x/y", false),
        ("production/openai/*", "production/openai", false),
        ("production/**", "production/a", true),
        ("production/**", "production/a/b/c", true),
        ("production/**", "production", false),
        ("production/**", "productionx/a", false),
        ("**", "a", true),
        ("**", "a/b/c", true),
        ("*", "a", true),
        ("*", "a/b", false),
        ("*/key", "prod/key", true),
        ("*/key", "prod/other", false),
        ("a/b", "a/b", true),
        ("a/b", "a/bc", false),
        ("a/b", "a", false),
        ("a/*/**", "a/b", false),
        ("a/*/**", "a/b/c", true),
    ];
    for (g, p, expected) in cases {
        assert_eq!(glob(g).matches(&path(p)), expected, "{g} vs {p}");
    }
}

#[test]
fn scope_round_trips() {
    let cases = [
        "secrets:read:production/openai/*",
        "secrets:read_metadata:**",
        "secrets:owner_update:a/*/b/**",
        "secrets:destroy:*",
        "tokens:create",
        "audit:read",
        "approvals:decide",
        "tenants:create",
        "keys:manage",
        "agents:manage",
    ];
    for s in cases {
        let parsed: Scope = s.parse().unwrap();
        assert_eq!(parsed.to_string(), s);
        let json = serde_json::to_string(&parsed).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), parsed);
    }
}

#[test]
fn parse_errors() {
    let cases = [
        ("", "unknown scope ''"),
        ("tokens:delete", "unknown scope 'tokens:delete'"),
        ("TOKENS:CREATE", "unknown scope 'TOKENS:CREATE'"),
        ("secret:read:a", "unknown scope 'secret:read:a'"),
        ("secrets:read", "scope 'secrets:read' has no glob"),
        (
            "secrets:reed:prod/*",
            "unknown secret action 'reed' in scope 'secrets:reed:prod/*'; \
             expected one of read, write, delete, rotate, read_metadata",
        ),
        ("secrets:read:", "invalid glob '': secret path is empty"),
        ("secrets:read:**/a", "'**' may only be the last segment of a glob"),
        ("secrets:read:a/**/**", "'**' may only be the last segment"),
        ("secrets:read:ab*", "not part of 'ab*'"),
        ("secrets:read:a/***", "not part of '***'"),
        ("secrets:read:a//b", "invalid glob 'a//b'"),
        ("secrets:read:a/../b", "segment '..' is not allowed"),
        ("secrets:read:a b", "' ' at position 1"),
        ("secrets:read:a:b", "':' at position 1"),
        ("secrets:read:/a", "empty segment"),
        ("secrets:read:a/", "empty segment"),
    ];
    for (input, needle) in cases {
        let message = Scope::parse(input).unwrap_err().to_string();
        assert!(message.contains(needle), "{input:?}: {message}");
    }
}

#[test]
fn action_and_role_strings() {
    let names: Vec<&str> = SecretAction::ALL.iter().map(|a| a.as_str()).collect();
    assert_eq!(names.join(", "), EXPECTED_ACTIONS);
    for action in SecretAction::ALL {
        assert_eq!(action.as_str().parse::<SecretAction>(), Ok(action));
    }
    assert!("Read".parse::<SecretAction>().is_err());
    for (s, role) in [("admin", Role::Admin), ("deployer", Role::Deployer), ("reader", Role::Reader)] {
        assert_eq!(s.parse::<Role>(), Ok(role));
        assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<Role>(&format!("\"{s}\"")).unwrap(), role);
    }
    assert_eq!(
        "root".parse::<Role>().unwrap_err().to_string(),
        "unknown role 'root'; expected one of admin, deployer, reader"
    );
}

#[test]
fn implies_table() {
    for a in SecretAction::ALL {
        for b in SecretAction::ALL {
            let expected = a == b || (a == SecretAction::Read && b == SecretAction::ReadMetadata);
            assert_eq!(a.implies(b), expected, "{a} implies {b}");
        }
    }
}

#[test]
fn role_scopes() {
    let admin = Role::Admin.scopes();
    let deployer = Role::Deployer.scopes();
    let reader = Role::Reader.scopes();
    let cases = [
        (&admin, "secrets:destroy:**", true),
        (&admin, "secrets:owner_update:a/b", true),
        (&admin, "keys:manage", true),
        (&admin, "agents:manage", true),
        (&admin, "tenants:create", false),
        (&deployer, "secrets:rotate:**", true),
        (&deployer, "secrets:undelete:a", true),
        (&deployer, "tokens:create", true),
        (&deployer, "secrets:destroy:a", false),
        (&deployer, "secrets:owner_update:a", false),
        (&deployer, "audit:read", false),
        (&reader, "secrets:read_metadata:a/b", true),
        (&reader, "secrets:read:a", false),
        (&reader, "tokens:create", false),
    ];
    for (set, requested, expected) in cases {
        assert_eq!(set.covers(&scope(requested)), expected, "{requested}");
    }
    assert_eq!(admin.iter().count(), SecretAction::ALL.len() + 5);
    assert!(admin.covers_all(&deployer) && deployer.covers_all(&reader));
    assert!(!reader.covers_all(&deployer));
}

#[test]
fn scope_set_queries() {
    let set = ScopeSet::parse_list(&["secrets:read:prod/*", "secrets:write:dev/**", "audit:read"]).unwrap();
    let cases = [
        (SecretAction::Read, "prod/a", true),
        (SecretAction::ReadMetadata, "prod/a", true),
        (SecretAction::Read, "prod/a/b", false),
        (SecretAction::Write, "prod/a", false),
        (SecretAction::Write, "dev/a/b", true),
        (SecretAction::Read, "dev/a", false),
        (SecretAction::Read, "production/a", false),
    ];
    for (action, p, expected) in cases {
        assert_eq!(set.allows_secret(action, &path(p)), expected, "{action} {p}");
    }
    assert!(set.has(&Scope::AuditRead));
    assert!(!set.has(&Scope::TokensCreate));

    let requested = ScopeSet::parse_list(&["secrets:read:prod/x", "secrets:read:dev/x"]).unwrap();
    assert!(!set.covers_all(&requested));
    assert_eq!(set.first_uncovered(&requested), Some(&scope("secrets:read:dev/x")));
    assert!(set.covers_all(&ScopeSet::new(vec![])));

    let json = serde_json::to_string(&set).unwrap();
    assert_eq!(json, r#"["secrets:read:prod/*","secrets:write:dev/**","audit:read"]"#);
    assert_eq!(serde_json::from_str::<ScopeSet>(&json).unwrap(), set);
    assert!(serde_json::from_str::<ScopeSet>(r#"["tokens:delete"]"#).is_err());
    assert!(ScopeSet::parse_list(&["audit:read", "nope"]).is_err());
}

#[test]
fn overlaps_table() {
    let cases = [
        ("prod/*/key", "prod/openai/*", true),
        ("a/**", "a/b", true),
        ("a/**", "a", false),
        ("a/**", "a/b/c/d", true),
        ("a/*", "a/**", true),
        ("a/*/**", "a/*", false),
        ("a/*/**", "a/b/c", true),
        ("**", "a", true),
        ("**", "a/b/*", true),
        ("**", "*/**", true),
        ("**", "**", true),
        ("*", "a/b", false),
        ("*", "a", true),
        ("a/b", "a/c", false),
        ("a/b", "a/b", true),
        ("a/b", "a/b/c", false),
        ("production/**", "production/stripe/*", true),
        ("production/**", "staging/**", false),
        ("production/openai/*", "production/github/*", false),
        ("*/x/**", "a/*/y", true),
        ("*/x/**", "a/y/**", false),
        ("a/*/c", "*/b/*", true),
        ("a/*/c", "*/b/d", false),
    ];
    for (a, b, expected) in cases {
        assert_eq!(glob(a).overlaps(&glob(b)), expected, "{a} overlaps {b}");
        assert_eq!(glob(b).overlaps(&glob(a)), expected, "{b} overlaps {a}");
    }
}

/// Every glob of up to three segments from {a, b, *} with or without a final `**`.
fn small_globs() -> Vec<PathGlob> {
    let mut heads: Vec<Vec<&str>> = vec![vec![]];
    for len in 1..=3 {
        let mut next = Vec::new();
        for head in heads.iter().filter(|h| h.len() == len - 1) {
            for seg in ["a", "b", "*"] {
                next.push([head.clone(), vec![seg]].concat());
            }
        }
        heads.extend(next);
    }
    let mut globs = Vec::new();
    for head in heads {
        if !head.is_empty() {
            globs.push(glob(&head.join("/")));
        }
        globs.push(glob(&[head, vec!["**"]].concat().join("/")));
    }
    globs
}

/// Every path of one to five segments from {a, b, c}: enough to witness any overlap of
/// `small_globs` (a witness needs at most four segments, and `c` stands for any other).
fn small_paths() -> Vec<SecretPath> {
    let mut paths: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
    let mut last = paths.clone();
    for _ in 1..5 {
        last = last.iter().flat_map(|p| ["a", "b", "c"].map(|s| format!("{p}/{s}"))).collect();
        paths.extend(last.iter().cloned());
    }
    paths.iter().map(|p| path(p)).collect()
}

#[test]
fn overlaps_agrees_with_matches_exhaustively() {
    let (globs, paths) = (small_globs(), small_paths());
    for a in &globs {
        for b in &globs {
            let witnessed = paths.iter().any(|p| a.matches(p) && b.matches(p));
            assert_eq!(a.overlaps(b), witnessed, "{a} overlaps {b}");
        }
    }
}

#[test]
fn a_narrower_glob_is_more_specific() {
    let globs = small_globs();
    for a in &globs {
        for b in &globs {
            if a != b && a.is_subset_of(b) {
                assert_eq!(a.cmp_specificity(b), std::cmp::Ordering::Less, "{a} before {b}");
            }
            assert_eq!(a.cmp_specificity(b), b.cmp_specificity(a).reverse(), "{a} vs {b}");
            assert_eq!(a.cmp_specificity(b) == std::cmp::Ordering::Equal, a == b, "{a} vs {b}");
        }
    }
}

#[test]
fn glob_display_round_trips() {
    for s in ["**", "*", "a", "a/*/b", "a/b/**", "*/*/**"] {
        assert_eq!(glob(s).to_string(), s);
    }
    assert_eq!(PathGlob::any_path(), glob("**"));
}
