//! openraft's log storage over the write-ahead log (`wal.rs`).
//!
//! ```text
//!  append ──► cache (readable at once) ──► writer: one write per batch
//!               follower: + fdatasync ──► callback
//!               leader:   callback ──► syncer thread: fdatasync ──► Durable
//!  try_get_log_entries ──► cache, else pread of the record in its segment
//! ```
//!
//! - **Durability.** An entry a follower appends is synced before openraft
//!   hears that it is flushed: a follower's acknowledgement means the entry
//!   survives `kill -9` and power loss. Votes, truncations and purges are
//!   durable before their call returns. The commit index is written with
//!   the next record (openraft does not need it durable).
//! - **The leader syncs beside replication.** openraft 0.9 replicates an
//!   entry only once the leader's append is flushed, so a synced leader
//!   append costs one `fdatasync` in series on every write. The leader's
//!   own appends are therefore reported flushed once written, and synced by
//!   the `raft-sync` thread while the followers write theirs (as etcd
//!   does). openraft then counts the leader toward a commit before its copy
//!   is durable; nothing shows that commit until it is: the state machine
//!   applies an entry, and the leader tells followers a commit index, only
//!   once [`Durable`] says the leader holds the entries durably. So an
//!   applied (acknowledged) entry is durable on a majority, as Raft needs.
//! - **Order.** Everything that changes the log goes through one writer
//!   thread, in the order openraft asked for it; entries queued together are
//!   written with one sync.
//! - **Memory.** The vote, the marks and where each entry is live in memory.
//!   Recent entries are cached (up to [`CACHE_BYTES`]) so that replication
//!   seldom reads the disk; an entry not yet written is always cached.
//! - **Upgrade.** A log kept by an earlier stackd in `raft.redb` is copied
//!   into the write-ahead log on the first start (`migrate`), then removed.
//!   A log with records in plain text (written before encryption at rest)
//!   is copied sealed into `log.sealing`, which then replaces it (`reseal`):
//!   a crash at any step leaves either the whole old log or the whole new one.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, RaftLogReader, StorageError, StorageIOError};
use tokio::sync::{oneshot, watch};

use prometheus_client::metrics::histogram::Histogram;

use super::wal::{self, Files, Framed, Key, Kind, Loc, Pos, Record, Replayed, WalError, Writer};
use super::{Entry, LogId, NodeIdOf, TypeConfig, Vote};
use crate::util::lock;

/// Recent entries kept in memory, in bytes of their records.
pub const CACHE_BYTES: usize = 64 << 20;
/// Most queued requests the writer takes into one write.
const MAX_JOBS: usize = 1024;
/// The write-ahead log's directory in the Raft dir.
const LOG_DIR: &str = "log";
/// Where a log being copied from `raft.redb` is built.
const MIGRATING_DIR: &str = "log.migrating";
/// The log of stackd before the write-ahead log.
const LEGACY_DB: &str = "raft.redb";
/// Where a sealed copy of a log with plain records is built.
const SEALING_DIR: &str = "log.sealing";
/// Where the plain log goes while the sealed copy takes its place.
const PLAIN_DIR: &str = "log.plain";
/// Held (flock) by the process whose writer owns the log.
const LOCK_FILE: &str = "log.lock";
/// How long `open` waits for the log's lock: a log store of this process
/// that is shutting down finishes its last writes meanwhile.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

type StorageResult<T> = Result<T, StorageError<NodeIdOf>>;

