//! The write-ahead log store against a model, across reopenings, torn
//! tails, corruption, segment deletion, the process lock and the move from
//! redb.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, storage::RaftLogStorage};
use proptest::prelude::*;
use stackd_core::Command;

use super::*;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// An entry; every payload kind a log holds, by index.
fn entry(term: u64, index: u64) -> Entry {
    let payload = match index % 4 {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Membership(openraft::Membership::new(
            vec![std::collections::BTreeSet::from([1, 2])],
            BTreeMap::from([(1, openraft::BasicNode::new("a:1")), (2, openraft::BasicNode::new("b:1"))]),
        )),
        2 => EntryPayload::Normal(Command::RemoveStack { name: format!("s{index}"), at: index }),
        _ => EntryPayload::Normal(Command::Batch {
            commands: vec![Command::CreateObject {
                kind: stackd_core::model::DataKind::Config,
                name: format!("c{index}"),
                data: stackd_core::model::Blob(vec![0xfe; 100]),
                labels: BTreeMap::from([("k".into(), "v".into())]),
                at: index,
            }],
        }),
    };
    Entry { log_id: log_id(term, index), payload }
}

fn open(dir: &Path, segment_bytes: u64) -> LogStore {
    LogStore::open_with(dir, segment_bytes, Duration::from_secs(10)).expect("open the log")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join(LOG_DIR))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

async fn all(store: &mut LogStore) -> Vec<Entry> {
    store.try_get_log_entries(..).await.expect("read")
}

/// What the log should hold.
#[derive(Default)]
struct Model {
    entries: BTreeMap<u64, u64>,
    purged: Option<LogId>,
    vote: Option<Vote>,
    term: u64,
}

impl Model {
    fn last(&self) -> Option<LogId> {
        self.entries.last_key_value().map(|(i, t)| log_id(*t, *i)).or(self.purged)
    }

    async fn check(&self, store: &mut LogStore) -> Result<(), TestCaseError> {
        let state = store.get_log_state().await.expect("state");
        prop_assert_eq!(state.last_purged_log_id, self.purged);
        prop_assert_eq!(state.last_log_id, self.last());
        prop_assert_eq!(store.read_vote().await.expect("vote"), self.vote);
        let got = all(store).await;
        let want: Vec<Entry> = self.entries.iter().map(|(i, t)| entry(*t, *i)).collect();
        prop_assert_eq!(got, want);
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append { n: u64, new_term: bool },
    Truncate { back: u64 },
    Purge { keep: u64 },
    Vote,
    Committed,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..6, any::<bool>()).prop_map(|(n, new_term)| Op::Append { n, new_term }),
        1 => (0u64..4).prop_map(|back| Op::Truncate { back }),
        1 => (0u64..4).prop_map(|keep| Op::Purge { keep }),
        1 => Just(Op::Vote),
        1 => Just(Op::Committed),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the appends, truncations, purges and votes, the log reads
    /// back as the model says, before and after every reopening, with
    /// segments small enough that they roll over and get deleted.
    #[test]
    fn the_log_matches_its_model_across_reopenings(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        rt().block_on(async {
            let mut store = open(dir.path(), 600);
            let mut m = Model { term: 1, ..Model::default() };
            for op in ops {
                match op {
                    Op::Append { n, new_term } => {
                        m.term += u64::from(new_term);
                        let first = m.last().map(|l| l.index + 1).unwrap_or(1);
                        let batch: Vec<Entry> = (first..first + n).map(|i| entry(m.term, i)).collect();
                        store.append_durable(batch).await.expect("append");
                        for i in first..first + n {
                            m.entries.insert(i, m.term);
                        }
                    }
                    Op::Truncate { back } => {
                        let Some((&first, _)) = m.entries.first_key_value() else { continue };
                        let Some((&last, &term)) = m.entries.last_key_value() else { continue };
                        let since = last.saturating_sub(back).max(first);
                        store.truncate(log_id(term, since)).await.expect("truncate");
                        m.entries.split_off(&since);
                    }
                    Op::Purge { keep } => {
                        let Some((&last, _)) = m.entries.last_key_value() else { continue };
                        let Some((&first, _)) = m.entries.first_key_value() else { continue };
                        let upto = last.saturating_sub(keep).max(first);
                        let id = log_id(m.entries[&upto], upto);
                        store.purge(id).await.expect("purge");
                        m.entries = m.entries.split_off(&(upto + 1));
                        m.purged = Some(id);
                    }
                    Op::Vote => {
                        m.term += 1;
                        let vote = Vote::new(m.term, 1);
                        store.save_vote(&vote).await.expect("vote");
                        m.vote = Some(vote);
                    }
                    Op::Committed => {
                        store.save_committed(m.last()).await.expect("committed");
                    }
                    Op::Reopen => {
                        drop(store);
                        store = open(dir.path(), 600);
                    }
                }
                m.check(&mut store).await?;
            }
            drop(store);
            let mut store = open(dir.path(), 600);
            m.check(&mut store).await
        })?;
    }
}

