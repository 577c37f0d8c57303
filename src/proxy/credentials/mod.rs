//! Credentials the proxy applies itself rather than as placeholder values: one module per kind.

pub mod sigv4;
