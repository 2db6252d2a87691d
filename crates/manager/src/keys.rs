//! The key the Raft data is sealed with on disk, and what wraps it.
//!
//! ```text
//!  DATA_DIR/raft/keys.json  0600  the data key, wrapped:
//!      {"format":1,"wrapped_by":"local"}                    by DATA_DIR/raft.kek
//!      {"format":1,"wrapped_by":"unlock_key","key_id":"…"}  by the cluster's unlock key
//!  DATA_DIR/raft.kek        0600  the local key encryption key (no autolock only)
//! ```
//!
//! - Every manager has a data key of its own, made the first time its Raft
//!   data is opened; the log's records and the snapshot file are sealed
//!   with it (`raft/wal.rs`, `raft/state_machine.rs`).
//! - Without autolock the data key is wrapped by a random key in a file of
//!   its own, outside `raft/`: a copy of the Raft data alone (a backup of
//!   that directory, a disk image of it) reveals no secret, and grepping the
//!   log finds none. Whoever has the whole data dir has the key, as in Swarm.
//! - With autolock (the cluster state holds an unlock key) the data key is
//!   wrapped by a key derived from the unlock key, and the local key file is
//!   deleted: the manager cannot start without being given the key
//!   ([`open`] says [`KeysError::Locked`]). Every manager follows the
//!   cluster's setting as soon as it applies it ([`follow`]).
//! - A change of wrapping writes `keys.json` anew (temporary file, fsync,
//!   rename): a crash leaves the old wrapping or the new one, never neither.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use stackd_tls::seal::{DataKey, Kek, SealError, UnlockKey};

use crate::util::{lock, write_atomic};

/// The file holding the wrapped data key, in the Raft dir.
const KEYS_FILE: &str = "keys.json";
/// The local key encryption key, in the data dir.
const KEK_FILE: &str = "raft.kek";
const FORMAT: u32 = 1;

/// Why the data key could not be opened or rewrapped.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A key file is not what this stackd writes.
    #[error("{path}: {why}")]
    Bad {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The local key encryption key is missing.
    #[error(
        "{kek} is missing: the raft data's key ({keys}) is wrapped by it; restore the file from a backup of this \
         data dir, or remove this manager (`stackctl node rm`) and join it again"
    )]
    MissingKek {
        /// The KEK file.
        kek: String,
        /// The keys file.
        keys: String,
    },
    /// The data key is wrapped by the unlock key, and none was given.
    #[error(
        "this manager is locked (autolock): its raft data opens only with the cluster's unlock key (key id \
         {key_id}); give it with `stackd unlock` or `stackctl cluster unlock`"
    )]
    Locked {
        /// The id of the key that opens it.
        key_id: String,
    },
    /// The unlock key given is not the one that wraps the data key.
    #[error(
        "wrong unlock key (key id {given}): this manager's raft data is locked with key id {key_id}; a manager \
         that was stopped while the key was rotated still opens with the key of before"
    )]
    WrongKey {
        /// The id of the key that opens it.
        key_id: String,
        /// The id of the key given.
        given: String,
    },
    /// Sealing failed (the random source).
    #[error("the raft data key: {0}")]
    Seal(#[from] SealError),
}

impl KeysError {
    /// Whether the manager should wait for a key rather than stop.
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Locked { .. } | Self::WrongKey { .. })
    }

    /// The id of the unlock key the manager waits for, when it is locked.
    pub fn locked_by(&self) -> Option<&str> {
        match self {
            Self::Locked { key_id } | Self::WrongKey { key_id, .. } => Some(key_id),
            _ => None,
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KeysError + '_ {
    move |source| KeysError::Io { path: path.display().to_string(), source }
}

#[derive(Debug, Serialize, Deserialize)]
struct KeysFile {
    format: u32,
    wrapped_by: WrappedBy,
    /// The unlock key's id, with `wrapped_by: unlock_key`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    key_id: String,
    /// The wrapped data key, base64.
    data_key: String,
    /// The Raft index of the applied state whose setting chose this
    /// wrapping: a state older than it (replayed at start, before the
    /// manager caught up) never changes it back.
    #[serde(default)]
    as_of: u64,
    /// Whether the Raft data may still hold plain records: only when this
    /// file was made for a log an earlier stackd wrote, until it is
    /// sealed. Plain data is refused otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    upgrading: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WrappedBy {
    Local,
    UnlockKey,
}

/// How the data key is wrapped now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wrapping {
    /// By the local key file.
    Local,
    /// By the unlock key with this id.
    Unlock(String),
}

