//! The Raft state machine: [`ClusterState`] in memory, snapshots on disk.
//!
//! On start the state is loaded from the current snapshot file; openraft then
//! re-applies the committed log entries after it. `apply` is deterministic
//! (see `stackd_core::state`), so the replay rebuilds exactly the state that
//! was there before a crash.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, StorageError, StorageIOError};
use stackd_core::ClusterState;
use stackd_core::journal::{self, Gap, Journal};
use stackd_core::state::{Applied, Event};
use tokio::sync::{broadcast, watch};

use super::log_store::Durable;
use super::snapshot::{self, Payload};
use super::{Entry, LogId, NodeIdOf, SnapshotMetaOf, StoredMembershipOf, TypeConfig};
use stackd_tls::seal::DataKey;

type StorageResult<T> = Result<T, StorageError<NodeIdOf>>;

const CURRENT: &str = "snapshot.current";
/// The first line of a snapshot file sealed with the data key (encryption
/// at rest); what follows is the sealed snapshot (`snapshot.rs`'s format).
const SEALED_MAGIC: &[u8] = b"STACKD-SEALED-SNAPSHOT\n";

/// The snapshot `bytes` as they are kept on disk: sealed with `key`.
fn seal_file(key: &DataKey, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(SEALED_MAGIC.len() + bytes.len() + stackd_tls::seal::OVERHEAD);
    out.extend_from_slice(SEALED_MAGIC);
    key.seal_into(bytes, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The snapshot a file on disk holds, and whether it was sealed (a file
/// written before encryption at rest is not).
fn open_file(key: &DataKey, path: &Path) -> Result<(Vec<u8>, bool), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match bytes.strip_prefix(SEALED_MAGIC) {
        Some(sealed) => {
            key.open(sealed).map(|b| (b, true)).map_err(|e| format!("{}: the sealed snapshot {e}", path.display()))
        }
        None => Ok((bytes, false)),
    }
}

/// What the rest of the manager sees of the state machine.
pub struct Shared {
    data: RwLock<Data>,
    applied: watch::Sender<u64>,
    events: broadcast::Sender<Event>,
    installs: AtomicU64,
    /// The state's restore generation, for the Raft messages' header
    /// without taking the lock.
    generation: AtomicU64,
}

#[derive(Default)]
struct Data {
    last_applied: Option<LogId>,
    membership: StoredMembershipOf,
    /// Shared with [`Shared::snapshot`] readers; `apply` changes it in place
    /// when nobody holds a snapshot, and copies it first when somebody does.
    state: Arc<ClusterState>,
    /// The last events, the same on every manager (saved in snapshots).
    journal: Journal,
}

impl Shared {
    /// Runs `f` with the current state. Never hold the state across an await.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        let guard = self.data.read().unwrap_or_else(|p| p.into_inner());
        f(&guard.state)
    }

    /// The current state, to compute on without holding the lock: the
    /// controller loops' snapshot. Cheap to take (a reference count); but an
    /// apply while it is held copies the whole state once, so drop it as soon
    /// as the computation is done (see docs/architecture.md, The controller loop).
    pub fn snapshot(&self) -> Arc<ClusterState> {
        self.data.read().unwrap_or_else(|p| p.into_inner()).state.clone()
    }

    /// The current state with the log id of the last entry it includes,
    /// taken together: what a cluster snapshot file holds.
    pub fn snapshot_at(&self) -> (Option<LogId>, Arc<ClusterState>) {
        let guard = self.data.read().unwrap_or_else(|p| p.into_inner());
        (guard.last_applied, guard.state.clone())
    }

    /// The index of the last applied entry; changes on every apply.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Events of every applied command from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The kept events after `cursor` (all kept for `None`) that `keep`
    /// selects, and the place of the newest event the journal holds (what a
    /// watcher subscribed before this call skips of the live events). A
    /// [`Gap`] when some events after `cursor` were dropped.
    pub fn events_after(
        &self,
        cursor: Option<journal::Cursor>,
        keep: impl Fn(&Event) -> bool,
    ) -> Result<(Vec<Event>, Option<journal::Cursor>), Gap> {
        let guard = self.data.read().unwrap_or_else(|p| p.into_inner());
        let events = guard.journal.after(cursor)?.filter(|e| keep(e)).cloned().collect();
        Ok((events, guard.journal.last_cursor()))
    }

    /// The newest `n` kept events, oldest first (the status page's).
    pub fn latest_events(&self, n: usize) -> Vec<Event> {
        let guard = self.data.read().unwrap_or_else(|p| p.into_inner());
        let skip = guard.journal.len().saturating_sub(n);
        guard.journal.after(None).map(|all| all.skip(skip).cloned().collect()).unwrap_or_default()
    }

    /// The applied state's restore generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// How many snapshots received from a leader were installed since start.
    pub fn snapshots_installed(&self) -> u64 {
        self.installs.load(Ordering::Relaxed)
    }
}

/// The journal a snapshot carries; for one written before journals were
/// kept, an empty one that knows it misses what came before.
fn journal_of(payload: &Payload) -> Journal {
    match &payload.events {
        Some(j) => j.clone(),
        None => Journal::starting_after(payload.last_applied.map(|l| l.index).unwrap_or(0)),
    }
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeIdOf> {
    StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::error(e.to_string())).into()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The state machine store.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
    dir: PathBuf,
    /// Entries are applied only once this node holds them durably (see
    /// `log_store`: a leader's own copy may still be syncing at the commit).
    durable: Option<Durable>,
    /// Seals the snapshot file.
    key: Arc<DataKey>,
}

impl StateMachine {
    /// Opens the state machine in `dir`, loading the current snapshot if
    /// there is one; its file is sealed with `key` (and sealed now if an
    /// earlier stackd wrote it in plain text).
    pub fn open(dir: &Path, key: Arc<DataKey>, upgrading: bool) -> Result<Self, StorageError<NodeIdOf>> {
        std::fs::create_dir_all(dir).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let mut data = Data::default();
        let path = dir.join(CURRENT);
        if path.exists() {
            let (bytes, sealed) = open_file(&key, &path).map_err(|e| sm_err(ErrorVerb::Read, e))?;
            let (_, payload) =
                snapshot::decode(&bytes).map_err(|e| sm_err(ErrorVerb::Read, format!("{}: {e}", path.display())))?;
            if !sealed && !upgrading {
                return Err(sm_err(
                    ErrorVerb::Read,
                    format!(
                        "{}: a snapshot in plain text where a sealed one belongs: written by something without this \
                         manager's data key; refused",
                        path.display()
                    ),
                ));
            }
            if !sealed {
                tracing::info!(path = %path.display(), "the raft snapshot was written before encryption at rest: sealing it");
                let file = seal_file(&key, &bytes).map_err(|e| sm_err(ErrorVerb::Write, e))?;
                crate::util::write_atomic(dir, CURRENT, &file).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            }
            data = Data {
                journal: journal_of(&payload),
                last_applied: payload.last_applied,
                membership: payload.membership,
                state: Arc::new(payload.state),
            };
        }
        let (applied, _) = watch::channel(data.last_applied.map(|l| l.index).unwrap_or(0));
        let (events, _) = broadcast::channel(4096);
        Ok(Self {
            shared: Arc::new(Shared {
                generation: AtomicU64::new(data.state.restore_generation),
                data: RwLock::new(data),
                applied,
                events,
                installs: AtomicU64::new(0),
            }),
            dir: dir.to_path_buf(),
            durable: None,
            key,
        })
    }

    /// This state machine, applying an entry only once `durable` says the
    /// node's log holds it durably.
    pub fn gated(mut self, durable: Durable) -> Self {
        self.durable = Some(durable);
        self
    }

    /// The handle the rest of the manager reads through.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn install(&self, meta: &SnapshotMetaOf, payload: Payload) {
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        {
            let mut guard = self.shared.data.write().unwrap_or_else(|p| p.into_inner());
            *guard = Data {
                journal: journal_of(&payload),
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                state: Arc::new(payload.state),
            };
            self.shared.generation.store(guard.state.restore_generation, Ordering::Relaxed);
        }
        self.shared.applied.send_replace(index);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let payload = {
            let guard = self.shared.data.read().unwrap_or_else(|p| p.into_inner());
            let id = match guard.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, now_ms()),
                None => format!("0-0-{}", now_ms()),
            };
            Payload {
                last_applied: guard.last_applied,
                membership: guard.membership.clone(),
                state: ClusterState::clone(&guard.state),
                events: Some(guard.journal.clone()),
                snapshot_id: id,
            }
        };
        // Encoding and the fsyncs take a while on a large state: off the runtime's workers.
        let (dir, key) = (self.dir.clone(), self.key.clone());
        let (payload, bytes) = tokio::task::spawn_blocking(move || {
            let bytes = snapshot::encode(&payload, now_ms()).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            let file = seal_file(&key, &bytes).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            crate::util::write_atomic(&dir, CURRENT, &file).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            Ok::<_, StorageError<NodeIdOf>>((payload, bytes))
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Write, e))??;
        let meta = SnapshotMetaOf {
            last_log_id: payload.last_applied,
            last_membership: payload.membership,
            snapshot_id: payload.snapshot_id,
        };
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId>, StoredMembershipOf)> {
        let guard = self.shared.data.read().unwrap_or_else(|p| p.into_inner());
        Ok((guard.last_applied, guard.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let (Some(durable), Some(last)) = (&self.durable, entries.last()) {
            // Nothing of a commit shows before this node's copy is durable.
            durable.wait(last.log_id.index).await.map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        let mut replies = Vec::new();
        let mut events = Vec::new();
        let mut last = None;
        {
            let mut guard = self.shared.data.write().unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                guard.last_applied = Some(entry.log_id);
                last = Some(entry.log_id.index);
                let reply = match entry.payload {
                    EntryPayload::Blank => Applied::default(),
                    EntryPayload::Normal(cmd) => Arc::make_mut(&mut guard.state).apply(entry.log_id.index, &cmd),
                    EntryPayload::Membership(m) => {
                        guard.membership = StoredMembershipOf::new(Some(entry.log_id), m);
                        Applied::default()
                    }
                };
                guard.journal.record(reply.all_events());
                events.extend(reply.all_events().cloned());
                replies.push(reply);
            }
            self.shared.generation.store(guard.state.restore_generation, Ordering::Relaxed);
        }
        for e in events {
            // No receiver is not an error: nobody is watching.
            let _ = self.shared.events.send(e);
        }
        if let Some(index) = last {
            self.shared.applied.send_replace(index);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf, snapshot: Box<Cursor<Vec<u8>>>) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        let (_, payload) = snapshot::decode(&bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let file = seal_file(&self.key, &bytes).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        crate::util::write_atomic(&self.dir, CURRENT, &file).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.install(meta, payload);
        // openraft calls this only for a snapshot received from a leader.
        self.shared.installs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let path = self.dir.join(CURRENT);
        if !path.exists() {
            return Ok(None);
        }
        let (bytes, _) = open_file(&self.key, &path).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let (_, payload) = snapshot::decode(&bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let meta = SnapshotMetaOf {
            last_log_id: payload.last_applied,
            last_membership: payload.membership,
            snapshot_id: payload.snapshot_id,
        };
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}
