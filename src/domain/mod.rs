//! Domain types: this module owns Airlock's pure, I/O-free vocabulary —
//! validated secret paths (`path`), the scope grammar, globs, roles and the
//! minting rule (`scope`), the in-memory secret value that is wiped on drop
//! and never printed (`value`), audit records and their hash chain (`audit`),
//! and timestamp conversions (`time`). Types here are constructed through
//! validation, so the rest of the crate can rely on their invariants.

pub mod audit;
pub mod path;
pub mod policy;
pub mod rate;
pub mod scope;
pub mod structured;
pub mod tier;
pub mod time;
pub mod value;

pub use path::{PathError, SecretPath};
pub use scope::{PathGlob, Role, Scope, ScopeError, ScopeSet, SecretAction};
pub use tier::Tier;
pub use value::SecretValue;
