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

/// The data key of every log in these tests (one per test process).
fn key() -> Key {
    static KEY: std::sync::LazyLock<Arc<stackd_tls::seal::DataKey>> =
        std::sync::LazyLock::new(|| Arc::new(stackd_tls::seal::DataKey::generate().expect("data key")));
    Some(KEY.clone())
}

fn open(dir: &Path, segment_bytes: u64) -> LogStore {
    LogStore::open_with(dir, segment_bytes, Duration::from_secs(10), key()).expect("open the log")
}

/// A record as the writer writes it, header included, sealed with [`key`].
fn encoded(record: &Record<&Entry>, kind: Kind) -> Vec<u8> {
    let framed = wal::frame(record, kind).expect("frame");
    wal::encode(&framed.json, &key())
}

/// The length of the record whose header starts `header`.
fn record_len(header: &[u8]) -> usize {
    (u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) & !(1 << 31)) as usize
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

/// Writes entries 1..=20 in 300-byte segments; returns the segments (more than two).
fn twenty_entries_in_small_segments(dir: &Path) -> Vec<std::path::PathBuf> {
    rt().block_on(async {
        let store = open(dir, 300);
        for i in 1..=20 {
            store.append_flushed(vec![entry(1, i)]).await.expect("append");
        }
    });
    let files = segments(dir);
    assert!(files.len() > 2, "small segments roll over: {files:?}");
    files
}

/// Where the records of a segment end: at its first zero header (the
/// allocated, unwritten rest), or at its end.
fn records_end(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 4) {
        let len = record_len(header);
        if len == 0 {
            break;
        }
        at += 8 + len;
    }
    at.min(bytes.len())
}

/// Writes `data` at `at` in the file at `path`, as a write that reached the disk would.
fn write_at(path: &Path, at: usize, data: &[u8]) {
    let mut bytes = std::fs::read(path).expect("read");
    if bytes.len() < at + data.len() {
        bytes.resize(at + data.len(), 0);
    }
    bytes[at..at + data.len()].copy_from_slice(data);
    std::fs::write(path, &bytes).expect("write");
}

/// Reopens the log in `dir` (default segments) and checks that it holds
/// entries 1..=n of term 1.
async fn reopened_with(dir: &Path, n: u64) -> LogStore {
    let mut store = open(dir, wal::SEGMENT_BYTES);
    assert_eq!(all(&mut store).await, (1..=n).map(|i| entry(1, i)).collect::<Vec<_>>());
    store
}

