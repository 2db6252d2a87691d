//! openraft's storage conformance suite against our stores, and the Raft
//! service refusing bad snapshot streams.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

use super::{LogStore, StateMachine, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = std::sync::Arc::new(stackd_tls::seal::DataKey::generate().expect("key"));
        let log = LogStore::open(dir.path(), key.clone(), false).expect("open log");
        let sm = StateMachine::open(&dir.path().join("snapshots"), key, false)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("the storage conformance suite failed: {e}");
    }
}

/// A snapshot stream that is malformed or corrupt is refused whole by the
/// Raft service, and the receiving node keeps running.
#[tokio::test]
async fn a_bad_snapshot_stream_is_refused_and_the_node_survives() {
    use stackd_proto::v1;
    use v1::snapshot_chunk::Part;

    let dir = tempfile::tempdir().expect("tempdir");
    let node = super::RaftNode::start(dir.path(), 7, &super::Timings::default()).await.expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tonic::transport::Server::builder()
        .add_service(super::RaftService::new(node.clone()).server())
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(server);
    let peers = super::Peers::new(Box::new(super::PlainConnector::default()), std::time::Duration::from_secs(1));
    let mut client = peers.client(1, &addr.to_string()).expect("client");

    let vote = serde_json::to_vec(&super::Vote::new(3, 1)).expect("vote");
    let meta = super::SnapshotMetaOf {
        last_log_id: Some(super::LogId::new(openraft::CommittedLeaderId::new(3, 1), 10)),
        last_membership: super::StoredMembershipOf::default(),
        snapshot_id: "3-10-0".into(),
    };
    let meta = serde_json::to_vec(&meta).expect("meta");
    let header = |size: u64| v1::SnapshotChunk {
        part: Some(Part::Header(v1::SnapshotHeader { vote_json: vote.clone(), meta_json: meta.clone(), size })),
    };
    let data = |b: &[u8]| v1::SnapshotChunk { part: Some(Part::Data(b.to_vec())) };
    let cases = [
        ("no header", vec![data(b"abc")], "starts with its header"),
        ("short", vec![header(10), data(b"abc")], "ended after 3 of 10 bytes"),
        ("long", vec![header(2), data(b"abc")], "larger than its header says"),
        ("two headers", vec![header(3), header(3)], "one header"),
        ("not a snapshot", vec![header(3), data(b"abc")], "refused snapshot"),
    ];
    for (what, chunks, expected) in cases {
        let err = client.install_snapshot(tokio_stream::iter(chunks)).await.expect_err(what);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains(expected), "{what}: {}", err.message());
    }
    // Nothing was installed, and Raft still answers.
    assert_eq!(node.shared().snapshots_installed(), 0);
    node.initialize("127.0.0.1:1").await.expect("raft still runs");
    node.wait_for_leader(std::time::Duration::from_secs(5)).await.expect("and leads its one-node cluster");
    node.shutdown().await;
    server.abort();
}

/// The snapshot file is sealed on disk; one written in plain text by an
/// earlier stackd is read, then sealed.
#[tokio::test]
async fn the_snapshot_file_is_sealed_on_disk() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let dir = tempfile::tempdir().expect("tempdir");
    let key = std::sync::Arc::new(stackd_tls::seal::DataKey::generate().expect("key"));
    let snapshots = dir.path().join("snapshots");
    let mut sm = StateMachine::open(&snapshots, key.clone(), false).expect("open");
    let built = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let plain = built.snapshot.into_inner();
    let file = snapshots.join("snapshot.current");
    let on_disk = std::fs::read(&file).expect("read");
    assert!(on_disk.starts_with(b"STACKD-SEALED-SNAPSHOT\n"));
    assert!(!on_disk.windows(16).any(|w| w == b"STACKD-SNAPSHOT\n"), "the snapshot inside is sealed");
    let current = sm.get_current_snapshot().await.expect("current").expect("a snapshot");
    assert_eq!(current.snapshot.into_inner(), plain, "read back opened");

    // An earlier stackd's plain file: refused unless the manager upgrades.
    std::fs::write(&file, &plain).expect("write plain");
    let err = StateMachine::open(&snapshots, key.clone(), false).err().expect("refused");
    assert!(err.to_string().contains("plain text"), "{err}");
    let mut sm = StateMachine::open(&snapshots, key.clone(), true).expect("a plain file opens");
    assert!(std::fs::read(&file).expect("read").starts_with(b"STACKD-SEALED-SNAPSHOT\n"), "and is sealed");
    assert!(sm.get_current_snapshot().await.expect("current").is_some());
    // Another key does not open it.
    let other = std::sync::Arc::new(stackd_tls::seal::DataKey::generate().expect("key"));
    let err = StateMachine::open(&snapshots, other, false).err().expect("refused");
    assert!(err.to_string().contains("cannot be opened with this key"), "{err}");
}
