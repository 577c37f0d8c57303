//! Console sessions: an API key, given once in the sign-in form, is exchanged for a random
//! 256-bit session id in a cookie. The server keeps only the id's SHA-256 and the key's
//! hash (never the key), in memory: a session is per server process, and ends after
//! `--console-session-idle` without a request, on sign-out, or when its key may no longer
//! be used (revoked, expired).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie that carries the session id.
pub const COOKIE: &str = "airlock_console";
/// Sessions one process keeps at most; a sign-in beyond it is refused until some expire.
const MAX_SESSIONS: usize = 10_000;
/// The default of `--console-session-idle`.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);

/// What a session stands for.
#[derive(Clone)]
pub struct Session {
    /// The SHA-256 of the API key it was opened with (as the credentials table has it).
    pub credential_hash: String,
    /// The token every form of this session carries (`csrf`).
    pub csrf: String,
    last_seen: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(..)")
    }
}

/// The sessions of this process, by the SHA-256 of their id.
pub struct Sessions {
    idle: Duration,
    open: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("idle", &self.idle).finish_non_exhaustive()
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("the OS random number generator failed");
    hex::encode(bytes)
}

fn key_of(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions { idle, open: Mutex::new(HashMap::new()) }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// A new session for the credential whose secret hashes to `credential_hash`: its id
    /// (for the cookie), or `None` when this process holds as many as it may.
    pub fn open(&self, credential_hash: String) -> Option<String> {
        let mut open = self.open.lock().expect("console sessions lock poisoned");
        let idle = self.idle;
        open.retain(|_, s| s.last_seen.elapsed() < idle);
        if open.len() >= MAX_SESSIONS {
            return None;
        }
        let id = random_hex();
        open.insert(key_of(&id), Session { credential_hash, csrf: random_hex(), last_seen: Instant::now() });
        Some(id)
    }

    /// The session `id` names, if it has not been idle too long; the request keeps it alive.
    pub fn touch(&self, id: &str) -> Option<Session> {
        let mut open = self.open.lock().expect("console sessions lock poisoned");
        let key = key_of(id);
        let session = open.get_mut(&key)?;
        if session.last_seen.elapsed() >= self.idle {
            open.remove(&key);
            return None;
        }
        session.last_seen = Instant::now();
        Some(session.clone())
    }

    pub fn end(&self, id: &str) {
        self.open.lock().expect("console sessions lock poisoned").remove(&key_of(id));
    }

    /// Forgets the sessions idle too long.
    pub fn sweep(&self) {
        let idle = self.idle;
        self.open.lock().expect("console sessions lock poisoned").retain(|_, s| s.last_seen.elapsed() < idle);
    }
}

/// Whether `sent` is the session's CSRF token (compared in constant time).
pub fn csrf_matches(session: &Session, sent: Option<&str>) -> bool {
    sent.is_some_and(|t| bool::from(t.as_bytes().ct_eq(session.csrf.as_bytes())))
}

/// The session id in the request's cookies, if any.
pub fn cookie(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_end_on_sign_out() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let id = sessions.open("h".into()).unwrap();
        assert_eq!(id.len(), 64);
        let s = sessions.touch(&id).unwrap();
        assert!(csrf_matches(&s, Some(&s.csrf)));
        assert!(!csrf_matches(&s, Some("x")) && !csrf_matches(&s, None));
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.touch(&id).is_none(), "idle too long");
        let id = sessions.open("h".into()).unwrap();
        sessions.end(&id);
        assert!(sessions.touch(&id).is_none());
        assert!(format!("{:?}", sessions.touch(&sessions.open("h".into()).unwrap())).contains("Session(..)"));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_must_look_like_an_id() {
        let mut h = http::HeaderMap::new();
        let id = "a".repeat(64);
        h.insert(http::header::COOKIE, format!("x=1; {COOKIE}={id}; y=2").parse().unwrap());
        assert_eq!(cookie(&h), Some(id));
        h.insert(http::header::COOKIE, format!("{COOKIE}=<script>").parse().unwrap());
        assert_eq!(cookie(&h), None);
    }
}