/// The log goes on after a repair: `store` (holding 1..=n) takes entry
/// n+1, and holds 1..=n+1 once reopened.
async fn goes_on(store: LogStore, dir: &Path, n: u64) {
    store.append_flushed(vec![entry(1, n + 1)]).await.expect("append after the repair");
    drop(store);
    reopened_with(dir, n + 1).await;
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
    Append {
        n: u64,
        new_term: bool,
    },
    Truncate {
        back: u64,
    },
    Purge {
        keep: u64,
    },
    /// A vote for this node or another, committed or not: only a committed
    /// vote of its own makes the node a leader, whose appends are synced by
    /// the syncer thread; the others are synced before the callback.
    Vote {
        mine: bool,
        committed: bool,
    },
    Committed,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..6, any::<bool>()).prop_map(|(n, new_term)| Op::Append { n, new_term }),
        1 => (0u64..4).prop_map(|back| Op::Truncate { back }),
        1 => (0u64..4).prop_map(|keep| Op::Purge { keep }),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(mine, committed)| Op::Vote { mine, committed }),
        1 => Just(Op::Committed),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the appends, truncations, purges and votes, the log reads
    /// back as the model says, before and after every reopening, with
    /// segments small enough that they roll over and get deleted; and every
    /// append becomes durable, whether this node leads or follows.
    #[test]
    fn the_log_matches_its_model_across_reopenings(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        rt().block_on(async {
            let mut store = open(dir.path(), 600).for_node(1);
            let mut m = Model { term: 1, ..Model::default() };
            for op in ops {
                match op {
                    Op::Append { n, new_term } => {
                        m.term += u64::from(new_term);
                        let first = m.last().map(|l| l.index + 1).unwrap_or(1);
                        let batch: Vec<Entry> = (first..first + n).map(|i| entry(m.term, i)).collect();
                        store.append_flushed(batch).await.expect("append");
                        for i in first..first + n {
                            m.entries.insert(i, m.term);
                        }
                        let durable = store.durable();
                        let synced = tokio::time::timeout(Duration::from_secs(10), durable.wait(first + n - 1)).await;
                        prop_assert!(matches!(synced, Ok(Ok(()))), "entry {} never became durable", first + n - 1);
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
                    Op::Vote { mine, committed } => {
                        m.term += 1;
                        let node = if mine { 1 } else { 2 };
                        let vote = if committed { Vote::new_committed(m.term, node) } else { Vote::new(m.term, node) };
                        store.save_vote(&vote).await.expect("vote");
                        m.vote = Some(vote);
                    }
                    Op::Committed => {
                        store.save_committed(m.last()).await.expect("committed");
                    }
                    Op::Reopen => {
                        drop(store);
                        store = open(dir.path(), 600).for_node(1);
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
        store.append_flushed((1..=5).map(|i| entry(1, i)).collect()).await.expect("append");
        drop(store);
        // What a crash in the middle of a write leaves: a record cut short.
        let whole = encoded(&Record::Entry { entry: &entry(1, 6) }, Kind::Entry(log_id(1, 6)));
        let last = segments(dir.path()).pop().expect("a segment");
        let bytes = std::fs::read(&last).expect("read");
        assert_eq!(bytes.len() as u64, wal::SEGMENT_BYTES, "a segment is allocated whole");
        let good = records_end(&bytes);
        write_at(&last, good, &whole[..whole.len() / 2]);

        let store = reopened_with(dir.path(), 5).await;
        let bytes = std::fs::read(&last).expect("read");
        assert_eq!(records_end(&bytes), good, "the torn record is cut off");
        assert!(bytes[good..].iter().all(|&b| b == 0), "and its bytes are gone");
        assert_eq!(bytes.len() as u64, wal::SEGMENT_BYTES, "allocated again");
        goes_on(store, dir.path(), 5).await;
    });
}

#[test]
fn corruption_before_the_tail_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = twenty_entries_in_small_segments(dir.path());
    let mut bytes = std::fs::read(&files[0]).expect("read");
    let middle = bytes.len() - 20;
    bytes[middle] ^= 0xff;
    std::fs::write(&files[0], &bytes).expect("corrupt");
    let err = LogStore::open_with(dir.path(), 300, Duration::from_secs(10), key()).err().expect("refused");
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
            store.append_flushed(vec![entry(3, i)]).await.expect("append");
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
    let err =
        LogStore::open_with(dir.path(), wal::SEGMENT_BYTES, Duration::from_millis(100), key()).err().expect("refused");
    assert!(err.to_string().contains("in use by another stackd process"), "{err}");
    drop(store);
    // Once the writer is gone (it finishes what was queued first), it opens.
    LogStore::open_with(dir.path(), wal::SEGMENT_BYTES, Duration::from_secs(10), key()).expect("reopened");
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
        store.append_flushed((1..=3).map(|i| entry(1, i)).collect()).await.expect("append");
    });
    // A record with a good checksum that this stackd cannot read (written
    // by a newer one, say): losing it and what follows would lose entries.
    let payload = br#"{"from_the_future":{}}"#;
    let mut record = (payload.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(payload);
    let last = segments(dir.path()).pop().expect("a segment");
    let before = std::fs::read(&last).expect("read");
    write_at(&last, records_end(&before), &record);
    let written = std::fs::read(&last).expect("read");
    let err =
        LogStore::open_with(dir.path(), wal::SEGMENT_BYTES, Duration::from_secs(10), key()).err().expect("refused");
    assert!(matches!(err, WalError::Corrupt { .. }) && err.to_string().contains("unreadable"), "{err}");
    assert!(std::fs::read(&last).expect("read") == written, "nothing cut off");
}

#[test]
fn the_commit_index_rides_along_with_the_next_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        store.append_flushed((1..=3).map(|i| entry(1, i)).collect()).await.expect("append");
        store.save_committed(Some(log_id(1, 2))).await.expect("committed");
        assert_eq!(store.read_committed().await.expect("read"), Some(log_id(1, 2)));
        store.append_flushed(vec![entry(1, 4)]).await.expect("append");
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
    let err =
        LogStore::open_with(dir.path(), wal::SEGMENT_BYTES, Duration::from_secs(10), key()).err().expect("refused");
    assert!(matches!(err, WalError::Legacy { .. }), "{err}");
    assert!(err.to_string().contains("left as it was"), "{err}");
    assert_eq!(std::fs::read(&legacy).expect("still there"), b"not a redb database");
    assert!(!dir.path().join(LOG_DIR).exists(), "no half-made log");
}

#[test]
fn a_torn_write_whose_header_is_lost_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = open(dir.path(), wal::SEGMENT_BYTES);
        store.append_flushed((1..=3).map(|i| entry(1, i)).collect()).await.expect("append");
        drop(store);
        // The sectors of an unfinished write can reach the disk in any
        // order: here the record's payload did, its header did not.
        let whole = encoded(&Record::Entry { entry: &entry(1, 4) }, Kind::Entry(log_id(1, 4)));
        let last = segments(dir.path()).pop().expect("a segment");
        let good = records_end(&std::fs::read(&last).expect("read"));
        write_at(&last, good + 8, &whole[8..]);

        let store = reopened_with(dir.path(), 3).await;
        let bytes = std::fs::read(&last).expect("read");
        assert!(bytes[good..].iter().all(|&b| b == 0), "the payload after the zero header is cut off");
        goes_on(store, dir.path(), 3).await;
    });
}