/// A manager's open data key, and how it is kept.
#[derive(Debug, Clone)]
pub struct AtRest {
    data_dir: PathBuf,
    key: Arc<DataKey>,
    /// How the key is wrapped, and the index of the state that chose it.
    wrapping: Arc<Mutex<(Wrapping, u64)>>,
    /// Whether plain records and snapshots written before encryption at
    /// rest may be read (and sealed): from the start that made the key for
    /// an existing log until [`AtRest::upgraded`].
    upgrading: Arc<Mutex<bool>>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl AtRest {
    /// The data key.
    pub fn key(&self) -> Arc<DataKey> {
        self.key.clone()
    }

    /// How the data key is wrapped now.
    pub fn wrapping(&self) -> Wrapping {
        lock(&self.wrapping).0.clone()
    }

    /// Whether the Raft data may hold plain records of an earlier stackd,
    /// to be sealed now (see [`open`]).
    pub fn upgrading(&self) -> bool {
        *lock(&self.upgrading)
    }

    /// Says that the Raft data is sealed whole: plain data is refused from
    /// now on (a record nobody sealed was written by someone without the key).
    pub fn upgraded(&self) -> Result<(), KeysError> {
        let mut upgrading = lock(&self.upgrading);
        if !*upgrading {
            return Ok(());
        }
        let path = raft_dir(&self.data_dir).join(KEYS_FILE);
        let text = std::fs::read(&path).map_err(io(&path))?;
        let mut file: KeysFile = serde_json::from_slice(&text)
            .map_err(|e| KeysError::Bad { path: path.display().to_string(), why: e.to_string() })?;
        file.upgrading = false;
        write_keys(&self.data_dir, &file)?;
        *upgrading = false;
        Ok(())
    }

    /// Wraps the data key by `unlock` (autolock), or by a new local key
    /// file when `None`, as the applied state at Raft index `as_of` says;
    /// deletes the local key file once it wraps nothing. Does nothing when
    /// it is wrapped so already, or when a state after `as_of` chose the
    /// wrapping (a manager replaying its log at start sees old states).
    pub fn rewrap(&self, unlock: Option<&UnlockKey>, as_of: u64) -> Result<bool, KeysError> {
        let mut wrapping = lock(&self.wrapping);
        let want = match unlock {
            Some(k) => Wrapping::Unlock(k.id()),
            None => Wrapping::Local,
        };
        if wrapping.0 == want || as_of < wrapping.1 {
            return Ok(false);
        }
        let kek_path = self.data_dir.join(KEK_FILE);
        let file = match unlock {
            Some(k) => KeysFile {
                format: FORMAT,
                wrapped_by: WrappedBy::UnlockKey,
                key_id: k.id(),
                data_key: base64::Engine::encode(&b64(), self.key.wrap(&k.kek())?),
                as_of,
                upgrading: *lock(&self.upgrading),
            },
            None => {
                let kek = Kek::generate()?;
                write_atomic(&self.data_dir, KEK_FILE, format!("{}\n", kek.to_text()).as_bytes())
                    .map_err(io(&kek_path))?;
                KeysFile {
                    format: FORMAT,
                    wrapped_by: WrappedBy::Local,
                    key_id: String::new(),
                    data_key: base64::Engine::encode(&b64(), self.key.wrap(&kek)?),
                    as_of,
                    upgrading: *lock(&self.upgrading),
                }
            }
        };
        // The new wrapping is durable before the local key goes: a crash
        // between leaves a key file that wraps nothing, never a data key
        // that nothing opens.
        write_keys(&self.data_dir, &file)?;
        if unlock.is_some() {
            remove_kek(&kek_path)?;
        }
        *wrapping = (want, as_of);
        Ok(true)
    }
}

/// Deletes the local key file, if there is one.
fn remove_kek(path: &Path) -> Result<(), KeysError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

fn raft_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("raft")
}

fn write_keys(data_dir: &Path, file: &KeysFile) -> Result<(), KeysError> {
    let dir = raft_dir(data_dir);
    let path = dir.join(KEYS_FILE);
    let json = serde_json::to_vec_pretty(file)
        .map_err(|e| KeysError::Bad { path: path.display().to_string(), why: e.to_string() })?;
    write_atomic(&dir, KEYS_FILE, &json).map_err(io(&path))
}

