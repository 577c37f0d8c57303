//! Airlock keeps credentials away from AI agents: a central secret API stores secrets
//! encrypted and audited, and a sidecar proxy injects them into agents' outbound requests,
//! only toward the hosts they are bound to. This crate is the one `airlock` binary and its
//! parts; docs/architecture.md is the map.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod crypto;
pub mod domain;
pub mod providers;
pub mod proxy;
pub mod server;
pub mod store;
pub mod trust;

/// Thin wrappers over the parsers and decoders the fuzz targets in `fuzz/` hold against
/// hyper and against their own round trips (see `fuzz/README.md`). Built only with
/// `--cfg fuzzing`, as `cargo fuzz` builds, and for this crate's tests: not part of the API.
#[cfg(any(fuzzing, test))]
pub mod fuzzing {
    pub use crate::proxy::fuzzing::*;

    /// `Policy::parse` on `text` as file `fuzz.toml`: the error's line, or `None` when the
    /// policy is valid.
    pub fn policy_error_line(text: &str) -> Option<(usize, String)> {
        crate::domain::policy::Policy::parse("fuzz.toml", text).err().map(|e| (e.line, e.message))
    }
}

/// rustls is built with ring only (no aws-lc-rs); make ring the process default so every
/// TLS client (reqwest included) finds a provider. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