#[test]
fn a_segment_that_grew_is_allocated_on_open_and_a_half_made_one_is_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = open(dir.path(), wal::SEGMENT_BYTES);
        store.append_flushed((1..=3).map(|i| entry(1, i)).collect()).await.expect("append");
        drop(store);
        // The last segment as an earlier version (or a file system without
        // fallocate) leaves it: as long as its records.
        let last = segments(dir.path()).pop().expect("a segment");
        let end = records_end(&std::fs::read(&last).expect("read"));
        std::fs::OpenOptions::new().write(true).open(&last).and_then(|f| f.set_len(end as u64)).expect("shrink");
        // And a segment a crash left half made.
        let half_made = dir.path().join(LOG_DIR).join("0000000000000002.wal.new");
        std::fs::write(&half_made, b"\0\0").expect("half-made segment");

        let store = reopened_with(dir.path(), 3).await;
        assert_eq!(std::fs::metadata(&last).expect("stat").len(), wal::SEGMENT_BYTES, "allocated whole");
        assert!(!half_made.exists(), "the half-made segment is deleted");
        goes_on(store, dir.path(), 3).await;
    });
}

#[test]
fn zeros_in_a_segment_that_is_not_the_last_refuse_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = twenty_entries_in_small_segments(dir.path());
    // Acknowledged records zeroed: not what a crash leaves, and not the
    // allocated end of a segment (a segment is followed by another only once full).
    let bytes = std::fs::read(&files[0]).expect("read");
    let end = records_end(&bytes);
    let first = 8 + record_len(&bytes);
    write_at(&files[0], first, &vec![0; end - first]);
    let err = LogStore::open_with(dir.path(), 300, Duration::from_secs(10), key()).err().expect("refused");
    assert!(matches!(err, WalError::Corrupt { .. }) && err.to_string().contains("zeros"), "{err}");
}

/// Keeps a store's syncer thread from syncing until dropped. The lock is
/// held by a thread of its own, so that a test may await, and drop the
/// store, meanwhile.
struct Hold {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn hold(syncs: &Arc<Syncs>) -> Hold {
    let (locked, is_locked) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let syncs = syncs.clone();
    let thread = std::thread::spawn(move || {
        let _held = syncs.held.lock().unwrap_or_else(|p| p.into_inner());
        let _ = locked.send(());
        // Until the sender is dropped.
        let _ = released.recv();
    });
    is_locked.recv().expect("the syncer is held");
    Hold { release: Some(release), thread: Some(thread) }
}

impl Drop for Hold {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The log of node 1 while it leads (its vote for itself, committed): its
/// appends are reported flushed once written and synced by the syncer.
async fn leading(dir: &Path) -> LogStore {
    let mut store = open(dir, wal::SEGMENT_BYTES).for_node(1);
    store.save_vote(&Vote::new_committed(1, 1)).await.expect("vote");
    store
}

/// A leading store that wrote entries 1 and 2 with its syncer held, so
/// that neither is synced yet; its gates; and the hold.
async fn leading_with_two_unsynced(dir: &Path) -> (LogStore, Durable, Hold) {
    let store = leading(dir).await;
    let durable = store.durable();
    let held = hold(&store.syncs);
    store.append_flushed(vec![entry(1, 1), entry(1, 2)]).await.expect("append");
    (store, durable, held)
}

#[test]
fn a_leaders_append_is_durable_only_once_the_syncer_synced_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        // Reported flushed once written: the syncer is held.
        let (mut store, durable, held) = leading_with_two_unsynced(dir.path()).await;
        assert_eq!(all(&mut store).await.len(), 2, "readable at once");
        assert!(!durable.holds(2).expect("holds"), "durable before any sync");
        let early = tokio::time::timeout(Duration::from_millis(300), durable.wait(2)).await;
        assert!(early.is_err(), "a gate opened before the leader's copy was synced");
        drop(held);
        tokio::time::timeout(Duration::from_secs(10), durable.wait(2)).await.expect("synced in time").expect("durable");
        assert!(durable.holds(1).expect("holds") && durable.holds(2).expect("holds"));
        // Not written at all: not durable.
        assert!(!durable.holds(3).expect("holds"));
    });
}

