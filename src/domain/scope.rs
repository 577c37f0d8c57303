//! Scopes: this module owns the scope grammar (`secrets:<action>:<glob>` and
//! the bare scopes such as `tokens:create`), the `PathGlob` that a secrets
//! scope applies to, the `ScopeSet` a token or key holds, the built-in
//! `Role`s, and the minting rule (`Scope::covers`) that decides whether a
//! holder may hand a scope on without widening it. Parsing is strict and
//! `Display` round-trips exactly, so scopes are stored and sent as strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

use super::path::{PathError, SecretPath, check_length, validate_segment};

const EXPECTED_ACTIONS: &str = "read, write, delete, rotate, read_metadata, undelete, destroy, owner_update";
const EXPECTED_SCOPES: &str = "secrets:<action>:<glob>, tokens:create, audit:read, \
     approvals:decide, tenants:create, keys:manage, agents:manage";

/// Why a string is not a valid scope, glob, action or role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope '{0}'; expected one of {EXPECTED_SCOPES}")]
    UnknownScope(String),
    #[error("scope '{0}' has no glob; write it as secrets:<action>:<glob>, e.g. secrets:read:production/**")]
    MissingGlob(String),
    #[error("unknown secret action '{0}'; expected one of {EXPECTED_ACTIONS}")]
    UnknownAction(String),
    #[error("unknown secret action '{action}' in scope '{scope}'; expected one of {EXPECTED_ACTIONS}")]
    UnknownActionInScope { action: String, scope: String },
    #[error("invalid glob '{glob}': {source}")]
    InvalidGlob { glob: String, source: PathError },
    #[error("'**' may only be the last segment of a glob, not as in '{0}'")]
    DoubleStarNotLast(String),
    #[error("'*' must be a whole glob segment ('*' or '**'), not part of '{segment}' in '{glob}'")]
    StarInSegment { segment: String, glob: String },
    #[error("unknown role '{0}'; expected one of admin, deployer, reader")]
    UnknownRole(String),
}

/// What a secrets scope lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretAction {
    Read,
    Write,
    Delete,
    Rotate,
    ReadMetadata,
    Undelete,
    Destroy,
    OwnerUpdate,
}

impl SecretAction {
    pub const ALL: [SecretAction; 8] = [
        Self::Read,
        Self::Write,
        Self::Delete,
        Self::Rotate,
        Self::ReadMetadata,
        Self::Undelete,
        Self::Destroy,
        Self::OwnerUpdate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
            Self::Rotate => "rotate",
            Self::ReadMetadata => "read_metadata",
            Self::Undelete => "undelete",
            Self::Destroy => "destroy",
            Self::OwnerUpdate => "owner_update",
        }
    }

    /// Every action implies itself; `Read` also implies `ReadMetadata`.
    pub fn implies(self, other: SecretAction) -> bool {
        self == other || (self == Self::Read && other == Self::ReadMetadata)
    }
}

impl FromStr for SecretAction {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, ScopeError> {
        Self::ALL.into_iter().find(|action| action.as_str() == s).ok_or_else(|| ScopeError::UnknownAction(s.to_owned()))
    }
}

impl fmt::Display for SecretAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One non-`**` glob segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Any,
}

impl Segment {
    fn as_str(&self) -> &str {
        match self {
            Self::Literal(literal) => literal,
            Self::Any => "*",
        }
    }

    fn matches(&self, segment: &str) -> bool {
        match self {
            Self::Literal(literal) => literal == segment,
            Self::Any => true,
        }
    }

    fn is_subset_of(&self, other: &Segment) -> bool {
        match (self, other) {
            (_, Self::Any) => true,
            (Self::Literal(a), Self::Literal(b)) => a == b,
            (Self::Any, Self::Literal(_)) => false,
        }
    }

    /// Whether some path segment matches both.
    fn meets(&self, other: &Segment) -> bool {
        match (self, other) {
            (Self::Literal(a), Self::Literal(b)) => a == b,
            _ => true,
        }
    }
}

/// A validated glob over `/`-separated segments: literals, `*` (exactly one
/// segment) and a final `**` (one or more segments).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct PathGlob {
    head: Vec<Segment>,
    /// True if the glob ends with `**`.
    rest: bool,
}

