//! The Raft log, vote and purge/commit marks in a redb database.
//!
//! Every write is one redb transaction committed with `Durability::Immediate`
//! (fsynced) before openraft is told it is durable: an acknowledged entry
//! survives `kill -9` and power loss. Only the commit index is saved without
//! an fsync (openraft does not need it durable).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, RaftLogReader, StorageError, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Entry, LogId, NodeIdOf, TypeConfig, Vote};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

type StorageResult<T> = Result<T, StorageError<NodeIdOf>>;

fn io_err(
    subject: ErrorSubject<NodeIdOf>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeIdOf> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

/// The log store. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Opens (or creates) the log database at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, redb::Error> {
        let db = Database::create(path)?;
        // Make sure both tables exist so that readers never see "table missing".
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> StorageResult<Option<T>> {
        let subject = || ErrorSubject::Store;
        let txn = self.db.begin_read().map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
        let table = txn.open_table(META).map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
        let Some(v) = table.get(key).map_err(|e| io_err(subject(), ErrorVerb::Read, e))? else {
            return Ok(None);
        };
        serde_json::from_slice(v.value()).map(Some).map_err(|e| io_err(subject(), ErrorVerb::Read, e))
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        subject: ErrorSubject<NodeIdOf>,
    ) -> StorageResult<()> {
        self.write_meta_with(key, value, subject, redb::Durability::Immediate)
    }

    /// [`write_meta`](Self::write_meta) with the given durability.
    fn write_meta_with<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        subject: ErrorSubject<NodeIdOf>,
        durability: redb::Durability,
    ) -> StorageResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        let mut txn = self.db.begin_write().map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        txn.set_durability(durability).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
            table.insert(key, bytes.as_slice()).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        }
        txn.commit().map_err(|e| io_err(subject, ErrorVerb::Write, e))
    }

    /// Deletes log entries in `range` (and records `purged` first, if given) in one transaction.
    fn delete_range(&self, range: impl RangeBounds<u64>, purged: Option<&LogId>) -> StorageResult<()> {
        let subject = || ErrorSubject::Logs;
        let txn = self.db.begin_write().map_err(|e| io_err(subject(), ErrorVerb::Delete, e))?;
        {
            if let Some(p) = purged {
                let bytes = serde_json::to_vec(p).map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
                let mut meta = txn.open_table(META).map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
                meta.insert(LAST_PURGED, bytes.as_slice()).map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
            }
            let mut table = txn.open_table(LOG).map_err(|e| io_err(subject(), ErrorVerb::Delete, e))?;
            table.retain_in(range, |_, _| false).map_err(|e| io_err(subject(), ErrorVerb::Delete, e))?;
        }
        txn.commit().map_err(|e| io_err(subject(), ErrorVerb::Delete, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        let subject = || ErrorSubject::Logs;
        let txn = self.db.begin_read().map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
        let table = txn.open_table(LOG).map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
        let start = match range.start_bound() {
            Bound::Included(s) => Bound::Included(*s),
            Bound::Excluded(s) => Bound::Excluded(*s),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(s) => Bound::Included(*s),
            Bound::Excluded(s) => Bound::Excluded(*s),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in table.range::<u64>((start, end)).map_err(|e| io_err(subject(), ErrorVerb::Read, e))? {
            let (_, v) = item.map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| io_err(subject(), ErrorVerb::Read, e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self.read_meta(LAST_PURGED)?;
        let subject = || ErrorSubject::Logs;
        let txn = self.db.begin_read().map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
        let table = txn.open_table(LOG).map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
        let last = match table.last().map_err(|e| io_err(subject(), ErrorVerb::Read, e))? {
            Some((_, v)) => {
                let entry: Entry =
                    serde_json::from_slice(v.value()).map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> StorageResult<()> {
        self.write_meta(VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        // Not fsynced: openraft needs no durable commit index (after a crash
        // it learns it again from the leader, or re-commits as leader), and
        // the next append's commit makes this one durable too. One fsync per
        // write instead of two.
        self.write_meta_with(COMMITTED, &committed, ErrorSubject::Store, redb::Durability::None)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let subject = || ErrorSubject::Logs;
        let result = (|| {
            let txn = self.db.begin_write().map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
                for entry in entries {
                    let bytes = serde_json::to_vec(&entry).map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
                    table
                        .insert(entry.log_id.index, bytes.as_slice())
                        .map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
                }
            }
            txn.commit().map_err(|e| io_err(subject(), ErrorVerb::Write, e))
        })();
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        self.delete_range(log_id.index.., None)
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        self.delete_range(..=log_id.index, Some(&log_id))
    }
}