#[test]
fn a_followers_append_is_synced_before_it_is_reported_flushed() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let mut store = open(dir.path(), wal::SEGMENT_BYTES).for_node(1);
        let durable = store.durable();
        // Following node 2; then a candidate (its own vote, not committed).
        for (vote, at) in [(Vote::new_committed(1, 2), 1), (Vote::new(2, 1), 2)] {
            store.save_vote(&vote).await.expect("vote");
            let syncs = store.syncs.clone();
            let _held = hold(&syncs);
            store.append_flushed(vec![entry(vote.leader_id.term, at)]).await.expect("append");
            assert!(durable.holds(at).expect("holds"), "entry {at} under {vote} reported before it was synced");
        }
    });
}

#[test]
fn the_leaders_unsynced_appends_are_synced_when_the_log_closes_and_gates_hear_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let (store, durable, held) = leading_with_two_unsynced(dir.path()).await;
        assert!(!durable.holds(2).expect("holds"));
        // The writer stops and waits for the syncer, which is held.
        drop(store);
        tokio::time::sleep(Duration::from_millis(200)).await;
        {
            let s = durable.syncs.lock();
            assert!(s.failed.is_none() && s.synced < s.written, "the close did not wait for the syncer");
        }
        drop(held);
        let never = tokio::time::timeout(Duration::from_secs(10), durable.wait(3)).await.expect("no hang");
        assert!(never.is_err(), "a gate for an entry never written passed after the log closed");
        // Synced on the way out, before the gates heard that the log closed.
        let s = durable.syncs.lock();
        assert!(s.synced >= s.written, "unsynced writes left at close: {:?} < {:?}", s.synced, s.written);
    });
}

#[test]
fn a_gated_state_machine_applies_a_leaders_entries_only_once_they_are_synced() {
    use openraft::storage::RaftStateMachine;
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = leading(dir.path()).await;
        let sm = super::super::StateMachine::open(&dir.path().join("snapshots"), key().expect("a key"), false)
            .expect("state machine");
        let shared = sm.shared();
        let mut sm = sm.gated(store.durable());
        let entries = vec![entry(1, 1), entry(1, 2)];
        let syncs = store.syncs.clone();
        let held = hold(&syncs);
        store.append_flushed(entries.clone()).await.expect("append");
        // openraft would now count the leader's copy toward a commit.
        let apply = tokio::spawn(async move { sm.apply(entries).await.map(|replies| replies.len()) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!apply.is_finished(), "entries applied before the leader's copy was synced");
        assert_eq!(*shared.applied().borrow(), 0, "the state moved before the leader's copy was synced");
        drop(held);
        let applied = tokio::time::timeout(Duration::from_secs(10), apply).await.expect("applied once synced");
        assert_eq!(applied.expect("task").expect("apply"), 2);
        assert_eq!(*shared.applied().borrow(), 2);
    });
}

