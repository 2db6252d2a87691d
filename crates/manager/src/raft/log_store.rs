//! openraft's log storage over the write-ahead log (`wal.rs`).
//!
//! ```text
//!  append ──► cache (readable at once) ──► writer thread: one write + one
//!                                          fdatasync per batch ──► callback
//!  try_get_log_entries ──► cache, else pread of the record in its segment
//! ```
//!
//! - **Durability.** openraft hears that an entry is flushed only after its
//!   `fdatasync`: an acknowledged entry survives `kill -9` and power loss.
//!   Votes, truncations and purges are durable before their call returns.
//!   The commit index is written with the next record (openraft does not
//!   need it durable).
//! - **Order.** Everything that changes the log goes through one writer
//!   thread, in the order openraft asked for it; entries queued together are
//!   written with one sync.
//! - **Memory.** The vote, the marks and where each entry is live in memory.
//!   Recent entries are cached (up to [`CACHE_BYTES`]) so that replication
//!   seldom reads the disk; an entry not yet written is always cached.
//! - **Upgrade.** A log kept by an earlier stackd in `raft.redb` is copied
//!   into the write-ahead log on the first start (`migrate`), then removed.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, RaftLogReader, StorageError, StorageIOError};
use tokio::sync::oneshot;

use super::wal::{self, Files, Framed, Kind, Loc, Record, WalError, Writer};
use super::{Entry, LogId, NodeIdOf, TypeConfig, Vote};

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

/// The log store. Cheap to clone: clones share the log and its writer.
#[derive(Clone)]
pub struct LogStore {
    index: Arc<Mutex<Index>>,
    files: Files,
    writer: Arc<Mutex<Writer>>,
    /// Requests queued for the writer thread and not yet answered.
    pending: Arc<AtomicUsize>,
    jobs: mpsc::Sender<Job>,
}

impl LogStore {
    /// Opens (or creates) the log in the Raft dir `dir`, copying a log kept
    /// in `raft.redb` by an earlier stackd first.
    pub fn open(dir: &Path) -> Result<Self, WalError> {
        Self::open_with(dir, wal::SEGMENT_BYTES, LOCK_WAIT)
    }

    /// [`open`](Self::open) with the segment size and the lock wait given.
    fn open_with(dir: &Path, segment_bytes: u64, wait: std::time::Duration) -> Result<Self, WalError> {
        let lock = lock_dir(dir, wait)?;
        migrate(dir)?;
        let (writer, replayed, files) = Writer::open(&dir.join(LOG_DIR), segment_bytes)?;
        let index = Index {
            locs: replayed.entries,
            vote: replayed.vote,
            committed: replayed.committed,
            purged: replayed.purged,
            ..Index::default()
        };
        let index = Arc::new(Mutex::new(index));
        let (jobs, rx) = mpsc::channel();
        let writer = Arc::new(Mutex::new(writer));
        let pending = Arc::new(AtomicUsize::new(0));
        let (shared, w, p) = (index.clone(), writer.clone(), pending.clone());
        std::thread::Builder::new()
            .name("raft-log".into())
            .spawn(move || {
                run_writer(&w, rx, &shared, &p);
                drop(lock);
            })
            .map_err(|e| WalError::Io { path: dir.display().to_string(), source: e })?;
        Ok(Self { index, files, writer, pending, jobs })
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
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
            let result = write_jobs(&mut writer, &mut jobs, &self.index);
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
    /// they are being flushed) and queues them for the writer.
    fn queue_entries(&self, entries: impl IntoIterator<Item = Entry>, done: Done) -> StorageResult<()> {
        let mut records = Vec::new();
        let mut cached = Vec::new();
        for entry in entries {
            let framed = wal::frame(&Record::Entry { entry: &entry }, Kind::Entry(entry.log_id))
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            cached.push((entry, framed.bytes.len()));
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
        self.send(records, true, done).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    /// Appends `entries` and waits until they are durable (openraft's
    /// callback cannot be made outside openraft).
    #[cfg(test)]
    async fn append_durable(&self, entries: Vec<Entry>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.queue_entries(entries, Done::Reply(tx)).map_err(|e| e.to_string())?;
        rx.await.map_err(|_| "the raft log writer stopped".to_string())?
    }
}

fn run_writer(writer: &Mutex<Writer>, rx: mpsc::Receiver<Job>, index: &Mutex<Index>, pending: &AtomicUsize) {
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
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            write_jobs(&mut w, &mut jobs, index)
        };
        complete(jobs, &result);
        pending.fetch_sub(n, Ordering::SeqCst);
    }
}

/// Writes the records of `jobs` with one write, and one sync if any needs it.
fn write_jobs(writer: &mut Writer, jobs: &mut [Job], index: &Mutex<Index>) -> Result<(), String> {
    let durable = jobs.iter().any(|j| j.durable);
    let records: Vec<Framed> = jobs.iter_mut().flat_map(|j| std::mem::take(&mut j.records)).collect();
    match writer.write(&records, durable) {
        Ok(locs) => {
            index.lock().unwrap_or_else(|p| p.into_inner()).written(&locs);
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "writing the raft log failed");
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
                    wal::read_entry(&file, &loc).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?
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
        self.queue_entries(entries, Done::Flushed(callback))
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

/// Copies a log kept in `raft.redb` (stackd before the write-ahead log)
/// into the write-ahead log: built aside, made durable, renamed into place,
/// and only then is the old database removed. A crash at any point leaves
/// either the old log or the complete new one.
fn migrate(dir: &Path) -> Result<(), WalError> {
    let legacy = dir.join(LEGACY_DB);
    let target = dir.join(LOG_DIR);
    let aside = dir.join(MIGRATING_DIR);
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| WalError::Io { path: p.clone(), source }
    };
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
    let (mut writer, _, _) = Writer::open(&aside, wal::SEGMENT_BYTES)?;
    let mut records = Vec::new();
    if let Some(vote) = old.vote {
        records.push(wal::frame::<&Entry>(&Record::Vote { vote }, Kind::Vote(vote))?);
    }
    if let Some(upto) = old.purged {
        records.push(wal::frame::<&Entry>(&Record::Purge { upto }, Kind::Purge(upto))?);
    }
    records
        .push(wal::frame::<&Entry>(&Record::Committed { committed: old.committed }, Kind::Committed(old.committed))?);
    writer.write(&records, false)?;
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
