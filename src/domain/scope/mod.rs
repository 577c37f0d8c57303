//! Scopes: this module owns the scope grammar (`secrets:<action>:<glob>` and
//! the bare scopes such as `tokens:create`), the `ScopeSet` a token or key
//! holds, and the minting rule (`Scope::covers`) that decides whether a
//! holder may hand a scope on without widening it. The `PathGlob` a secrets
//! scope applies to lives in `glob`, the built-in `Role`s in `role`; both are
//! re-exported here so their old paths keep working. Parsing is strict and
//! `Display` round-trips exactly, so scopes are stored and sent as strings.

mod glob;
mod role;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

pub use self::glob::PathGlob;
pub use self::role::Role;
use super::path::{PathError, SecretPath};

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