#[test]
fn a_leaders_vote_stands_within_a_boot_and_is_downgraded_after_a_reboot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let boot_file = dir.path().join(LOG_DIR).join(BOOT_FILE);
    rt().block_on(async {
        let store = leading(dir.path()).await;
        store.append_flushed(vec![entry(1, 1), entry(1, 2)]).await.expect("append");
        drop(store);
        // A killed process, the machine still up: nothing unsynced was lost,
        // and the leader takes up its term again.
        let mut store = open(dir.path(), wal::SEGMENT_BYTES).for_node(1);
        assert_eq!(store.read_vote().await.expect("vote"), Some(Vote::new_committed(1, 1)));
        drop(store);
        // The machine restarted (another boot id): what the leader had not
        // synced may be gone, so it must not lead term 1 again.
        std::fs::write(&boot_file, "an-earlier-boot\n").expect("write the boot file");
        let mut store = open(dir.path(), wal::SEGMENT_BYTES).for_node(1);
        assert_eq!(store.read_vote().await.expect("vote"), Some(Vote::new(1, 1)), "downgraded");
        assert!(!store.leads(), "a downgraded vote is no leadership");
        assert_eq!(all(&mut store).await.len(), 2, "the entries stay");
        drop(store);
        // Durably, and the boot is this one now.
        assert_eq!(std::fs::read_to_string(&boot_file).expect("boot file").trim(), super::boot_id());
        let mut store = open(dir.path(), wal::SEGMENT_BYTES).for_node(1);
        assert_eq!(store.read_vote().await.expect("vote"), Some(Vote::new(1, 1)), "the downgrade was kept");
        // A follower's committed vote is downgraded alike, and harmlessly: the
        // leader of that term commits it again.
        store.save_vote(&Vote::new_committed(2, 2)).await.expect("vote");
        drop(store);
        std::fs::remove_file(&boot_file).expect("remove the boot file (as an earlier stackd left the dir)");
        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        assert_eq!(store.read_vote().await.expect("vote"), Some(Vote::new(2, 2)));
    });
}

#[test]
fn durable_upto_is_the_last_synced_entry_at_or_before_the_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = leading(dir.path()).await;
        let durable = store.durable();
        store.append_flushed(vec![entry(1, 1), entry(1, 2)]).await.expect("append");
        durable.wait(2).await.expect("synced");
        let held = hold(&store.syncs);
        store.append_flushed(vec![entry(1, 3), entry(1, 4)]).await.expect("append");
        assert_eq!(durable.durable_upto(log_id(1, 4)), Ok(Some(log_id(1, 2))), "3 and 4 are not synced");
        assert_eq!(durable.durable_upto(log_id(1, 1)), Ok(Some(log_id(1, 1))));
        drop(held);
        durable.wait(4).await.expect("synced");
        assert_eq!(durable.durable_upto(log_id(1, 4)), Ok(Some(log_id(1, 4))));
    });
}

#[test]
fn a_failed_sync_fails_every_gate_and_every_later_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let (store, durable, held) = leading_with_two_unsynced(dir.path()).await;
        store.syncs.fail_syncs.store(true, Ordering::SeqCst);
        drop(held);
        let gate = tokio::time::timeout(Duration::from_secs(10), durable.wait(2)).await.expect("no hang");
        assert!(gate.is_err_and(|e| e.contains("syncing the raft log failed")), "a gate passed after a failed sync");
        assert!(durable.holds(1).is_err(), "entries written before a failed sync count as durable");
        let later = store.append_flushed(vec![entry(1, 3)]).await;
        assert!(later.is_err(), "a write went through after a failed sync");
    });
}

#[test]
fn a_failed_write_fails_the_gates_of_what_the_leader_wrote_unsynced_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let (mut store, durable, held) = leading_with_two_unsynced(dir.path()).await;
        // A durable write fails (its sync, say): the page cache may have
        // dropped entries 1 and 2, and a later sync would not say so.
        store.syncs.fail_writes.store(true, Ordering::SeqCst);
        assert!(store.save_vote(&Vote::new_committed(2, 1)).await.is_err(), "the injected failure");
        store.syncs.fail_writes.store(false, Ordering::SeqCst);
        drop(held);
        let gate = tokio::time::timeout(Duration::from_secs(10), durable.wait(2)).await.expect("no hang");
        assert!(gate.is_err_and(|e| e.contains("writing the raft log failed")), "a gate passed after a failed write");
    });
}

/// Whether any segment of the log in `dir` holds `needle` as it is.
fn log_holds(dir: &Path, needle: &[u8]) -> bool {
    segments(dir).iter().any(|p| std::fs::read(p).expect("read").windows(needle.len()).any(|w| w == needle))
}

