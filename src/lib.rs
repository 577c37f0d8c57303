//! Airlock keeps credentials away from AI agents: a central secret API stores secrets
//! encrypted and audited, and (in later work) a sidecar proxy injects them into agents'
//! outbound requests. This crate is the one `airlock` binary and its parts.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod crypto;
pub mod domain;
pub mod proxy;
pub mod server;
pub mod store;

/// rustls is built with ring only (no aws-lc-rs); make ring the process default so every
/// TLS client (reqwest included) finds a provider. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
