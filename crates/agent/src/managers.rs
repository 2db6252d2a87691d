//! The managers an agent may open its session with, and where to try next.
//!
//! ```text
//!  start: configured ∪ STATE_DIR/managers.json
//!  session message `managers` ──► configured ∪ received (learned ones the
//!                                  cluster no longer names are dropped)
//!  refusal with x-stackd-leader ──► that address next (added if unknown)
//!  any change ──► STATE_DIR/managers.json (written atomically)
//! ```
//!
//! The configured addresses always stay: they are what the operator gave,
//! and the only way back into a cluster whose managers all changed address.
//! Addresses compare without an `https://` prefix or a trailing `/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, warn};

/// The file, in the state directory, that keeps the list across restarts.
pub const MANAGERS_FILE: &str = "managers.json";
/// The file, in the state directory, that keeps the highest restore
/// generation seen across restarts.
pub const GENERATION_FILE: &str = "restore-generation";

/// `host:port` of an address as configured (`host:port`, `https://host:port[/]`).
fn key(addr: &str) -> &str {
    let a = addr.trim();
    let a = match a.get(..8) {
        Some(p) if p.eq_ignore_ascii_case("https://") => &a[8..],
        _ => a,
    };
    a.strip_suffix('/').unwrap_or(a)
}

/// The manager list of the session loop.
pub(crate) struct Managers {
    configured: Vec<String>,
    list: Vec<String>,
    current: usize,
    file: Option<PathBuf>,
    tls: Arc<rustls::ClientConfig>,
    /// The highest restore generation a manager of the cluster announced
    /// (kept in `STATE_DIR/restore-generation`).
    generation: u64,
    generation_file: Option<PathBuf>,
}

impl Managers {
    /// The configured managers, then those `state_dir`'s file adds (unusable
    /// entries of the file are skipped with a warning). Must run within a
    /// tokio runtime (addresses are checked by making a lazy channel).
    pub(crate) fn new(configured: Vec<String>, state_dir: Option<&Path>, tls: Arc<rustls::ClientConfig>) -> Managers {
        let file = state_dir.map(|d| d.join(MANAGERS_FILE));
        let generation_file = state_dir.map(|d| d.join(GENERATION_FILE));
        let generation = generation_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let mut m = Managers {
            configured: configured.clone(),
            list: Vec::new(),
            current: 0,
            file,
            tls,
            generation,
            generation_file,
        };
        for a in configured {
            m.push(a);
        }
        for a in m.read_file() {
            if m.usable(&a) {
                m.push(a);
            }
        }
        m
    }

    /// Admits a manager that announces restore generation `theirs`: refused
    /// (`Err` with the generation known here) when it is lower than one
    /// seen before: that manager belongs to the cluster before a restore.
    /// A higher one is kept (and saved) from now on.
    pub(crate) fn admit(&mut self, theirs: u64) -> Result<(), u64> {
        if theirs < self.generation {
            return Err(self.generation);
        }
        if theirs > self.generation {
            self.generation = theirs;
            if let Some(f) = &self.generation_file
                && let Err(e) = write_atomic(f, &theirs)
            {
                warn!(path = %f.display(), error = %e, "cannot save the restore generation");
            }
        }
        Ok(())
    }

    /// The addresses, in the order they are tried.
    pub(crate) fn list(&self) -> &[String] {
        &self.list
    }

    /// The manager to try (or that serves the session).
    pub(crate) fn current(&self) -> &str {
        self.list.get(self.current).map(String::as_str).unwrap_or_default()
    }

    /// Moves on to the next manager of the list.
    pub(crate) fn advance(&mut self) {
        self.current = (self.current + 1) % self.list.len().max(1);
    }

    /// Makes `addr` (a refusing manager's leader hint) the next manager,
    /// adding it when unknown. Returns false when it is unusable (nothing changes).
    pub(crate) fn go_to(&mut self, addr: &str) -> bool {
        if let Some(i) = self.position(addr) {
            self.current = i;
            return true;
        }
        if !self.usable(addr) {
            return false;
        }
        self.push(addr.to_string());
        self.current = self.list.len() - 1;
        self.save();
        true
    }