#[test]
fn records_are_sealed_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = open(dir.path(), wal::SEGMENT_BYTES);
        store.append_flushed((1..=8).map(|i| entry(1, i)).collect()).await.expect("append");
        drop(store);
        // Entry 3's config holds 0xfe bytes: "/v7+" in its JSON's base64.
        assert!(!log_holds(dir.path(), b"/v7+/v7+"), "a config's value is readable in the log");
        assert!(!log_holds(dir.path(), b"remove_stack"), "a command is readable in the log");
        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        assert_eq!(all(&mut store).await, (1..=8).map(|i| entry(1, i)).collect::<Vec<_>>());
        drop(store);
        // Another key does not open it, and says so rather than cutting records off.
        let other = Some(Arc::new(stackd_tls::seal::DataKey::generate().expect("key")));
        let err =
            LogStore::open_with(dir.path(), wal::SEGMENT_BYTES, Duration::from_secs(10), other).err().expect("refused");
        assert!(err.to_string().contains("another data key"), "{err}");
        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        assert_eq!(all(&mut store).await.len(), 8, "nothing was cut off");
    });
}

#[test]
fn a_plain_log_of_an_earlier_stackd_is_rewritten_sealed() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let mut store = LogStore::open_with(dir.path(), 600, Duration::from_secs(10), None).expect("plain");
        store.save_vote(&Vote::new(2, 1)).await.expect("vote");
        for i in 1..=30 {
            store.append_flushed(vec![entry(2, i)]).await.expect("append");
        }
        store.save_committed(Some(log_id(2, 25))).await.expect("committed");
        store.purge(log_id(2, 4)).await.expect("purge");
        drop(store);
        assert!(log_holds(dir.path(), b"/v7+/v7+"), "the earlier format is plain");
        assert!(segments(dir.path()).len() > 2, "several segments");

        let mut store = open(dir.path(), 600);
        assert!(!log_holds(dir.path(), b"/v7+/v7+"), "rewritten sealed");
        assert!(!dir.path().join(SEALING_DIR).exists() && !dir.path().join(PLAIN_DIR).exists());
        assert_eq!(all(&mut store).await, (5..=30).map(|i| entry(2, i)).collect::<Vec<_>>());
        assert_eq!(store.read_committed().await.expect("committed"), Some(log_id(2, 25)));
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 4)));
        // The vote stands (downgraded only after a reboot: see resume_vote).
        assert_eq!(store.read_vote().await.expect("vote").map(|v| v.leader_id), Some(Vote::new(2, 1).leader_id));
        store.append_flushed(vec![entry(2, 31)]).await.expect("and it goes on");
        drop(store);
        let mut store = open(dir.path(), 600);
        assert_eq!(all(&mut store).await.len(), 27);
    });
}

#[test]
fn plain_records_are_refused_in_a_log_that_is_not_upgrading() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = LogStore::open_with(dir.path(), wal::SEGMENT_BYTES, Duration::from_secs(10), None).expect("plain");
        store.append_flushed((1..=3).map(|i| entry(1, i)).collect()).await.expect("append");
    });
    let err = LogStore::open_with_plain(dir.path(), wal::SEGMENT_BYTES, Duration::from_secs(10), key(), false)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("plain text in a log that is sealed"), "{err}");
    assert!(log_holds(dir.path(), b"/v7+/v7+"), "and left as it was");
}

#[test]
fn a_crash_while_sealing_leaves_a_whole_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    rt().block_on(async {
        let store = LogStore::open_with(dir.path(), wal::SEGMENT_BYTES, Duration::from_secs(10), None).expect("plain");
        store.append_flushed((1..=6).map(|i| entry(1, i)).collect()).await.expect("append");
        drop(store);
        // A crash before the copy was finished: a partial copy beside the plain log.
        std::fs::create_dir(dir.path().join(SEALING_DIR)).expect("partial copy");
        std::fs::write(dir.path().join(SEALING_DIR).join("0000000000000001.wal"), b"partial").expect("write");
        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        assert_eq!(all(&mut store).await, (1..=6).map(|i| entry(1, i)).collect::<Vec<_>>());
        assert!(!log_holds(dir.path(), b"/v7+/v7+"));
        drop(store);
        // A crash after the plain log went aside and before the copy took its place.
        let log = dir.path().join(LOG_DIR);
        std::fs::rename(&log, dir.path().join(SEALING_DIR)).expect("copy not yet in place");
        std::fs::create_dir(dir.path().join(PLAIN_DIR)).expect("the plain log aside");
        let mut store = open(dir.path(), wal::SEGMENT_BYTES);
        assert_eq!(all(&mut store).await, (1..=6).map(|i| entry(1, i)).collect::<Vec<_>>());
        assert!(!dir.path().join(PLAIN_DIR).exists(), "the plain log is deleted");
    });
}
