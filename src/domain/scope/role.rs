//! The built-in roles (admin, deployer, reader), each a fixed `ScopeSet`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{PathGlob, Scope, ScopeError, ScopeSet, SecretAction};

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
