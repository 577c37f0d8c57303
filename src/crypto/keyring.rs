//! The master keyring: master keys and their ids (`mk_` + 8 hex chars of the key's
//! SHA-256), the 0600 JSON keyring file, rotation, sealing and opening values under
//! the keys (see `envelope`), and the audit checkpoint signatures made with them.
//! Keys only ever live in `Zeroizing` buffers and never appear in `Debug` output.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::Mac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::envelope::{decrypt, encrypt};
use super::file::{key_file_err, read_private, write_atomic};
use super::{Binding, CryptoError, KEY_LEN, Sealed, fill_random, to_key};

/// What the audit checkpoint key is derived from a master key under. A label of its own
/// keeps the derived key apart from every other use of the master key.
const CHECKPOINT_KEY_LABEL: &[u8] = b"airlock/v1/audit-checkpoint-key";

type HmacSha256 = hmac::Hmac<Sha256>;

/// An HMAC under the checkpoint key of `mk`, ready for the message.
fn checkpoint_mac(mk: &MasterKey) -> HmacSha256 {
    let new = |key: &[u8]| <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    let mut derive = new(&mk.key[..]);
    derive.update(CHECKPOINT_KEY_LABEL);
    let derived = Zeroizing::new(<[u8; KEY_LEN]>::from(derive.finalize().into_bytes()));
    new(&derived[..])
}

fn kid_for(key: &[u8; KEY_LEN]) -> String {
    format!("mk_{}", hex::encode(&Sha256::digest(key)[..4]))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[derive(Clone)]
struct MasterKey {
    kid: String,
    key: Zeroizing<[u8; KEY_LEN]>,
    created_at: u64,
}

impl MasterKey {
    fn new(key: Zeroizing<[u8; KEY_LEN]>, created_at: u64) -> Self {
        MasterKey { kid: kid_for(&key), key, created_at }
    }

    fn fresh() -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut key[..]);
        Self::new(key, now())
    }
}

/// Master keys by id; one is active (used for wrapping), all can unwrap.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<MasterKey>,
    active: String,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("active", &self.active).field("kids", &self.kids().collect::<Vec<_>>()).finish()
    }
}

/// On-disk form of the keyring file.
#[derive(Serialize, Deserialize)]
struct KeyFileDoc {
    active: String,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct KeyEntry {
    kid: String,
    key: String,
    created_at: u64,
}

impl KeyEntry {
    fn parse(&self) -> Result<MasterKey, String> {
        let bytes = B64.decode(&self.key).map(Zeroizing::new);
        let bytes = bytes.map_err(|_| format!("key '{}' is not valid base64", self.kid))?;
        let key = to_key(&bytes).ok_or_else(|| format!("key '{}' is not 32 bytes", self.kid))?;
        let mk = MasterKey::new(key, self.created_at);
        if mk.kid != self.kid {
            return Err(format!("key listed as '{}' has id '{}'; the file is corrupt", self.kid, mk.kid));
        }
        Ok(mk)
    }
}

impl Keyring {
    fn single(mk: MasterKey) -> Keyring {
        Keyring { active: mk.kid.clone(), keys: vec![mk] }
    }