#[test]
fn a_torn_tail_is_cut_off_and_the_log_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = open(dir.path(), wal::SEGMENT_BYTES);
        store.append_durable((1..=5).map(|i| entry(1, i)).collect()).await.expect("append");
        drop(store);
        // What a crash in the middle of a write leaves: a record cut short.
        let whole = wal::frame(&Record::Entry { entry: &entry(1, 6) }, Kind::Entry(log_id(1, 6))).expect("frame");
        let last = segments(dir.path()).pop().expect("a segment");
        let mut bytes = std::fs::read(&last).expect("read");
        let good = bytes.len();
        bytes.extend_from_slice(&whole.bytes[..whole.bytes.len() / 2]);
        std::fs::write(&last, &bytes).expect("tear");

        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        assert_eq!(all(&mut store).await, (1..=5).map(|i| entry(1, i)).collect::<Vec<_>>());
        assert_eq!(std::fs::metadata(&last).expect("stat").len() as usize, good, "the torn record is cut off");
        store.append_durable(vec![entry(1, 6)]).await.expect("append after the cut");
        drop(store);
        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        assert_eq!(all(&mut store).await, (1..=6).map(|i| entry(1, i)).collect::<Vec<_>>());
    });
}

#[test]
fn corruption_before_the_tail_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = open(dir.path(), 300);
        for i in 1..=20 {
            store.append_durable(vec![entry(1, i)]).await.expect("append");
        }
    });
    let files = segments(dir.path());
    assert!(files.len() > 2, "small segments roll over: {files:?}");
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let middle = bytes.len() - 20;
    bytes[middle] ^= 0xff;
    std::fs::write(&files[0], &bytes).expect("corrupt");
    let err = LogStore::open_with(dir.path(), 300, Duration::from_secs(10)).err().expect("refused");
    let msg = err.to_string();
    assert!(matches!(err, WalError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&files[0].display().to_string()) && msg.contains("checksum"), "{msg}");
}

#[test]
fn purged_segments_are_deleted_and_the_marks_survive_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let mut store = open(dir.path(), 400);
        store.save_vote(&Vote::new(3, 1)).await.expect("vote");
        for i in 1..=40 {
            store.append_durable(vec![entry(3, i)]).await.expect("append");
        }
        let before = segments(dir.path()).len();
        store.purge(log_id(3, 37)).await.expect("purge");
        let after = segments(dir.path());
        assert!(after.len() < before && after.len() <= 3, "{before} segments, then {after:?}");
        drop(store);
        let mut store = open(dir.path(), 400);
        assert_eq!(
            store.read_vote().await.expect("vote"),
            Some(Vote::new(3, 1)),
            "the vote's segment is gone, not the vote"
        );
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(3, 37)));
        assert_eq!(all(&mut store).await, (38..=40).map(|i| entry(3, i)).collect::<Vec<_>>());
    });
}

#[test]
fn a_log_in_use_is_not_opened_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), wal::SEGMENT_BYTES);
    let err = LogStore::open_with(dir.path(), wal::SEGMENT_BYTES, Duration::from_millis(100)).err().expect("refused");
    assert!(err.to_string().contains("in use by another stackd process"), "{err}");
    drop(store);
    // Once the writer is gone (it finishes what was queued first), it opens.
    LogStore::open_with(dir.path(), wal::SEGMENT_BYTES, Duration::from_secs(10)).expect("reopened");
}

