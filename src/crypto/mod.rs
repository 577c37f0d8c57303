//! Envelope encryption of secret values and the master keyring.
//!
//! This module owns every use of key material in Airlock. Each secret
//! version is sealed with a fresh random 256-bit data key under AES-256-GCM;
//! the data key is itself sealed (AES-256-GCM, fresh nonce) by the keyring's
//! active master key. Associated data binds tenant, path, version and the
//! master key id, so a ciphertext cannot be moved to another row. The module
//! also owns the keyring: master keys, their ids (`mk_` + 8 hex chars of the
//! key's SHA-256), and the 0600 JSON keyring file. Data keys and master keys
//! only ever live in `Zeroizing` buffers, and no key byte appears in any
//! `Debug` output, `Display` output or error message.
//!
//! It also signs the audit chain's checkpoints: an HMAC-SHA256 under a key derived from a
//! master key (HMAC-SHA256 of a fixed label), so the signature needs nothing new provisioned
//! and no key that the database holds.
//!
//! Layout: `envelope` seals and opens one value (the row binding, AES-256-GCM);
//! `keyring` holds the master keys, their file, and the seal/open/rewrap and
//! checkpoint signing that use them; `file` reads the private keyring file and
//! writes files atomically. This module keeps the error type and the shared key
//! helpers, and re-exports the public names so `crate::crypto::X` keeps working.

mod envelope;
mod file;
mod keyring;

use std::io;
use std::path::PathBuf;

use zeroize::Zeroizing;

pub use self::envelope::{Binding, Sealed};
pub use self::file::replace_file;
pub use self::keyring::Keyring;

const KEY_LEN: usize = 32;

/// Errors from sealing, opening and keyring handling. No variant ever
/// carries key material.
#[derive(thiserror::Error, Debug)]
pub enum CryptoError {
    #[error("ciphertext is sealed under master key '{0}', which is not in the keyring")]
    UnknownKey(String),
    #[error("ciphertext failed authentication: it was altered or belongs to another record")]
    Decrypt,
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    #[error("I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("keyring file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error("keyring file {} already exists; refusing to overwrite it", .0.display())]
    AlreadyExists(PathBuf),
    #[error("AIRLOCK_MASTER_KEY is invalid: {0}")]
    BadEnvKey(String),
}

fn fill_random(buf: &mut [u8]) {
    getrandom::getrandom(buf).expect("the OS random number generator failed");
}

fn to_key(bytes: &[u8]) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    (bytes.len() == KEY_LEN).then(|| {
        key.copy_from_slice(bytes);
        key
    })
}