    fn validated(keys: Vec<MasterKey>, active: String) -> Result<Keyring, String> {
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.kid == k.kid) {
                return Err(format!("key '{}' is listed twice", k.kid));
            }
        }
        let ring = Keyring { keys, active };
        if !ring.has_kid(&ring.active) {
            return Err(format!("active key '{}' is not among the keys", ring.active));
        }
        Ok(ring)
    }

    fn key(&self, kid: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    fn active_key(&self) -> &MasterKey {
        self.key(&self.active).expect("keyring invariant: active key is present")
    }

    /// A keyring with one fresh random master key, active.
    pub fn generate() -> Keyring {
        Self::single(MasterKey::fresh())
    }

    /// Generate a keyring and write it to a new 0600 file at `path`.
    pub fn create_file(path: &Path) -> Result<Keyring, CryptoError> {
        let ring = Self::generate();
        write_atomic(path, &ring.to_json(), false)?;
        Ok(ring)
    }

    /// Load a keyring file; refuses files readable or writable by group/others.
    pub fn load_file(path: &Path) -> Result<Keyring, CryptoError> {
        let bytes = read_private(path)?;
        Self::from_json(&bytes).map_err(|reason| key_file_err(path, reason))
    }

    /// A single-key keyring from `AIRLOCK_MASTER_KEY` (base64 of 32 bytes).
    pub fn from_env_value(b64: &str) -> Result<Keyring, CryptoError> {
        let bad = |r: String| CryptoError::BadEnvKey(r);
        let bytes = B64.decode(b64.trim()).map(Zeroizing::new);
        let bytes = bytes.map_err(|_| bad("not valid base64 (standard alphabet)".into()))?;
        let key = to_key(&bytes).ok_or_else(|| bad(format!("decodes to {} bytes; expected 32", bytes.len())))?;
        Ok(Self::single(MasterKey::new(key, now())))
    }

    /// A copy with one new key added and made active; old keys stay for reading.
    pub fn rotated(&self) -> Keyring {
        let mk = loop {
            let mk = MasterKey::fresh();
            if !self.has_kid(&mk.kid) {
                break mk;
            }
        };
        let mut ring = self.clone();
        ring.active = mk.kid.clone();
        ring.keys.push(mk);
        ring
    }

    /// Write the keyring atomically (temp file, fsync, rename) with mode 0600.
    pub fn write_file(&self, path: &Path) -> Result<(), CryptoError> {
        write_atomic(path, &self.to_json(), true)
    }

    pub fn active_kid(&self) -> &str {
        &self.active
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.kid.as_str())
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.key(kid).is_some()
    }

    fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let entry =
            |k: &MasterKey| KeyEntry { kid: k.kid.clone(), key: B64.encode(&k.key[..]), created_at: k.created_at };
        let doc = KeyFileDoc { active: self.active.clone(), keys: self.keys.iter().map(entry).collect() };
        // Pre-size so the buffer never reallocates and leaves key copies behind.
        let mut buf = Zeroizing::new(Vec::with_capacity(256 + 256 * self.keys.len()));
        serde_json::to_writer_pretty(&mut *buf, &doc).expect("serializing to memory cannot fail");
        buf.push(b'\n');
        buf
    }

    fn from_json(bytes: &[u8]) -> Result<Keyring, String> {
        // serde_json messages can quote input, so report only kind and position.
        let doc: KeyFileDoc = serde_json::from_slice(bytes).map_err(|e| {
            format!("not a valid keyring ({:?} error at line {}, column {})", e.classify(), e.line(), e.column())
        })?;
        let keys = doc.keys.iter().map(KeyEntry::parse).collect::<Result<Vec<_>, _>>()?;
        Self::validated(keys, doc.active.clone())
    }

    /// Seal `plaintext` for row `b` under a fresh data key.
    pub fn seal(&self, b: &Binding, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let mut dk = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut dk[..]);
        let ciphertext = encrypt(&dk, plaintext, &b.value_aad()?)?;
        self.wrap(b, &dk, ciphertext)
    }

    /// Open a sealed value for row `b`.
    pub fn open(&self, b: &Binding, s: &Sealed) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let dk = self.unwrap(b, s)?;
        decrypt(&dk, &s.ciphertext, &b.value_aad()?)
    }

    /// Re-wrap the data key under the active master key; ciphertext unchanged.
    pub fn rewrap(&self, b: &Binding, s: &Sealed) -> Result<Sealed, CryptoError> {
        let dk = self.unwrap(b, s)?;
        self.wrap(b, &dk, s.ciphertext.clone())
    }

    /// Signs an audit checkpoint under the active master key: (key id, hex MAC).
    pub fn sign_checkpoint(&self, message: &[u8]) -> (String, String) {
        let mk = self.active_key();
        let mut mac = checkpoint_mac(mk);
        mac.update(message);
        (mk.kid.clone(), hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether `mac_hex` is the checkpoint MAC of `message` under master key `kid`
    /// (compared in constant time); `UnknownKey` if the keyring lacks that key.
    pub fn verify_checkpoint(&self, kid: &str, message: &[u8], mac_hex: &str) -> Result<bool, CryptoError> {
        let mk = self.key(kid).ok_or_else(|| CryptoError::UnknownKey(kid.to_owned()))?;
        let Ok(expected) = hex::decode(mac_hex) else { return Ok(false) };
        let mut mac = checkpoint_mac(mk);
        mac.update(message);
        Ok(mac.verify_slice(&expected).is_ok())
    }

    fn wrap(&self, b: &Binding, dk: &[u8; KEY_LEN], ciphertext: Vec<u8>) -> Result<Sealed, CryptoError> {
        let mk = self.active_key();
        let wrapped_key = encrypt(&mk.key, dk, &b.wrap_aad(&mk.kid)?)?;
        Ok(Sealed { kid: mk.kid.clone(), wrapped_key, ciphertext })
    }

    fn unwrap(&self, b: &Binding, s: &Sealed) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let mk = self.key(&s.kid).ok_or_else(|| CryptoError::UnknownKey(s.kid.clone()))?;
        let dk = decrypt(&mk.key, &s.wrapped_key, &b.wrap_aad(&s.kid)?)?;
        to_key(&dk).ok_or(CryptoError::Malformed("unwrapped data key has the wrong length"))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn bind<'a>(tenant: &'a str, path: &'a str, version: i64) -> Binding<'a> {
        Binding { tenant, path, version }
    }

    #[test]
    fn round_trip() {
        let ring = Keyring::generate();
        let b = bind("acme", "db/password", 3);
        let s = ring.seal(&b, b"hunter2").unwrap();
        assert_eq!(s.kid, ring.active_kid());
        assert_eq!(&ring.open(&b, &s).unwrap()[..], b"hunter2");
        assert_eq!(&ring.open(&b, &ring.seal(&b, b"").unwrap()).unwrap()[..], b"");
    }

    #[test]
    fn wrong_binding_fails() {
        let ring = Keyring::generate();
        let s = ring.seal(&bind("acme", "db/pw", 1), b"v").unwrap();
        for b in [bind("evil", "db/pw", 1), bind("acme", "db/pw2", 1), bind("acme", "db/pw", 2)] {
            assert!(matches!(ring.open(&b, &s), Err(CryptoError::Decrypt)), "{b:?}");
        }
        let nul = bind("acme\0db", "pw", 1);
        assert!(matches!(ring.seal(&nul, b"v"), Err(CryptoError::Malformed(_))));
    }

    #[test]
    fn swapped_ciphertext_fails() {
        let ring = Keyring::generate();
        let b = bind("acme", "k", 1);
        let s1 = ring.seal(&b, b"one").unwrap();
        let s2 = ring.seal(&b, b"two").unwrap();
        let mixed = Sealed { ciphertext: s2.ciphertext.clone(), ..s1.clone() };
        assert!(matches!(ring.open(&b, &mixed), Err(CryptoError::Decrypt)));
        let mixed = Sealed { wrapped_key: s2.wrapped_key, ..s1 };
        assert!(matches!(ring.open(&b, &mixed), Err(CryptoError::Decrypt)));
    }

    #[test]
    fn tampering_one_byte_fails() {
        let ring = Keyring::generate();
        let b = bind("acme", "k", 1);
        let s = ring.seal(&b, b"secret value").unwrap();
        for i in 0..s.ciphertext.len() {
            let mut t = s.clone();
            t.ciphertext[i] ^= 1;
            assert!(matches!(ring.open(&b, &t), Err(CryptoError::Decrypt)));
        }
        let mut t = s.clone();
        t.wrapped_key[20] ^= 0x80;
        assert!(matches!(ring.open(&b, &t), Err(CryptoError::Decrypt)));
        t.wrapped_key.truncate(5);
        assert!(matches!(ring.open(&b, &t), Err(CryptoError::Malformed(_))));
    }

    #[test]
    fn rewrap_after_rotation() {
        let old = Keyring::generate();
        let b = bind("acme", "k", 7);
        let s = old.seal(&b, b"value").unwrap();
        let new = old.rotated();
        assert_ne!(new.active_kid(), old.active_kid());
        assert!(new.has_kid(old.active_kid()));
        assert_eq!(new.kids().count(), 2);
        assert_eq!(&new.open(&b, &s).unwrap()[..], b"value");
        let r = new.rewrap(&b, &s).unwrap();
        assert_eq!(r.kid, new.active_kid());
        assert_eq!(r.ciphertext, s.ciphertext);
        assert_eq!(&new.open(&b, &r).unwrap()[..], b"value");
        // The old ring lacks the new kid.
        match old.open(&b, &r) {
            Err(e @ CryptoError::UnknownKey(_)) => {
                assert!(e.to_string().contains(new.active_kid()))
            }
            other => panic!("expected UnknownKey, got {other:?}"),
        }
    }

    #[test]
    fn unknown_kid() {
        let b = bind("acme", "k", 1);
        let s = Keyring::generate().seal(&b, b"v").unwrap();
        let other = Keyring::generate();
        assert!(matches!(other.open(&b, &s), Err(CryptoError::UnknownKey(k)) if k == s.kid));
        assert!(matches!(other.rewrap(&b, &s), Err(CryptoError::UnknownKey(_))));
    }

    #[test]
    fn kid_format() {
        let ring = Keyring::generate();
        let kid = ring.active_kid();
        assert_eq!(kid.len(), 11);
        assert!(kid.starts_with("mk_"));
        assert!(kid[3..].chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
        assert_eq!(kid, kid_for(&ring.keys[0].key));
    }

    #[test]
    fn file_round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let ring = Keyring::create_file(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(Keyring::create_file(&path), Err(CryptoError::AlreadyExists(_))));

        let rotated = Keyring::load_file(&path).unwrap().rotated();
        rotated.write_file(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = Keyring::load_file(&path).unwrap();
        assert_eq!(loaded.active_kid(), rotated.active_kid());
        assert_eq!(loaded.kids().collect::<Vec<_>>(), rotated.kids().collect::<Vec<_>>());
        assert_eq!(loaded.keys[0].created_at, ring.keys[0].created_at);

        let b = bind("t", "p", 1);
        let s = ring.seal(&b, b"x").unwrap();
        assert_eq!(&loaded.open(&b, &s).unwrap()[..], b"x");
        // No temp files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn world_readable_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        Keyring::generate().write_file(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keyring::load_file(&path).unwrap_err();
        assert!(matches!(err, CryptoError::KeyFile { .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn corrupt_file_errors_hide_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let key = B64.encode([7u8; 32]);
        let bad = format!(
            r#"{{"active":"mk_00000000","keys":[{{"kid":"mk_00000000","key":"{key}","created_at":"{key}"}}]}}"#
        );
        fs::write(&path, &bad).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = Keyring::load_file(&path).unwrap_err().to_string();
        assert!(!err.contains(&key), "{err}");
        fs::write(&path, bad.replace(&format!("\"created_at\":\"{key}\""), "\"created_at\":1")).unwrap();
        let err = Keyring::load_file(&path).unwrap_err().to_string();
        assert!(err.contains("corrupt") && !err.contains(&key), "{err}");
    }

    #[test]
    fn env_value() {
        let key = B64.encode([9u8; 32]);
        let ring = Keyring::from_env_value(&format!("{key}\n")).unwrap();
        assert_eq!(ring.active_kid(), kid_for(&[9u8; 32]));
        let short = B64.encode([9u8; 16]);
        for bad in [short.as_str(), "not base64!!"] {
            let err = Keyring::from_env_value(bad).unwrap_err();
            assert!(matches!(err, CryptoError::BadEnvKey(_)));
            assert!(!err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn checkpoint_signatures() {
        let ring = Keyring::generate();
        let (kid, mac) = ring.sign_checkpoint(b"t1 7 abcd");
        assert_eq!(kid, ring.active_kid());
        assert!(ring.verify_checkpoint(&kid, b"t1 7 abcd", &mac).unwrap());
        assert!(!ring.verify_checkpoint(&kid, b"t1 6 abcd", &mac).unwrap(), "another message");
        assert!(!ring.verify_checkpoint(&kid, b"t1 7 abcd", &mac[2..]).unwrap(), "a cut MAC");
        assert!(!ring.verify_checkpoint(&kid, b"t1 7 abcd", "not hex").unwrap());
        let other = Keyring::generate();
        assert!(matches!(other.verify_checkpoint(&kid, b"t1 7 abcd", &mac), Err(CryptoError::UnknownKey(_))));
        // Old keys stay able to verify after a rotation; new checkpoints use the new key.
        let rotated = ring.rotated();
        assert!(rotated.verify_checkpoint(&kid, b"t1 7 abcd", &mac).unwrap());
        assert_eq!(rotated.sign_checkpoint(b"x").0, rotated.active_kid());
        // The MAC is keyed by a derived key, neither the master key itself nor a plain hash.
        let key = &ring.keys[0].key[..];
        assert!(!mac.contains(&hex::encode(key)));
        let plain = <HmacSha256 as Mac>::new_from_slice(key).unwrap();
        assert_ne!(hex::encode(plain.chain_update(b"t1 7 abcd").finalize().into_bytes()), mac);
    }

    #[test]
    fn debug_has_no_key_bytes() {
        let ring = Keyring::generate().rotated();
        let s = ring.seal(&bind("t", "p", 1), b"plaintext").unwrap();
        let dbg = format!("{ring:?} {s:?} {:#?}", s);
        for k in &ring.keys {
            assert!(!dbg.contains(&B64.encode(&k.key[..])), "{dbg}");
            assert!(!dbg.contains(&hex::encode(&k.key[..])), "{dbg}");
            assert!(dbg.contains(&k.kid));
        }
        assert!(!dbg.contains(&format!("{:?}", s.ciphertext)), "{dbg}");
        assert!(dbg.contains("ciphertext_len"));
    }
}