impl PathGlob {
    /// `**`: every path.
    pub fn any_path() -> Self {
        Self { head: Vec::new(), rest: true }
    }

    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let invalid = |source| ScopeError::InvalidGlob { glob: s.to_owned(), source };
        check_length(s).map_err(invalid)?;
        let mut glob = Self { head: Vec::new(), rest: false };
        let mut offset = 0;
        for segment in s.split('/') {
            if glob.rest {
                return Err(ScopeError::DoubleStarNotLast(s.to_owned()));
            }
            match segment {
                "**" => glob.rest = true,
                "*" => glob.head.push(Segment::Any),
                _ if segment.contains('*') => {
                    let segment = segment.to_owned();
                    return Err(ScopeError::StarInSegment { segment, glob: s.to_owned() });
                }
                _ => {
                    validate_segment(segment, offset).map_err(invalid)?;
                    glob.head.push(Segment::Literal(segment.to_owned()));
                }
            }
            offset += segment.chars().count() + 1;
        }
        Ok(glob)
    }

    pub fn matches(&self, path: &SecretPath) -> bool {
        let mut segments = path.segments();
        let head_ok = self.head.iter().all(|g| segments.next().is_some_and(|s| g.matches(s)));
        // `**` takes one segment or more; without it the path must end here.
        head_ok && segments.next().is_some() == self.rest
    }

    /// True iff every path matched by `self` is matched by `other`.
    pub fn is_subset_of(&self, other: &PathGlob) -> bool {
        let length_ok = if other.rest {
            self.min_len() > other.head.len()
        } else {
            !self.rest && self.head.len() == other.head.len()
        };
        // When lengths line up, `self.head` reaches every position of `other.head`.
        length_ok && self.head.iter().zip(&other.head).all(|(a, b)| a.is_subset_of(b))
    }

    /// True iff some path is matched by both `self` and `other`.
    pub fn overlaps(&self, other: &PathGlob) -> bool {
        // A path long enough for both exists when neither is exact (both end in `**`), or
        // when the exact one is long enough to give the other's `**` at least one segment,
        // or when both are exact and equally long. Past the shorter head, the longer head's
        // segments fall to the shorter one's `**`, which takes anything.
        let (short, long) = if self.head.len() <= other.head.len() { (self, other) } else { (other, self) };
        let length_ok = match (short.rest, long.rest) {
            (true, true) => true,
            (true, false) => long.head.len() > short.head.len(),
            (false, true) => false,
            (false, false) => short.head.len() == long.head.len(),
        };
        length_ok && short.head.iter().zip(&long.head).all(|(a, b)| a.meets(b))
    }

    /// Orders globs from the most specific: an exact glob (no `**`) before one ending in
    /// `**`, then more segments first, then more literal segments first, then by text. A
    /// glob strictly inside another always sorts first; the order never depends on where
    /// either came from.
    pub fn cmp_specificity(&self, other: &PathGlob) -> std::cmp::Ordering {
        let literals = |g: &PathGlob| g.head.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
        self.rest
            .cmp(&other.rest)
            .then_with(|| other.head.len().cmp(&self.head.len()))
            .then_with(|| literals(other).cmp(&literals(self)))
            .then_with(|| self.to_string().cmp(&other.to_string()))
    }

    /// Fewest segments a matching path can have.
    fn min_len(&self) -> usize {
        self.head.len() + usize::from(self.rest)
    }
}

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<&str> = self.head.iter().map(Segment::as_str).collect();
        if self.rest {
            parts.push("**");
        }
        f.write_str(&parts.join("/"))
    }
}

impl FromStr for PathGlob {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, ScopeError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for PathGlob {
    type Error = ScopeError;

    fn try_from(s: String) -> Result<Self, ScopeError> {
        Self::parse(&s)
    }
}

impl Serialize for PathGlob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One permission, as held by a token or key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum Scope {
    Secrets { action: SecretAction, glob: PathGlob },
    TokensCreate,
    AuditRead,
    ApprovalsDecide,
    TenantsCreate,
    KeysManage,
    AgentsManage,
}

impl Scope {
    /// Every scope that is not a secrets scope.
    pub fn bare_scopes() -> [Scope; 6] {
        [
            Self::TokensCreate,
            Self::AuditRead,
            Self::ApprovalsDecide,
            Self::TenantsCreate,
            Self::KeysManage,
            Self::AgentsManage,
        ]
    }

