//! Envelope encryption of one value: the row a sealed value is bound to (and the
//! associated data built from it), the `Sealed` pair of wrapped data key and
//! ciphertext, and AES-256-GCM with a fresh nonce for each encryption.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::{CryptoError, KEY_LEN, fill_random};

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The row a sealed value belongs to; bound into the AEAD associated data.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub tenant: &'a str,
    pub path: &'a str,
    pub version: i64,
}

impl Binding<'_> {
    /// `airlock/v1/<label>\0tenant\0path\0version`. NUL is refused in tenant
    /// and path so that the encoding stays unambiguous.
    fn aad(&self, label: &str) -> Result<Vec<u8>, CryptoError> {
        if self.tenant.contains('\0') || self.path.contains('\0') {
            return Err(CryptoError::Malformed("tenant and path must not contain NUL bytes"));
        }
        let s = format!("airlock/v1/{label}\0{}\0{}\0{}", self.tenant, self.path, self.version);
        Ok(s.into_bytes())
    }

    pub(super) fn value_aad(&self) -> Result<Vec<u8>, CryptoError> {
        self.aad("value")
    }

    pub(super) fn wrap_aad(&self, kid: &str) -> Result<Vec<u8>, CryptoError> {
        let mut aad = self.aad("wrap")?;
        aad.push(0);
        aad.extend_from_slice(kid.as_bytes());
        Ok(aad)
    }
}

/// One sealed secret version: the data key wrapped under master key `kid`,
/// and the value encrypted under the data key. Both blobs are
/// `nonce (12 bytes) || ciphertext || tag (16 bytes)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub kid: String,
    pub wrapped_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("kid", &self.kid)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

fn cipher(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

/// AES-256-GCM with a fresh random nonce; returns `nonce || ct+tag`.
pub(super) fn encrypt(key: &[u8; KEY_LEN], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let ct = cipher(key)
        .encrypt(&Nonce::from(nonce), Payload { msg, aad })
        .map_err(|_| CryptoError::Malformed("plaintext too large to encrypt"))?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

pub(super) fn decrypt(key: &[u8; KEY_LEN], blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let (nonce, msg) = blob
        .split_first_chunk::<NONCE_LEN>()
        .filter(|(_, rest)| rest.len() >= TAG_LEN)
        .ok_or(CryptoError::Malformed("sealed blob is shorter than nonce and tag"))?;
    cipher(key).decrypt(nonce.into(), Payload { msg, aad }).map(Zeroizing::new).map_err(|_| CryptoError::Decrypt)
}
