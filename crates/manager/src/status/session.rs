//! The status page's sessions: a random id in a cookie, the token it was
//! opened with on the server side, an expiry; and the failed sign-ins per
//! client address, to slow down guessing. Time is an argument (ms).
//!
//! Sessions are kept by the SHA-256 of their id: looking one up reveals
//! nothing about the ids kept through its timing. They live in memory: a
//! restart of the manager signs everyone out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// How long a session lasts after sign-in.
pub(crate) const SESSION_TTL_MS: u64 = 8 * 3600 * 1000;
/// Sessions kept at most; the oldest goes first.
const MAX_SESSIONS: usize = 1024;
/// Failed sign-ins allowed per client address and window.
pub(crate) const MAX_FAILURES: u32 = 10;
/// The window failed sign-ins are counted in.
const FAILURE_WINDOW_MS: u64 = 60_000;
/// Client addresses whose failures are kept at most.
const MAX_TRACKED: usize = 4096;

/// What a session stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// The id of the client token it was opened with.
    pub token_id: String,
    /// When it ends (ms).
    pub expires_at: u64,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<[u8; 32], Session>,
    /// Per client address: the window's start and its failures.
    failures: HashMap<IpAddr, (u64, u32)>,
}

/// The sessions of one status page.
#[derive(Default)]
pub(crate) struct Sessions {
    inner: Mutex<Inner>,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// A new session id: 32 random bytes, in hex.
fn new_id() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::thread_rng().r#gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for the token `token_id`; returns its id (the cookie's value).
    pub(crate) fn open(&self, token_id: &str, now: u64) -> String {
        let id = new_id();
        let mut inner = self.lock();
        inner.sessions.retain(|_, s| s.expires_at > now);
        if inner.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = inner.sessions.iter().min_by_key(|(_, s)| s.expires_at).map(|(k, _)| *k)
        {
            inner.sessions.remove(&oldest);
        }
        inner.sessions.insert(key(&id), Session { token_id: token_id.into(), expires_at: now + SESSION_TTL_MS });
        id
    }

    /// The session `id` stands for, unless it is unknown or expired (an
    /// expired one is dropped).
    pub(crate) fn get(&self, id: &str, now: u64) -> Option<Session> {
        let k = key(id);
        let mut inner = self.lock();
        match inner.sessions.get(&k) {
            Some(s) if s.expires_at > now => Some(s.clone()),
            Some(_) => {
                inner.sessions.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id` (sign-out, a revoked token).
    pub(crate) fn close(&self, id: &str) {
        self.lock().sessions.remove(&key(id));
    }

    /// Whether `ip` may try to sign in now: fewer than [`MAX_FAILURES`]
    /// failures in the current window.
    pub(crate) fn may_try(&self, ip: IpAddr, now: u64) -> bool {
        match self.lock().failures.get(&ip) {
            Some((start, n)) => now >= start + FAILURE_WINDOW_MS || *n < MAX_FAILURES,
            None => true,
        }
    }

    /// Counts a failed sign-in of `ip`.
    pub(crate) fn failed(&self, ip: IpAddr, now: u64) {
        let mut inner = self.lock();
        if inner.failures.len() >= MAX_TRACKED {
            inner.failures.retain(|_, (start, _)| now < *start + FAILURE_WINDOW_MS);
        }
        let entry = inner.failures.entry(ip).or_insert((now, 0));
        if now >= entry.0 + FAILURE_WINDOW_MS {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// The value of the cookie `name` in a `Cookie` header.
pub(crate) fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|pair| pair.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_expires_and_closes() {
        let s = Sessions::default();
        let id = s.open("tok1", 1000);
        assert_eq!(id.len(), 64);
        assert_ne!(id, s.open("tok1", 1000), "ids are random");
        assert_eq!(s.get(&id, 2000).map(|x| x.token_id), Some("tok1".to_string()));
        assert_eq!(s.get("nope", 2000), None);
        assert_eq!(s.get(&id, 1000 + SESSION_TTL_MS), None, "expired");
        assert_eq!(s.get(&id, 2000), None, "an expired session is gone");
        let id = s.open("tok2", 1000);
        s.close(&id);
        assert_eq!(s.get(&id, 2000), None);
    }

    #[test]
    fn failed_sign_ins_are_limited_per_address_and_window() {
        let s = Sessions::default();
        let ip: IpAddr = "10.0.0.9".parse().expect("ip");
        let other: IpAddr = "10.0.0.8".parse().expect("ip");
        for _ in 0..MAX_FAILURES {
            assert!(s.may_try(ip, 0));
            s.failed(ip, 0);
        }
        assert!(!s.may_try(ip, 1000));
        assert!(s.may_try(other, 1000));
        assert!(s.may_try(ip, FAILURE_WINDOW_MS), "a new window");
        s.failed(ip, FAILURE_WINDOW_MS);
        assert!(s.may_try(ip, FAILURE_WINDOW_MS + 1));
    }

    #[test]
    fn cookies_are_found_by_name() {
        assert_eq!(cookie("a=1; __Host-stackd-session=abc; b=2", "__Host-stackd-session"), Some("abc"));
        assert_eq!(cookie("a=1", "__Host-stackd-session"), None);
        assert_eq!(cookie("", "x"), None);
    }
}