/// Opens the data key of the manager in `data_dir`, making one (wrapped by
/// a new local key file) when its Raft data has none yet. `unlock`: the
/// cluster's unlock key, when the operator gave it.
///
/// # Errors
///
/// [`KeysError::Locked`] when the key is wrapped by an unlock key and none
/// was given, [`KeysError::WrongKey`] when another was; any other error is
/// a damaged or missing file.
pub fn open(data_dir: &Path, unlock: Option<&UnlockKey>) -> Result<AtRest, KeysError> {
    let dir = raft_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(KEYS_FILE);
    let kek_path = data_dir.join(KEK_FILE);
    let bad = |why: String| KeysError::Bad { path: path.display().to_string(), why };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A log already there was written before encryption at rest:
            // it is read once, and sealed, by this start.
            let upgrading = dir.join("log").exists() || dir.join("snapshots").exists();
            let at_rest = AtRest {
                data_dir: data_dir.to_path_buf(),
                key: Arc::new(DataKey::generate()?),
                // Nothing is written yet: `rewrap` writes both files.
                wrapping: Arc::new(Mutex::new((Wrapping::Unlock(String::new()), 0))),
                upgrading: Arc::new(Mutex::new(upgrading)),
            };
            at_rest.rewrap(None, 0)?;
            return Ok(at_rest);
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let file: KeysFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if file.format != FORMAT {
        return Err(bad(format!("format {} is not supported (this stackd reads format {FORMAT})", file.format)));
    }
    let wrapped = base64::Engine::decode(&b64(), &file.data_key).map_err(|e| bad(format!("data_key: {e}")))?;
    let (key, wrapping) = match file.wrapped_by {
        WrappedBy::Local => {
            let text = match std::fs::read_to_string(&kek_path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(KeysError::MissingKek {
                        kek: kek_path.display().to_string(),
                        keys: path.display().to_string(),
                    });
                }
                Err(e) => return Err(io(&kek_path)(e)),
            };
            let kek = Kek::from_text(&text)
                .map_err(|_| KeysError::Bad { path: kek_path.display().to_string(), why: "not a key".into() })?;
            let key = DataKey::unwrap(&wrapped, &kek)
                .map_err(|e| bad(format!("the data key does not open with {}: {e}", kek_path.display())))?;
            (key, Wrapping::Local)
        }
        WrappedBy::UnlockKey => {
            let Some(unlock) = unlock else { return Err(KeysError::Locked { key_id: file.key_id }) };
            if unlock.id() != file.key_id {
                return Err(KeysError::WrongKey { key_id: file.key_id, given: unlock.id() });
            }
            let key = DataKey::unwrap(&wrapped, &unlock.kek())
                .map_err(|_| KeysError::WrongKey { key_id: file.key_id.clone(), given: unlock.id() })?;
            // A crash after the rewrap and before the local key's deletion left it: it goes now.
            remove_kek(&kek_path)?;
            (key, Wrapping::Unlock(file.key_id))
        }
    };
    Ok(AtRest {
        data_dir: data_dir.to_path_buf(),
        key: Arc::new(key),
        wrapping: Arc::new(Mutex::new((wrapping, file.as_of))),
        upgrading: Arc::new(Mutex::new(file.upgrading)),
    })
}