    /// Merges the managers a session message names: the list becomes the
    /// configured addresses and `received` (order kept, new ones appended).
    /// An empty `received` (an older manager) changes nothing. Returns
    /// whether the list changed (it was then saved).
    pub(crate) fn merge(&mut self, received: &[String]) -> bool {
        if received.is_empty() {
            return false;
        }
        let received: Vec<&String> = received.iter().filter(|a| self.usable(a)).collect();
        let keep =
            |a: &str| self.configured.iter().any(|c| key(c) == key(a)) || received.iter().any(|r| key(r) == key(a));
        let mut list: Vec<String> = self.list.iter().filter(|a| keep(a)).cloned().collect();
        for r in received {
            if !list.iter().any(|a| key(a) == key(r)) {
                list.push(r.clone());
            }
        }
        if list == self.list {
            return false;
        }
        // Keep pointing at the same manager when it stays.
        let current = self.current().to_string();
        self.list = list;
        self.current = self.position(&current).unwrap_or(0);
        debug!(managers = ?self.list, "the manager list changed");
        self.save();
        true
    }

    fn position(&self, addr: &str) -> Option<usize> {
        self.list.iter().position(|a| key(a) == key(addr))
    }

    fn push(&mut self, addr: String) {
        if self.position(&addr).is_none() {
            self.list.push(addr);
        }
    }

    fn usable(&self, addr: &str) -> bool {
        match check_endpoint(addr, &self.tls) {
            Ok(()) => true,
            Err(e) => {
                warn!(address = %addr, error = %e, "ignoring a manager address");
                false
            }
        }
    }

    fn read_file(&self) -> Vec<String> {
        self.file.as_deref().and_then(Path::parent).map(saved_managers).unwrap_or_default()
    }

    /// Writes the list to the state file (when there is one), atomically.
    fn save(&self) {
        let Some(path) = &self.file else { return };
        if let Err(e) = write_atomic(path, &self.list) {
            warn!(path = %path.display(), error = %e, "cannot save the manager list");
        }
    }
}

/// The managers' addresses kept in `state_dir` ([`MANAGERS_FILE`]); none
/// when the file is missing or unreadable (with a warning).
pub fn saved_managers(state_dir: &Path) -> Vec<String> {
    let path = state_dir.join(MANAGERS_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the saved manager list");
            return Vec::new();
        }
    };
    serde_json::from_slice(&text).unwrap_or_else(|e| {
        warn!(path = %path.display(), error = %e, "ignoring an unreadable saved manager list");
        Vec::new()
    })
}

/// Keeps `list` in `state_dir` ([`MANAGERS_FILE`]), atomically: what
/// `stackd join` learns before the agent first runs.
pub fn save_managers(state_dir: &Path, list: &[String]) -> std::io::Result<()> {
    write_atomic(&state_dir.join(MANAGERS_FILE), list)
}