#[test]
fn a_redb_log_of_an_earlier_stackd_is_moved_over_once() {
    use redb::{Database, TableDefinition};
    let dir = tempfile::tempdir().expect("tempdir");
    let legacy = dir.path().join(LEGACY_DB);
    {
        let db = Database::create(&legacy).expect("redb");
        let txn = db.begin_write().expect("txn");
        {
            let mut log = txn.open_table(TableDefinition::<u64, &[u8]>::new("log")).expect("log");
            for i in 4..=9 {
                log.insert(i, serde_json::to_vec(&entry(2, i)).expect("json").as_slice()).expect("insert");
            }
            let mut meta = txn.open_table(TableDefinition::<&str, &[u8]>::new("meta")).expect("meta");
            let put = |m: &mut redb::Table<&str, &[u8]>, k: &str, v: Vec<u8>| {
                m.insert(k, v.as_slice()).expect("meta insert");
            };
            put(&mut meta, "vote", serde_json::to_vec(&Vote::new(2, 1)).expect("json"));
            put(&mut meta, "committed", serde_json::to_vec(&Some(log_id(2, 8))).expect("json"));
            put(&mut meta, "last_purged", serde_json::to_vec(&log_id(2, 3)).expect("json"));
        }
        txn.commit().expect("commit");
    }
    rt().block_on(async {
        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        assert!(!legacy.exists(), "the old database is removed once copied");
        assert_eq!(all(&mut store).await, (4..=9).map(|i| entry(2, i)).collect::<Vec<_>>());
        assert_eq!(store.read_vote().await.expect("vote"), Some(Vote::new(2, 1)));
        assert_eq!(store.read_committed().await.expect("committed"), Some(log_id(2, 8)));
        let state = store.get_log_state().await.expect("state");
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(2, 3)), Some(log_id(2, 9))));
        drop(store);
        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        assert_eq!(all(&mut store).await.len(), 6, "and it stays");
    });
}

#[test]
fn a_whole_record_that_does_not_decode_is_never_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = open(dir.path(), wal::SEGMENT_BYTES);
        store.append_durable((1..=3).map(|i| entry(1, i)).collect()).await.expect("append");
    });
    // A record with a good checksum that this stackd cannot read (written
    // by a newer one, say): losing it and what follows would lose entries.
    let payload = br#"{"from_the_future":{}}"#;
    let mut record = (payload.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(payload);
    let last = segments(dir.path()).pop().expect("a segment");
    let mut bytes = std::fs::read(&last).expect("read");
    let len = bytes.len();
    bytes.extend_from_slice(&record);
    std::fs::write(&last, &bytes).expect("write");
    let err = LogStore::open_with(dir.path(), wal::SEGMENT_BYTES, Duration::from_secs(10)).err().expect("refused");
    assert!(matches!(err, WalError::Corrupt { .. }) && err.to_string().contains("unreadable"), "{err}");
    assert_eq!(std::fs::metadata(&last).expect("stat").len() as usize, len + record.len(), "nothing cut off");
}

#[test]
fn the_commit_index_rides_along_with_the_next_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        store.append_durable((1..=3).map(|i| entry(1, i)).collect()).await.expect("append");
        store.save_committed(Some(log_id(1, 2))).await.expect("committed");
        assert_eq!(store.read_committed().await.expect("read"), Some(log_id(1, 2)));
        store.append_durable(vec![entry(1, 4)]).await.expect("append");
        drop(store);
        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        assert_eq!(store.read_committed().await.expect("read"), Some(log_id(1, 2)), "written with entry 4");
    });
}

#[test]
fn an_unreadable_redb_log_is_left_alone_with_an_explanation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let legacy = dir.path().join(LEGACY_DB);
    std::fs::write(&legacy, b"not a redb database").expect("write");
    let err = LogStore::open_with(dir.path(), wal::SEGMENT_BYTES, Duration::from_secs(10)).err().expect("refused");
    assert!(matches!(err, WalError::Legacy { .. }), "{err}");
    assert!(err.to_string().contains("left as it was"), "{err}");
    assert_eq!(std::fs::read(&legacy).expect("still there"), b"not a redb database");
    assert!(!dir.path().join(LOG_DIR).exists(), "no half-made log");
}