    /// The fixed name of a bare scope; `None` for a secrets scope.
    pub fn bare_name(&self) -> Option<&'static str> {
        match self {
            Self::Secrets { .. } => None,
            Self::TokensCreate => Some("tokens:create"),
            Self::AuditRead => Some("audit:read"),
            Self::ApprovalsDecide => Some("approvals:decide"),
            Self::TenantsCreate => Some("tenants:create"),
            Self::KeysManage => Some("keys:manage"),
            Self::AgentsManage => Some("agents:manage"),
        }
    }

    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let bare = Self::bare_scopes().into_iter().find(|b| b.bare_name() == Some(s));
        match bare {
            Some(scope) => Ok(scope),
            None => Self::parse_secrets(s),
        }
    }

    fn parse_secrets(s: &str) -> Result<Self, ScopeError> {
        let Some(rest) = s.strip_prefix("secrets:") else {
            return Err(ScopeError::UnknownScope(s.to_owned()));
        };
        let Some((action, glob)) = rest.split_once(':') else {
            return Err(ScopeError::MissingGlob(s.to_owned()));
        };
        let action = action
            .parse()
            .map_err(|_| ScopeError::UnknownActionInScope { action: action.to_owned(), scope: s.to_owned() })?;
        let glob = PathGlob::parse(glob)?;
        Ok(Self::Secrets { action, glob })
    }

    /// Minting rule: may a holder of `self` grant `other`? Only the same bare
    /// scope, or a secrets scope with an implied action on a narrower glob.
    pub fn covers(&self, other: &Scope) -> bool {
        match (self, other) {
            (Self::Secrets { action: held, glob: held_glob }, Self::Secrets { action: wanted, glob: wanted_glob }) => {
                held.implies(*wanted) && wanted_glob.is_subset_of(held_glob)
            }
            _ => self == other,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secrets { action, glob } => write!(f, "secrets:{action}:{glob}"),
            bare => f.write_str(bare.bare_name().unwrap_or_default()),
        }
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, ScopeError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Scope {
    type Error = ScopeError;

    fn try_from(s: String) -> Result<Self, ScopeError> {
        Self::parse(&s)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The scopes a token or key holds; (de)serialized as a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    pub fn new(scopes: Vec<Scope>) -> Self {
        Self(scopes)
    }

    /// Parses every item; fails on the first invalid one.
    pub fn parse_list(items: &[impl AsRef<str>]) -> Result<Self, ScopeError> {
        let scopes = items.iter().map(|item| Scope::parse(item.as_ref()));
        scopes.collect::<Result<_, _>>().map(Self)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Scope> {
        self.0.iter()
    }

    /// Some secrets scope allows `action` on `path`.
    pub fn allows_secret(&self, action: SecretAction, path: &SecretPath) -> bool {
        self.0.iter().any(|scope| match scope {
            Scope::Secrets { action: held, glob } => held.implies(action) && glob.matches(path),
            _ => false,
        })
    }

    /// Exact membership; meant for bare scopes such as `tokens:create`.
    pub fn has(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    /// Some member covers `scope` (see `Scope::covers`).
    pub fn covers(&self, scope: &Scope) -> bool {
        self.0.iter().any(|held| held.covers(scope))
    }

    pub fn covers_all(&self, requested: &ScopeSet) -> bool {
        self.first_uncovered(requested).is_none()
    }

    /// The first requested scope this set does not cover, for error messages.
    pub fn first_uncovered<'a>(&self, requested: &'a ScopeSet) -> Option<&'a Scope> {
        requested.iter().find(|scope| !self.covers(scope))
    }
}

impl<'a> IntoIterator for &'a ScopeSet {
    type Item = &'a Scope;
    type IntoIter = std::slice::Iter<'a, Scope>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Built-in roles, each a fixed `ScopeSet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Deployer,
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Deployer => "deployer",
            Self::Reader => "reader",
        }
    }

    /// Admin: every secrets action on `**` and every bare scope except
    /// `tenants:create`. Deployer: read, write, delete, rotate,
    /// read_metadata, undelete on `**` and `tokens:create`. Reader:
    /// `secrets:read_metadata:**`.
    pub fn scopes(self) -> ScopeSet {
        use SecretAction as A;
        let on_everything = |action| Scope::Secrets { action, glob: PathGlob::any_path() };
        let scopes: Vec<Scope> = match self {
            Self::Admin => A::ALL
                .into_iter()
                .map(on_everything)
                .chain(Scope::bare_scopes().into_iter().filter(|s| *s != Scope::TenantsCreate))
                .collect(),
            Self::Deployer => [A::Read, A::Write, A::Delete, A::Rotate, A::ReadMetadata, A::Undelete]
                .into_iter()
                .map(on_everything)
                .chain([Scope::TokensCreate])
                .collect(),
            Self::Reader => vec![on_everything(A::ReadMetadata)],
        };
        ScopeSet::new(scopes)
    }
}

impl FromStr for Role {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, ScopeError> {
        [Self::Admin, Self::Deployer, Self::Reader]
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| ScopeError::UnknownRole(s.to_owned()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
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
}