/// Writes `list` as JSON to `path` through a temporary file, synced and
/// renamed over it (the directory synced too): a crash leaves the old list
/// or the new one, never half of one.
fn write_atomic<T: serde::Serialize + ?Sized>(path: &Path, list: &T) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(list).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Checks a manager address (`host:port` or `https://host:port`; TLS only)
/// without connecting. Must run within a tokio runtime.
pub(crate) fn check_endpoint(addr: &str, tls: &Arc<rustls::ClientConfig>) -> Result<(), stackd_tls::ConnectError> {
    // A lazy channel validates the address without connecting.
    stackd_tls::lazy_channel(addr, tls.clone()).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> Arc<rustls::ClientConfig> {
        stackd_tls::testing::TestPki::new().client_config(None)
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn hints_and_messages_change_the_list_and_it_is_saved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Managers::new(strings(&["https://10.0.0.1:7946/"]), Some(dir.path()), tls());
        assert_eq!(m.list(), ["https://10.0.0.1:7946/"]);
        assert!(!dir.path().join(MANAGERS_FILE).exists(), "nothing changed: nothing written");

        // A hint to an unknown manager: it is next, and remembered.
        assert!(m.go_to("10.0.0.2:7946"));
        assert_eq!(m.current(), "10.0.0.2:7946");
        // A hint to a known one, in another spelling: selected, not added.
        assert!(m.go_to("10.0.0.1:7946"));
        assert_eq!(m.current(), "https://10.0.0.1:7946/");
        assert!(!m.go_to("http://10.0.0.3:1"), "plaintext is never dialed");
        assert_eq!(m.list().len(), 2);
        m.advance();
        assert_eq!(m.current(), "10.0.0.2:7946");

        // A message: the cluster's managers replace the learned ones; the
        // configured one stays; the current one is still current.
        assert!(m.merge(&strings(&["10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.4:7946", "not an address"])));
        assert_eq!(m.list(), ["https://10.0.0.1:7946/", "10.0.0.2:7946", "10.0.0.4:7946"]);
        assert_eq!(m.current(), "10.0.0.2:7946");
        assert!(!m.merge(&strings(&["10.0.0.4:7946", "10.0.0.2:7946"])), "same set");
        assert!(!m.merge(&[]), "an empty list (an older manager) changes nothing");
        assert!(m.merge(&strings(&["10.0.0.4:7946"])));
        assert_eq!(m.list(), ["https://10.0.0.1:7946/", "10.0.0.4:7946"]);
        assert_eq!(m.current(), "https://10.0.0.1:7946/", "the current manager left: back to the first");

        // A restart starts from the configuration and the saved list.
        let saved: Vec<String> =
            serde_json::from_slice(&std::fs::read(dir.path().join(MANAGERS_FILE)).expect("saved")).expect("json");
        assert_eq!(saved, ["https://10.0.0.1:7946/", "10.0.0.4:7946"]);
        let again = Managers::new(strings(&["10.0.0.9:7946"]), Some(dir.path()), tls());
        assert_eq!(again.list(), ["10.0.0.9:7946", "https://10.0.0.1:7946/", "10.0.0.4:7946"]);
    }

    #[tokio::test]
    async fn managers_of_an_older_restore_generation_are_refused_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Managers::new(strings(&["10.0.0.1:7946"]), Some(dir.path()), tls());
        assert_eq!(m.admit(0), Ok(()), "a cluster never restored");
        assert!(!dir.path().join(GENERATION_FILE).exists(), "nothing new: nothing written");
        assert_eq!(m.admit(1), Ok(()), "the restored cluster");
        assert_eq!(m.admit(0), Err(1), "a manager of the cluster before the restore");
        let mut again = Managers::new(strings(&["10.0.0.1:7946"]), Some(dir.path()), tls());
        assert_eq!(again.admit(0), Err(1), "remembered across a restart");
        assert_eq!(again.admit(2), Ok(()));
    }

    #[tokio::test]
    async fn an_unreadable_saved_list_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(MANAGERS_FILE), b"{not json").expect("write");
        let m = Managers::new(strings(&["10.0.0.1:7946"]), Some(dir.path()), tls());
        assert_eq!(m.list(), ["10.0.0.1:7946"]);
        std::fs::write(dir.path().join(MANAGERS_FILE), br#"["http://10.0.0.2:1", "10.0.0.3:7946"]"#).expect("write");
        let m = Managers::new(strings(&["10.0.0.1:7946"]), Some(dir.path()), tls());
        assert_eq!(m.list(), ["10.0.0.1:7946", "10.0.0.3:7946"], "unusable entries are skipped");
        let m = Managers::new(strings(&["10.0.0.1:7946"]), None, tls());
        assert_eq!(m.list(), ["10.0.0.1:7946"]);
    }
}
