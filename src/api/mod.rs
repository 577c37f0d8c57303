//! The wire contract of the central API: one serde type per request and response body of
//! every endpoint the proxy and the CLI call, split by resource. The server's handlers build
//! and return these types; the CLI's client (`client.rs`) and the proxy's (`proxy/central/`)
//! parse answers into them with [`decode`], so a missing or mistyped field is an error that
//! names the endpoint and the field, never a silent default.
//!
//! Timestamps travel as RFC 3339 strings; a field that may be `null` is an `Option` that is
//! serialized as `null`, and one that may be absent is an `Option` skipped when `None`, as on
//! the wire. Every type that carries a secret value (a secret's, a token's, a key's) holds it
//! as a [`SecretValue`](crate::domain::SecretValue): wiped on drop, `***` in `Debug`.
//!
//! This module depends only on serde and `domain`; the server, the client and the proxy
//! import it, and it imports none of them.

pub mod access;
pub mod agents;
pub mod approvals;
pub mod audit;
pub mod changes;
pub mod errors;
pub mod keys;
pub mod policy;
mod schema;
pub mod secrets;
pub mod tokens;
pub mod usage;

#[cfg(test)]
mod tests;

use serde::de::DeserializeOwned;

/// An answer that is JSON but not the shape the API defines for `endpoint`.
#[derive(Debug, thiserror::Error)]
#[error("{endpoint} answered a body that is not the API's: {detail}")]
pub struct DecodeError {
    /// `METHOD /path`, without the query.
    pub endpoint: String,
    /// serde's message, with the path of the field it is about (`token.value: missing field…`).
    pub detail: String,
}

/// Parses `body` as the answer of `endpoint` into `T`. The error names the field (its path
/// from the top of the body) and what was wrong with it; it never quotes a string value,
/// which could be a secret sent in the wrong place.
pub fn decode<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, DecodeError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = unquoted(&e.into_inner().to_string());
        let detail = if path == "." { message } else { format!("field `{path}`: {message}") };
        DecodeError { endpoint: without_query(endpoint).to_owned(), detail }
    })
}

/// Like [`decode`], from a JSON value already parsed (a change stream's `data`).
pub fn decode_value<T: DeserializeOwned>(endpoint: &str, value: serde_json::Value) -> Result<T, DecodeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = unquoted(&e.into_inner().to_string());
        let detail = if path == "." { message } else { format!("field `{path}`: {message}") };
        DecodeError { endpoint: without_query(endpoint).to_owned(), detail }
    })
}

fn without_query(endpoint: &str) -> &str {
    endpoint.split_once('?').map_or(endpoint, |(path, _)| path)
}

/// serde's "invalid type: string \"…\", expected …" with the string left out.
fn unquoted(message: &str) -> String {
    for prefix in ["invalid type: string \"", "invalid value: string \""] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some(end) = rest.find("\", expected")
        {
            return format!("{}a string{}", &prefix[..prefix.len() - "string \"".len()], &rest[end + 1..]);
        }
    }
    message.to_owned()
}

/// A listing answered a page at a time: its items and the cursor of the next page.
pub trait Paged: DeserializeOwned {
    type Item;
    /// The items and `next_cursor` (`None` on the last page).
    fn into_page(self) -> (Vec<Self::Item>, Option<String>);
}
