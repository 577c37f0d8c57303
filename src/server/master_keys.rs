//! The master keyring as the running server holds it. The keyring file can change under a
//! running server (`airlock server rekey` adds a key and re-wraps every data key), so the
//! server re-reads the file when it meets a key id it does not know and, every few seconds,
//! when the file has changed, switching new writes to the newest active key.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use zeroize::Zeroizing;

use crate::crypto::{Binding, CryptoError, Keyring, Sealed};

pub struct MasterKeys {
    ring: RwLock<Arc<Keyring>>,
    /// None when the key came from `AIRLOCK_MASTER_KEY`.
    file: Option<PathBuf>,
    loaded_mtime: RwLock<Option<SystemTime>>,
}

impl MasterKeys {
    pub fn from_file(path: PathBuf) -> Result<MasterKeys, CryptoError> {
        let ring = Keyring::load_file(&path)?;
        let mtime = mtime(&path);
        Ok(MasterKeys { ring: RwLock::new(Arc::new(ring)), file: Some(path), loaded_mtime: RwLock::new(mtime) })
    }

    pub fn from_env(value: &str) -> Result<MasterKeys, CryptoError> {
        let ring = Keyring::from_env_value(value)?;
        Ok(MasterKeys { ring: RwLock::new(Arc::new(ring)), file: None, loaded_mtime: RwLock::new(None) })
    }

    pub fn current(&self) -> Arc<Keyring> {
        self.ring.read().expect("keyring lock poisoned").clone()
    }

    pub fn seal(&self, b: &Binding, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        self.current().seal(b, plaintext)
    }

    pub fn open(&self, b: &Binding, s: &Sealed) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let ring = self.current();
        if !ring.has_kid(&s.kid) {
            self.reload()?;
            return self.current().open(b, s);
        }
        ring.open(b, s)
    }

    /// Signs an audit checkpoint under the active key: (key id, hex MAC).
    pub fn sign_checkpoint(&self, message: &[u8]) -> (String, String) {
        self.current().sign_checkpoint(message)
    }

    /// Checks a checkpoint MAC; a key id not in the loaded keyring reads the file again
    /// first, like `open` (another process may have rotated the keyring).
    pub fn verify_checkpoint(&self, kid: &str, message: &[u8], mac_hex: &str) -> Result<bool, CryptoError> {
        if !self.current().has_kid(kid) {
            self.reload()?;
        }
        self.current().verify_checkpoint(kid, message, mac_hex)
    }

    /// Re-reads the keyring file if it changed since it was loaded.
    pub fn refresh_if_changed(&self) -> Result<(), CryptoError> {
        let Some(path) = &self.file else { return Ok(()) };
        if mtime(path) != *self.loaded_mtime.read().expect("keyring lock poisoned") {
            self.reload()?;
        }
        Ok(())
    }

    fn reload(&self) -> Result<(), CryptoError> {
        let Some(path) = &self.file else { return Ok(()) };
        let ring = Keyring::load_file(path)?;
        tracing::info!(active = ring.active_kid(), "master keyring reloaded");
        *self.loaded_mtime.write().expect("keyring lock poisoned") = mtime(path);
        *self.ring.write().expect("keyring lock poisoned") = Arc::new(ring);
        Ok(())
    }
}

fn mtime(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
