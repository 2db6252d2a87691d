//! Cluster snapshot files (`stackctl snapshot save`): the state at an
//! applied index, encrypted to the cluster's recovery key
//! ([`stackd_core::backup`] is the layout, [`stackd_tls::age`] the
//! encryption).
//!
//! Any manager can take one once a read barrier has confirmed, with the
//! leader, that it has applied everything committed before the request: the
//! state it holds is then the state at a committed index, taken under the
//! state machine's lock with the log id of its last entry. Encoding and
//! encryption run off the runtime's workers, on a reference to that state
//! (an apply meanwhile copies it, as for any controller snapshot).

use std::sync::Arc;

use stackd_core::ClusterState;
use stackd_core::backup::{self, BackupError, Header};
use stackd_tls::age::{self, AgeError, Recipient};

use crate::raft::Shared;

/// Why a snapshot file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// The cluster has no recovery key (initialised before snapshots existed).
    #[error(
        "the cluster has no recovery key to encrypt snapshots to: make one with \
         `stackctl cluster recovery-key --rotate` (it prints the private half; keep it off the cluster)"
    )]
    NoRecipient,
    /// The recipient in the state does not parse.
    #[error("the cluster's recovery key is unusable: {0}")]
    BadRecipient(AgeError),
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] BackupError),
    /// Encryption failed.
    #[error("encrypting the snapshot: {0}")]
    Encrypt(AgeError),
    /// The encoding task died.
    #[error("the snapshot task failed: {0}")]
    Task(String),
    /// The cluster is not initialised yet.
    #[error("the cluster is not initialised yet")]
    Uninitialised,
}

/// A snapshot file of the state `shared` holds now, taken at `now` (Unix ms).
pub async fn take(shared: &Shared, now: u64) -> Result<(Header, Vec<u8>), SnapshotFileError> {
    let (last, state) = shared.snapshot_at();
    if state.cluster_id.is_empty() {
        return Err(SnapshotFileError::Uninitialised);
    }
    let header = Header {
        format: backup::FORMAT,
        cluster_id: state.cluster_id.clone(),
        index: last.map(|l| l.index).unwrap_or(0),
        term: last.map(|l| l.leader_id.term).unwrap_or(0),
        created_at: now,
        stackd_version: env!("CARGO_PKG_VERSION").to_string(),
        recipient: state.security.recovery_recipient.clone(),
    };
    tokio::task::spawn_blocking(move || seal(header, &state))
        .await
        .map_err(|e| SnapshotFileError::Task(e.to_string()))?
}

fn seal(header: Header, state: &Arc<ClusterState>) -> Result<(Header, Vec<u8>), SnapshotFileError> {
    if header.recipient.is_empty() {
        return Err(SnapshotFileError::NoRecipient);
    }
    let recipient = Recipient::parse(&header.recipient).map_err(SnapshotFileError::BadRecipient)?;
    let plain = backup::plaintext(&header, state)?;
    let sealed = age::encrypt(&recipient, &plain).map_err(SnapshotFileError::Encrypt)?;
    drop(plain);
    let file = backup::file(&header, &sealed)?;
    Ok((header, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stackd_tls::age::Identity;

    #[test]
    fn a_sealed_state_opens_with_the_identity_only() {
        let id = Identity::generate().expect("identity");
        let mut state = ClusterState { cluster_id: "c1".into(), ..ClusterState::default() };
        state.security.recovery_recipient = id.recipient().to_string();
        let header = Header {
            format: backup::FORMAT,
            cluster_id: "c1".into(),
            index: 9,
            term: 2,
            created_at: 5,
            stackd_version: "x".into(),
            recipient: id.recipient().to_string(),
        };
        let (h, file) = seal(header, &Arc::new(state.clone())).expect("seal");
        let (back, sealed) = backup::split(&file).expect("split");
        assert_eq!(back, h);
        let plain = age::decrypt(&[id], sealed).expect("decrypt");
        assert_eq!(backup::open(&back, &plain).expect("open").state_hash(), state.state_hash());
        let other = Identity::generate().expect("identity");
        assert!(matches!(age::decrypt(&[other], sealed), Err(AgeError::WrongKey)));
    }

    #[test]
    fn a_cluster_without_a_recovery_key_is_told_how_to_make_one() {
        let state = ClusterState { cluster_id: "c1".into(), ..ClusterState::default() };
        let header = Header {
            format: backup::FORMAT,
            cluster_id: "c1".into(),
            index: 1,
            term: 1,
            created_at: 5,
            stackd_version: "x".into(),
            recipient: String::new(),
        };
        let e = seal(header, &Arc::new(state)).expect_err("refused");
        assert!(e.to_string().contains("recovery-key --rotate"), "{e}");
    }
}
