//! Credentials the proxy makes itself from the values it reads, rather than writing a value
//! where the agent put a placeholder: OAuth2 access tokens (`oauth2`).

pub mod oauth2;