/// Keeps the data key wrapped as the cluster says, on every manager (not
/// only the leader): by the unlock key while the state holds one, by a
/// local key file otherwise. Runs until `stop`.
pub(crate) async fn follow(
    at_rest: AtRest,
    shared: Arc<crate::raft::Shared>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut applied = shared.applied();
    loop {
        let (at, state) = shared.snapshot_at();
        let as_of = at.map(|l| l.index).unwrap_or(0);
        let blob = state.security.unlock_key.clone();
        let text = String::from_utf8_lossy(&blob.0).into_owned();
        let unlock = if text.is_empty() { None } else { text.parse::<UnlockKey>().ok() };
        if !text.is_empty() && unlock.is_none() {
            tracing::error!("the cluster's unlock key does not parse: the raft data stays wrapped as it is");
        } else {
            let at = at_rest.clone();
            let done = tokio::task::spawn_blocking(move || at.rewrap(unlock.as_ref(), as_of)).await;
            match done {
                Ok(Ok(true)) => match at_rest.wrapping() {
                    Wrapping::Unlock(id) => tracing::info!(
                        key_id = %id,
                        "autolock: this manager's raft data key is now wrapped by the cluster's unlock key; it needs the key to start"
                    ),
                    Wrapping::Local => {
                        tracing::info!("autolock is off: this manager's raft data key is wrapped by DATA_DIR/raft.kek")
                    }
                },
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot rewrap the raft data key as the cluster asks; retried at the next change")
                }
                Err(e) => tracing::error!(error = %e, "rewrapping the raft data key failed"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = applied.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_data_key_is_local_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = open(dir.path(), None).expect("new");
        assert_eq!(a.wrapping(), Wrapping::Local);
        assert!(dir.path().join(KEK_FILE).exists());
        let sealed = a.key().seal(b"x").expect("seal");
        let b = open(dir.path(), None).expect("reopen");
        assert_eq!(b.key().open(&sealed).expect("same key"), b"x");
        std::fs::remove_file(dir.path().join(KEK_FILE)).expect("rm kek");
        let err = open(dir.path(), None).expect_err("no kek");
        assert!(matches!(err, KeysError::MissingKek { .. }), "{err}");
    }

    #[test]
    fn autolock_wraps_by_the_unlock_key_and_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = open(dir.path(), None).expect("new");
        let sealed = a.key().seal(b"x").expect("seal");
        let k = UnlockKey::generate().expect("key");
        assert!(a.rewrap(Some(&k), 5).expect("rewrap"));
        assert!(!a.rewrap(Some(&k), 6).expect("again"), "nothing to do the second time");
        // An older state (replayed at start) never changes it back.
        assert!(!a.rewrap(None, 4).expect("older"), "an older state rewrapped the key");
        assert!(!dir.path().join(KEK_FILE).exists(), "the local key is gone");
        let keys = std::fs::read_to_string(dir.path().join("raft").join(KEYS_FILE)).expect("keys");
        assert!(keys.contains(&k.id()) && !keys.contains(&k.to_secret_string()), "{keys}");

        let err = open(dir.path(), None).expect_err("locked");
        assert!(matches!(&err, KeysError::Locked { key_id } if *key_id == k.id()) && err.is_locked(), "{err}");
        let other = UnlockKey::generate().expect("key");
        let err = open(dir.path(), Some(&other)).expect_err("wrong key");
        assert!(matches!(err, KeysError::WrongKey { .. }) && err.is_locked(), "{err}");
        // A crash between the rewrap and the local key's deletion: it goes at the next open.
        std::fs::write(dir.path().join(KEK_FILE), "left over").expect("write");
        let b = open(dir.path(), Some(&k)).expect("unlocked");
        assert!(!dir.path().join(KEK_FILE).exists(), "a local key that wraps nothing is deleted");
        assert_eq!(b.key().open(&sealed).expect("same key"), b"x");

        // Rotation, then autolock off.
        assert!(b.rewrap(Some(&other), 7).expect("rotate"));
        assert!(matches!(open(dir.path(), Some(&k)), Err(KeysError::WrongKey { .. })));
        assert!(b.rewrap(None, 8).expect("off"));
        let c = open(dir.path(), None).expect("local again");
        assert_eq!(c.key().open(&sealed).expect("same key"), b"x");
    }

    #[test]
    fn plain_data_is_allowed_only_to_a_key_made_for_an_existing_log() {
        let fresh = tempfile::tempdir().expect("tempdir");
        assert!(!open(fresh.path(), None).expect("new").upgrading(), "a new manager writes sealed only");
        let old = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(old.path().join("raft").join("log")).expect("an earlier stackd's log");
        let a = open(old.path(), None).expect("new key for it");
        assert!(a.upgrading());
        // Until it is sealed, every start may read the plain data (a crash meanwhile).
        assert!(open(old.path(), None).expect("reopen").upgrading());
        a.upgraded().expect("sealed");
        assert!(!a.upgrading());
        assert!(!open(old.path(), None).expect("reopen").upgrading(), "refused from now on");
    }

    #[test]
    fn a_damaged_keys_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        open(dir.path(), None).expect("new");
        let path = dir.path().join("raft").join(KEYS_FILE);
        let text = std::fs::read_to_string(&path).expect("keys");
        std::fs::write(&path, text.replace("\"format\": 1", "\"format\": 9")).expect("write");
        let err = open(dir.path(), None).expect_err("format");
        assert!(err.to_string().contains("format 9"), "{err}");
        std::fs::write(&path, b"{").expect("write");
        assert!(matches!(open(dir.path(), None), Err(KeysError::Bad { .. })));
    }
}
