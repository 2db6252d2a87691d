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

    /// Counts a sign-in attempt of `ip` before its token is checked, so
    /// that attempts made at once count together; false when the address
    /// (an IPv6 one by its /64) had [`MAX_FAILURES`] in the current window,
    /// or when too many addresses are being counted to count one more.
    pub(crate) fn attempt(&self, ip: IpAddr, now: u64) -> bool {
        let client = client_of(ip);
        let mut inner = self.lock();
        if !inner.failures.contains_key(&client) && inner.failures.len() >= MAX_TRACKED {
            inner.failures.retain(|_, (start, _)| now < *start + FAILURE_WINDOW_MS);
            if inner.failures.len() >= MAX_TRACKED {
                return false;
            }
        }
        let entry = inner.failures.entry(client).or_insert((now, 0));
        if now >= entry.0 + FAILURE_WINDOW_MS {
            *entry = (now, 0);
        }
        if entry.1 >= MAX_FAILURES {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// The attempt of `ip` succeeded: it does not count as a failure.
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        if let Some(entry) = self.lock().failures.get_mut(&client_of(ip)) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

/// Who is counted for failed sign-ins: an IPv4 address, or an IPv6 /64
/// (one host usually holds a whole /64).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
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
            assert!(s.attempt(ip, 0));
        }
        assert!(!s.attempt(ip, 1000), "attempts count before they are checked");
        assert!(s.attempt(other, 1000));
        s.succeeded(other);
        assert!(s.attempt(ip, FAILURE_WINDOW_MS), "a new window");
        // An IPv6 host is counted by its /64.
        for i in 0..MAX_FAILURES {
            assert!(s.attempt(format!("2001:db8::{i:x}").parse().expect("ip"), 0));
        }
        assert!(!s.attempt("2001:db8::ffff".parse().expect("ip"), 0));
        assert!(s.attempt("2001:db8:0:1::1".parse().expect("ip"), 0), "another /64");
    }

    #[test]
    fn a_success_does_not_count_and_the_map_stays_bounded() {
        let s = Sessions::default();
        let ip: IpAddr = "10.0.0.7".parse().expect("ip");
        for _ in 0..3 * MAX_FAILURES {
            assert!(s.attempt(ip, 0));
            s.succeeded(ip);
        }
        // 10.0.0.7 is counted already: the rest fill the map.
        for i in 0..MAX_TRACKED as u32 - 1 {
            assert!(s.attempt(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i + 1000)), 0));
        }
        assert!(!s.attempt("192.0.2.1".parse().expect("ip"), 10), "full within the window");
        assert!(s.attempt("192.0.2.1".parse().expect("ip"), FAILURE_WINDOW_MS), "room after it");
    }

    #[test]
    fn cookies_are_found_by_name() {
        assert_eq!(cookie("a=1; __Host-stackd-session=abc; b=2", "__Host-stackd-session"), Some("abc"));
        assert_eq!(cookie("a=1", "__Host-stackd-session"), None);
        assert_eq!(cookie("", "x"), None);
    }
}