fn io_err(subject: ErrorSubject<NodeIdOf>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeIdOf> {
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

/// What the log holds, in memory.
#[derive(Default)]
struct Index {
    /// Recent entries and the size of their records; every entry not yet written.
    cache: BTreeMap<u64, (Entry, usize)>,
    cache_bytes: usize,
    /// Where the written entries are.
    locs: BTreeMap<u64, Loc>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// `committed` changed since it was last written.
    committed_unsaved: bool,
    purged: Option<LogId>,
}

impl Index {
    /// Drops the entries at and after `index`.
    fn truncate(&mut self, index: u64) {
        for (_, (_, size)) in self.cache.split_off(&index) {
            self.cache_bytes -= size;
        }
        self.locs.split_off(&index);
    }

    /// Drops the entries up to `index`.
    fn purge(&mut self, index: u64) {
        let kept = self.cache.split_off(&(index + 1));
        for (_, (_, size)) in std::mem::replace(&mut self.cache, kept) {
            self.cache_bytes -= size;
        }
        self.locs = self.locs.split_off(&(index + 1));
    }

    /// Notes where written entries are, if they are still in the log, and
    /// trims the cache to its budget.
    fn written(&mut self, locs: &[Loc]) {
        for loc in locs {
            let index = loc.log_id.index;
            if self.cache.get(&index).is_some_and(|(e, _)| e.log_id == loc.log_id) {
                self.locs.insert(index, *loc);
            }
        }
        while self.cache_bytes > CACHE_BYTES {
            let Some(mut first) = self.cache.first_entry() else { break };
            if !self.locs.contains_key(first.key()) {
                break; // not written yet: it stays
            }
            let (_, size) = first.get_mut();
            self.cache_bytes -= *size;
            first.remove();
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        let cached = self.cache.last_key_value().map(|(_, (e, _))| e.log_id);
        let written = self.locs.last_key_value().map(|(_, l)| l.log_id);
        let last = match (cached, written) {
            (Some(c), Some(w)) => Some(if c.index >= w.index { c } else { w }),
            (c, w) => c.or(w),
        };
        last.or(self.purged)
    }
}

/// How a queued request is answered once written.
enum Done {
    /// openraft's append callback.
    Flushed(LogFlushed<TypeConfig>),
    /// A caller waiting for the outcome.
    Reply(oneshot::Sender<Result<(), String>>),
}

struct Job {
    records: Vec<Framed>,
    durable: bool,
    done: Done,
}

/// How far the log is written and synced; shared by the writer, the
/// `raft-sync` thread and the [`Durable`] gates.
struct Syncs {
    state: Mutex<SyncState>,
    /// Wakes the syncer: something was written without a sync, or the log closes.
    wake: Condvar,
    /// Changes whenever `synced` moves or the log fails: wakes the gates.
    changed: watch::Sender<u64>,
    /// Held by a test to keep the syncer from syncing.
    #[cfg(test)]
    held: Mutex<()>,
    /// Set by a test: the syncer's syncs fail.
    #[cfg(test)]
    fail_syncs: std::sync::atomic::AtomicBool,
    /// Set by a test: the writer's writes report a failure (after writing).
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct SyncState {
    /// The end of what was written.
    written: Pos,
    /// The end of what is durable.
    synced: Pos,
    /// Why the log cannot be trusted any more (a failed sync: after one, the
    /// page cache may have dropped what it held), or that it closed.
    failed: Option<String>,
    /// The writer stopped: the syncer syncs what is left, then ends.
    closing: bool,
}

impl Syncs {
    fn new(at: Pos) -> Self {
        let state = SyncState { written: at, synced: at, ..SyncState::default() };
        Self {
            state: Mutex::new(state),
            wake: Condvar::new(),
            changed: watch::Sender::new(0),
            #[cfg(test)]
            held: Mutex::new(()),
            #[cfg(test)]
            fail_syncs: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            fail_writes: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        lock(&self.state)
    }

    fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Notes a write that ended at `end`, synced or not.
    fn wrote(&self, end: Pos, synced: bool) {
        let mut s = self.lock();
        s.written = s.written.max(end);
        if synced {
            // One sync covers the whole segment, and a segment is synced
            // before the next one starts.
            s.synced = s.synced.max(end);
            drop(s);
            self.changed.send_modify(|n| *n += 1);
        } else {
            drop(s);
            self.wake.notify_one();
        }
    }

    /// Notes the outcome of a sync up to `end`.
    fn synced(&self, end: Pos, result: Result<(), String>) {
        match result {
            Ok(()) => {
                let mut s = self.lock();
                s.synced = s.synced.max(end);
                drop(s);
                self.changed.send_modify(|n| *n += 1);
            }
            Err(e) => self.fail(format!("syncing the raft log failed: {e}")),
        }
    }

    /// The log can no longer be trusted (a write or sync failed): every
    /// gate and every later write fails, and this manager's Raft stops.
    fn fail(&self, why: String) {
        tracing::error!(
            error = %why,
            "the raft log cannot be trusted any more: this manager's Raft stops (the other managers go on); \
             check the disk (dmesg), then restart stackd: it reads the log back, and catches up from the leader"
        );
        self.lock().failed.get_or_insert(why);
        self.wake.notify_one();
        self.changed.send_modify(|n| *n += 1);
    }

    /// The writer stopped: the syncer finishes, then the gates hear it.
    fn close(&self, syncer: Option<std::thread::JoinHandle<()>>) {
        self.lock().closing = true;
        self.wake.notify_one();
        if let Some(syncer) = syncer {
            let _ = syncer.join();
        }
        self.lock().failed.get_or_insert_with(|| "the raft log is closed".into());
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The `raft-sync` thread: syncs what was written without a sync, as much
/// as there is at each turn.
fn run_syncer(syncs: &Syncs, files: &Files) {
    loop {
        let target = {
            let mut s = syncs.lock();
            loop {
                if s.failed.is_some() {
                    return;
                }
                if s.written > s.synced {
                    break s.written;
                }
                if s.closing {
                    return;
                }
                s = syncs.wake.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        };
        #[cfg(test)]
        let _held = lock(&syncs.held);
        let file = files.read().unwrap_or_else(|p| p.into_inner()).get(&target.segment).cloned();
        let result = match file {
            Some(file) => file.sync_data().map_err(|e| format!("segment {}: {e}", target.segment)),
            // Only a segment that is not the last is ever closed (deleted
            // once its entries are purged), and the writer syncs a segment
            // before it starts the next: nothing is left to sync in it.
            None => Ok(()),
        };
        #[cfg(test)]
        let result = if syncs.fail_syncs.load(Ordering::SeqCst) { Err("an injected failure".into()) } else { result };
        syncs.synced(target, result);
    }
}

/// Tells whether this node's entries are durable, and waits until they
/// are: the gates that keep a commit from showing before the leader's own
/// copy is synced (see the module doc). Cheap to clone; it does not keep
/// the log open.
#[derive(Clone)]
pub struct Durable {
    index: Arc<Mutex<Index>>,
    syncs: Arc<Syncs>,
}

impl Durable {
    /// The end of what is durable, unless the log failed or closed.
    fn synced(&self) -> Result<Pos, String> {
        let s = self.syncs.lock();
        match &s.failed {
            Some(why) => Err(why.clone()),
            None => Ok(s.synced),
        }
    }

    /// Whether the entry at `index` in this node's log is durable. Purged
    /// entries are (a snapshot holds them); entries not written yet are not.
    fn holds(&self, index: u64) -> Result<bool, String> {
        let synced = self.synced()?;
        let ix = lock(&self.index);
        if ix.purged.is_some_and(|p| index <= p.index) {
            return Ok(true);
        }
        Ok(ix.locs.get(&index).is_some_and(|loc| loc.end() <= synced))
    }

    /// The last entry at or before `upto` that this node holds durably:
    /// `upto` itself once synced, else an earlier one, else the purge mark.
    /// Fails once the log failed or closed.
    pub fn durable_upto(&self, upto: LogId) -> Result<Option<LogId>, String> {
        let synced = self.synced()?;
        let ix = lock(&self.index);
        // Entries lie in the log in the order of their indexes: only the
        // unsynced tail is walked.
        let last = ix.locs.range(..=upto.index).rev().find(|(_, loc)| loc.end() <= synced).map(|(_, loc)| loc.log_id);
        Ok(last.or(ix.purged.filter(|p| p.index <= upto.index)))
    }

    /// Waits until the entries up to `index` are durable (entries are
    /// written in order, so the one at `index` is enough). Fails once the
    /// log failed or closed.
    pub async fn wait(&self, index: u64) -> Result<(), String> {
        let mut changed = self.syncs.changed.subscribe();
        loop {
            if self.holds(index)? {
                return Ok(());
            }
            if changed.changed().await.is_err() {
                return Err("the raft log is closed".into());
            }
        }
    }
}

/// The log store. Cheap to clone: clones share the log and its writer.
#[derive(Clone)]
pub struct LogStore {
    index: Arc<Mutex<Index>>,
    files: Files,
    writer: Arc<Mutex<Writer>>,
    syncs: Arc<Syncs>,
    /// This node's id, once known: its appends as leader are synced by the
    /// syncer thread (see the module doc).
    node: Option<u64>,
    /// Requests queued for the writer thread and not yet answered.
    pending: Arc<AtomicUsize>,
    jobs: mpsc::Sender<Job>,
    /// Opens the records read back from the segments.
    key: Key,
    /// How long each write of the writer thread took (its sync included).
    append_latency: Histogram,
}

/// The buckets of the append latency, in seconds: 100 µs to 1 s.
fn append_buckets() -> Histogram {
    Histogram::new([0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
}

/// The file in the log dir naming the boot of the machine that last opened
/// the log.
const BOOT_FILE: &str = "boot_id";

/// This boot of the machine (Linux's random boot id), or empty when it
/// cannot be read (then every open counts as after a reboot).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The vote to start with, and the log dir marked as opened in `boot`.
///
/// A leader reports its appends flushed before they are synced (see the
/// module doc), so after a power cut or a crash of the machine its log may
/// lack entries that followers hold under the same log ids. Taking up its
/// leadership again in the same term (openraft does, for a committed vote of
/// its own) would then propose other entries under those ids, and the logs
/// would part for good. So a committed vote read in another boot than the
/// last open's is downgraded to an uncommitted one, durably: the node starts
/// as a follower and a new term is elected. Within one boot nothing written
/// is lost (the page cache outlives a killed process), and the vote stands.
fn resume_vote(log_dir: &Path, writer: &mut Writer, vote: Option<Vote>, boot: &str) -> Result<Option<Vote>, WalError> {
    let io = |path: std::path::PathBuf| move |e| WalError::Io { path: path.display().to_string(), source: e };
    let file = log_dir.join(BOOT_FILE);
    let last = match std::fs::read_to_string(&file) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(file)(e)),
    };
    let mut vote = vote;
    if let Some(v) = vote.filter(|v| v.committed)
        && (boot.is_empty() || last != boot)
    {
        let down = Vote::new(v.leader_id.term, v.leader_id.node_id);
        let framed = wal::frame::<&Entry>(&Record::Vote { vote: down }, Kind::Vote(down))?;
        writer.write(&[framed], true)?;
        tracing::info!(
            term = v.leader_id.term,
            "first start since the machine restarted: this manager follows until a new term is elected"
        );
        vote = Some(down);
    }
    if last != boot {
        // After the downgrade is durable: a crash in between downgrades again.
        crate::util::write_atomic(log_dir, BOOT_FILE, format!("{boot}\n").as_bytes()).map_err(io(file))?;
    }
    Ok(vote)
}

impl LogStore {
    /// Opens (or creates) the log in the Raft dir `dir`, its records sealed
    /// with `key`, copying a log kept in `raft.redb` by an earlier stackd
    /// first, and sealing one that holds plain records.
    pub fn open(dir: &Path, key: Arc<stackd_tls::seal::DataKey>, upgrading: bool) -> Result<Self, WalError> {
        Self::open_with_plain(dir, wal::SEGMENT_BYTES, LOCK_WAIT, Some(key), upgrading)
    }

    /// [`open`](Self::open) with the segment size, the lock wait and the key
    /// (`None`: plain records, the format before encryption at rest) given.
    #[cfg(test)]
    fn open_with(dir: &Path, segment_bytes: u64, wait: std::time::Duration, key: Key) -> Result<Self, WalError> {
        Self::open_with_plain(dir, segment_bytes, wait, key, true)
    }

    /// [`open_with`](Self::open_with); plain records are refused in a
    /// sealed log unless `upgrading` (see `keys.rs`).
    fn open_with_plain(
        dir: &Path,
        segment_bytes: u64,
        wait: std::time::Duration,
        key: Key,
        upgrading: bool,
    ) -> Result<Self, WalError> {
        let lock = lock_dir(dir, wait)?;
        migrate(dir, &key)?;
        let (mut writer, replayed, files) = reseal(dir, segment_bytes, &key, upgrading)?;
        // What an earlier process wrote may not have been synced before it
        // died: it is now, so that all the log holds counts as durable.
        writer.write(&[], true)?;
        let vote = resume_vote(&dir.join(LOG_DIR), &mut writer, replayed.vote, &boot_id())?;
        let syncs = Arc::new(Syncs::new(writer.position()));
        let index = Index {
            locs: replayed.entries,
            vote,
            committed: replayed.committed,
            purged: replayed.purged,
            ..Index::default()
        };
        let index = Arc::new(Mutex::new(index));
        let (jobs, rx) = mpsc::channel();
        let writer = Arc::new(Mutex::new(writer));
        let pending = Arc::new(AtomicUsize::new(0));
        let spawn_failed = |e| WalError::Io { path: dir.display().to_string(), source: e };
        let (sy, f) = (syncs.clone(), files.clone());
        let syncer = std::thread::Builder::new()
            .name("raft-sync".into())
            .spawn(move || run_syncer(&sy, &f))
            .map_err(spawn_failed)?;
        let (shared, w, p, sy) = (index.clone(), writer.clone(), pending.clone(), syncs.clone());
        let append_latency = append_buckets();
        let latency = append_latency.clone();
        let mut syncer = Some(syncer);
        let started = std::thread::Builder::new().name("raft-log".into()).spawn(move || {
            run_writer(&w, rx, &shared, &p, &sy, &latency);
            sy.close(syncer.take());
            drop(lock);
        });
        if let Err(e) = started {
            syncs.close(None);
            return Err(spawn_failed(e));
        }
        Ok(Self { index, files, writer, syncs, node: None, pending, jobs, key, append_latency })
    }

    /// The log of node `id`: its appends while it leads are synced beside
    /// replication (see the module doc).
    pub fn for_node(mut self, id: u64) -> Self {
        self.node = Some(id);
        self
    }

    /// How long each write of the log took, its `fdatasync` included (a
    /// leader's own appends are synced beside them, and not counted here).
    pub fn append_latency(&self) -> Histogram {
        self.append_latency.clone()
    }

    /// The gates' view of this log.
    pub fn durable(&self) -> Durable {
        Durable { index: self.index.clone(), syncs: self.syncs.clone() }
    }

    /// Whether this node leads under the vote it holds: only a leader
    /// appends under its own vote.
    fn leads(&self) -> bool {
        let Some(id) = self.node else { return false };
        self.lock().vote.is_some_and(|v| v.committed && v.leader_id.node_id == id)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        lock(&self.index)
    }

    /// Writes a request: at once on this thread when the writer is idle
    /// (one write and sync of a few hundred bytes: cheaper than two thread
    /// hops on the path of every commit), else through the writer thread,
    /// which batches what queues up. Either way, in the order of the calls.
    fn send(&self, mut records: Vec<Framed>, durable: bool, done: Done) -> Result<(), String> {
        let unsaved = {
            let mut ix = self.lock();
            std::mem::take(&mut ix.committed_unsaved).then_some(ix.committed)
        };
        if let Some(committed) = unsaved {
            // The commit index rides along with the next record (see `save_committed`).
            let framed = wal::frame::<&Entry>(&Record::Committed { committed }, Kind::Committed(committed))
                .map_err(|e| e.to_string())?;
            records.insert(0, framed);
        }
        let job = Job { records, durable, done };
        let idle = match self.writer.try_lock() {
            Ok(w) => Some(w),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(mut writer) = idle
            && self.pending.load(Ordering::SeqCst) == 0
        {
            let mut jobs = vec![job];
            let result = write_jobs(&mut writer, &mut jobs, &self.index, &self.syncs, &self.append_latency);
            drop(writer);
            complete(jobs, &result);
            return Ok(());
        }
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.jobs.send(job).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            "the raft log writer stopped".to_string()
        })
    }

    /// Writes `record` durably and waits for it.
    async fn write_durable(&self, record: Framed) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.send(vec![record], true, Done::Reply(tx))?;
        rx.await.map_err(|_| "the raft log writer stopped".to_string())?
    }
}

/// Takes the lock of the log in `dir`, waiting up to `wait`.
fn lock_dir(dir: &Path, wait: std::time::Duration) -> Result<std::fs::File, WalError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| WalError::Io { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(WalError::InUse { path: path.display().to_string() });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}

impl LogStore {
    /// Makes `entries` readable at once (openraft replicates entries while
    /// they are being flushed) and queues them for the writer, with a sync
    /// before `done` when `durable`.
    fn queue_entries(&self, entries: impl IntoIterator<Item = Entry>, durable: bool, done: Done) -> StorageResult<()> {
        let mut records = Vec::new();
        let mut cached = Vec::new();
        for entry in entries {
            let framed = wal::frame(&Record::Entry { entry: &entry }, Kind::Entry(entry.log_id))
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            cached.push((entry, framed.json.len()));
            records.push(framed);
        }
        {
            let mut ix = self.lock();
            for (entry, size) in cached {
                ix.cache_bytes += size;
                if let Some((_, old)) = ix.cache.insert(entry.log_id.index, (entry, size)) {
                    ix.cache_bytes -= old;
                }
            }
        }
        self.send(records, durable, done).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    /// Appends `entries` as `append` does and waits until openraft would
    /// hear that they are flushed (its callback cannot be made outside
    /// openraft): synced, or for a leader written.
    #[cfg(test)]
    async fn append_flushed(&self, entries: Vec<Entry>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.queue_entries(entries, !self.leads(), Done::Reply(tx)).map_err(|e| e.to_string())?;
        rx.await.map_err(|_| "the raft log writer stopped".to_string())?
    }
}

fn run_writer(
    writer: &Mutex<Writer>,
    rx: mpsc::Receiver<Job>,
    index: &Mutex<Index>,
    pending: &AtomicUsize,
    syncs: &Syncs,
    latency: &Histogram,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let n = jobs.len();
        let result = {
            let mut w = lock(writer);
            write_jobs(&mut w, &mut jobs, index, syncs, latency)
        };
        complete(jobs, &result);
        pending.fetch_sub(n, Ordering::SeqCst);
    }
}

/// Writes the records of `jobs` with one write, and one sync if any needs it.
fn write_jobs(
    writer: &mut Writer,
    jobs: &mut [Job],
    index: &Mutex<Index>,
    syncs: &Syncs,
    latency: &Histogram,
) -> Result<(), String> {
    if let Some(why) = syncs.failed() {
        return Err(why);
    }
    let durable = jobs.iter().any(|j| j.durable);
    let records: Vec<Framed> = jobs.iter_mut().flat_map(|j| std::mem::take(&mut j.records)).collect();
    let started = std::time::Instant::now();
    let result = writer.write(&records, durable);
    latency.observe(started.elapsed().as_secs_f64());
    #[cfg(test)]
    let result = if syncs.fail_writes.load(Ordering::SeqCst) {
        Err(WalError::Broken("an injected failure".into()))
    } else {
        result
    };
    match result {
        Ok(locs) => {
            lock(index).written(&locs);
            // After the locations: a gate woken by the sync finds them.
            syncs.wrote(writer.position(), durable);
            Ok(())
        }
        Err(e) => {
            // A failed write may be a failed sync, after which the page
            // cache may have dropped what the leader wrote unsynced before:
            // nothing written can count as durable any more.
            syncs.fail(format!("writing the raft log failed: {e}"));
            Err(e.to_string())
        }
    }
}

/// Answers each written request.
fn complete(jobs: Vec<Job>, result: &Result<(), String>) {
    for job in jobs {
        match job.done {
            Done::Flushed(callback) => callback.log_io_completed(result.clone().map_err(std::io::Error::other)),
            Done::Reply(tx) => {
                let _ = tx.send(result.clone());
            }
        }
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        enum Slot {
            Cached(Box<Entry>),
            OnDisk(Loc),
        }
        let range = bounds(&range);
        let slots: BTreeMap<u64, Slot> = {
            let ix = self.lock();
            let mut slots: BTreeMap<u64, Slot> = ix.locs.range(range).map(|(i, l)| (*i, Slot::OnDisk(*l))).collect();
            slots.extend(ix.cache.range(range).map(|(i, (e, _))| (*i, Slot::Cached(Box::new(e.clone())))));
            slots
        };
        let mut out = Vec::with_capacity(slots.len());
        for (_, slot) in slots {
            out.push(match slot {
                Slot::Cached(e) => *e,
                Slot::OnDisk(loc) => {
                    let file = self.files.read().unwrap_or_else(|p| p.into_inner()).get(&loc.segment).cloned();
                    let Some(file) = file else {
                        // Its segment was deleted by a purge meanwhile: the entry is gone.
                        break;
                    };
                    wal::read_entry(&file, &loc, &self.key)
                        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?
                }
            });
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let ix = self.lock();
        Ok(LogState { last_purged_log_id: ix.purged, last_log_id: ix.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> StorageResult<()> {
        let framed = wal::frame::<&Entry>(&Record::Vote { vote: *vote }, Kind::Vote(*vote))
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.write_durable(framed).await.map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        // Written with the next record, not now: openraft needs no durable
        // commit index (after a crash it learns it again from the leader, or
        // re-commits as leader), and a write per commit would sit between
        // the commit and the apply.
        let mut ix = self.lock();
        ix.committed = committed;
        ix.committed_unsaved = true;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // A leader's append is synced by the syncer thread, beside
        // replication; a follower's before openraft hears of it.
        let durable = !self.leads();
        self.queue_entries(entries, durable, Done::Flushed(callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        let framed = wal::frame::<&Entry>(&Record::Truncate { since: log_id.index }, Kind::Truncate)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.lock().truncate(log_id.index);
        self.write_durable(framed).await.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        let framed = wal::frame::<&Entry>(&Record::Purge { upto: log_id }, Kind::Purge(log_id))
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        {
            let mut ix = self.lock();
            ix.purge(log_id.index);
            ix.purged = Some(log_id);
        }
        self.write_durable(framed).await.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

/// An I/O error at `p`.
fn io(p: &Path) -> impl Fn(std::io::Error) -> WalError + use<> {
    let p = p.display().to_string();
    move |source| WalError::Io { path: p.clone(), source }
}

/// The records that carry a log's marks into a new copy of it.
fn marks(vote: Option<Vote>, purged: Option<LogId>, committed: Option<LogId>) -> Result<Vec<Framed>, WalError> {
    let mut records = Vec::new();
    if let Some(vote) = vote {
        records.push(wal::frame::<&Entry>(&Record::Vote { vote }, Kind::Vote(vote))?);
    }
    if let Some(upto) = purged {
        records.push(wal::frame::<&Entry>(&Record::Purge { upto }, Kind::Purge(upto))?);
    }
    records.push(wal::frame::<&Entry>(&Record::Committed { committed }, Kind::Committed(committed))?);
    Ok(records)
}

/// Opens the log of the Raft dir `dir`; when `key` is given and the log
/// holds plain records, first replaces it with a sealed copy (see the
/// module doc).
fn reseal(dir: &Path, segment_bytes: u64, key: &Key, upgrading: bool) -> Result<(Writer, Replayed, Files), WalError> {
    let log = dir.join(LOG_DIR);
    let sealing = dir.join(SEALING_DIR);
    let plain = dir.join(PLAIN_DIR);
    // What a crash during an earlier copy left.
    if sealing.exists() {
        if log.exists() {
            // The copy was not finished: the plain log still stands.
            std::fs::remove_dir_all(&sealing).map_err(io(&sealing))?;
        } else {
            // Finished, and the plain log moved aside: put the copy in place.
            std::fs::rename(&sealing, &log).map_err(io(&log))?;
        }
    }
    if plain.exists() {
        std::fs::remove_dir_all(&plain).map_err(io(&plain))?;
    }
    let (writer, replayed, files) = Writer::open(&log, segment_bytes, key.clone())?;
    if replayed.plain == 0 || key.is_none() {
        return Ok((writer, replayed, files));
    }
    if !upgrading {
        return Err(WalError::Corrupt {
            path: log.display().to_string(),
            offset: 0,
            why: format!(
                "{} record(s) in plain text in a log that is sealed: written by something without this manager's \
                 data key; refused",
                replayed.plain
            ),
        });
    }
    tracing::info!(
        entries = replayed.entries.len(),
        plain = replayed.plain,
        "the raft log holds records written before encryption at rest: rewriting it sealed"
    );
    let (mut copy, _, _) = Writer::open(&sealing, segment_bytes, key.clone())?;
    copy.write(&marks(replayed.vote, replayed.purged, replayed.committed)?, false)?;
    let locs: Vec<Loc> = replayed.entries.values().copied().collect();
    for chunk in locs.chunks(256) {
        let mut records = Vec::with_capacity(chunk.len());
        for loc in chunk {
            let file = files.read().unwrap_or_else(|p| p.into_inner()).get(&loc.segment).cloned();
            let corrupt = |why: String| WalError::Corrupt {
                path: log.display().to_string(),
                offset: loc.offset,
                why: format!("segment {}: {why}", loc.segment),
            };
            let file = file.ok_or_else(|| corrupt("not open".into()))?;
            let entry = wal::read_entry(&file, loc, key).map_err(corrupt)?;
            records.push(wal::frame(&Record::Entry { entry: &entry }, Kind::Entry(entry.log_id))?);
        }
        copy.write(&records, false)?;
    }
    copy.write(&[], true)?;
    drop((copy, writer, files));
    std::fs::rename(&log, &plain).map_err(io(&plain))?;
    std::fs::rename(&sealing, &log).map_err(io(&log))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    std::fs::remove_dir_all(&plain).map_err(io(&plain))?;
    Writer::open(&log, segment_bytes, key.clone())
}

/// Copies a log kept in `raft.redb` (stackd before the write-ahead log)
/// into the write-ahead log: built aside, made durable, renamed into place,
/// and only then is the old database removed. A crash at any point leaves
/// either the old log or the complete new one.
fn migrate(dir: &Path, key: &Key) -> Result<(), WalError> {
    let legacy = dir.join(LEGACY_DB);
    let target = dir.join(LOG_DIR);
    let aside = dir.join(MIGRATING_DIR);
    if !legacy.exists() {
        return Ok(());
    }
    if target.exists() {
        // Copied before, but the old database was not removed yet.
        std::fs::remove_file(&legacy).map_err(io(&legacy))?;
        return Ok(());
    }
    if aside.exists() {
        std::fs::remove_dir_all(&aside).map_err(io(&aside))?;
    }
    let old = legacy::read(&legacy)?;
    tracing::info!(entries = old.entries.len(), from = %legacy.display(), "moving the raft log to the write-ahead log");
    let (mut writer, _, _) = Writer::open(&aside, wal::SEGMENT_BYTES, key.clone())?;
    writer.write(&marks(old.vote, old.purged, old.committed)?, false)?;
    for chunk in old.entries.chunks(256) {
        let records = chunk
            .iter()
            .map(|e| wal::frame(&Record::Entry { entry: e }, Kind::Entry(e.log_id)))
            .collect::<Result<Vec<_>, _>>()?;
        writer.write(&records, false)?;
    }
    writer.write(&[], true)?;
    drop(writer);
    std::fs::rename(&aside, &target).map_err(io(&target))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    std::fs::remove_file(&legacy).map_err(io(&legacy))?;
    Ok(())
}

/// Reading the redb log of stackd before the write-ahead log.
mod legacy {
    use std::path::Path;

    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

    use super::super::wal::WalError;
    use super::{Entry, LogId, Vote};

    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

    /// What a redb log held.
    pub(super) struct Old {
        pub vote: Option<Vote>,
        pub committed: Option<LogId>,
        pub purged: Option<LogId>,
        pub entries: Vec<Entry>,
    }

    pub(super) fn read(path: &Path) -> Result<Old, WalError> {
        let err = |e: &dyn std::fmt::Display| WalError::Legacy { path: path.display().to_string(), why: e.to_string() };
        let db = Database::open(path).map_err(|e| err(&e))?;
        let txn = db.begin_read().map_err(|e| err(&e))?;
        let meta = txn.open_table(META).map_err(|e| err(&e))?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, WalError> {
            Ok(meta.get(key).map_err(|e| err(&e))?.map(|v| v.value().to_vec()))
        };
        let decode = |bytes: Option<Vec<u8>>| -> Result<Option<serde_json::Value>, WalError> {
            bytes.map(|b| serde_json::from_slice(&b).map_err(|e| err(&e))).transpose()
        };
        let vote = decode(get("vote")?)?.map(serde_json::from_value).transpose().map_err(|e| err(&e))?;
        let committed: Option<Option<LogId>> =
            decode(get("committed")?)?.map(serde_json::from_value).transpose().map_err(|e| err(&e))?;
        let purged = decode(get("last_purged")?)?.map(serde_json::from_value).transpose().map_err(|e| err(&e))?;
        let table = txn.open_table(LOG).map_err(|e| err(&e))?;
        let mut entries = Vec::new();
        for item in table.iter().map_err(|e| err(&e))? {
            let (_, v) = item.map_err(|e| err(&e))?;
            entries.push(serde_json::from_slice(v.value()).map_err(|e| err(&e))?);
        }
        Ok(Old { vote, committed: committed.flatten(), purged, entries })
    }
}

#[cfg(test)]
mod tests;
