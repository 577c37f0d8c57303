//! Credentials the proxy makes itself from the values it reads, rather than writing a value
//! where the agent put a placeholder: one module per kind, OAuth2 access tokens (`oauth2`)
//! and AWS SigV4 signatures (`sigv4`).

pub mod oauth2;
pub mod sigv4;
