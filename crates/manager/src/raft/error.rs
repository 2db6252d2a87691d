//! [`RaftError`], why a Raft operation failed, and the one mapping of it to
//! the gRPC status every caller sees: the control API, the dispatcher, and a
//! follower whose write a leader refused (`Raft.ForwardStream`).
//!
//! | error | code | metadata |
//! | --- | --- | --- |
//! | `NotLeader` | `unavailable` | `x-stackd-refused: not-leader`, `x-stackd-leader: ADDR` when known |
//! | `NoQuorum` | `unavailable` | `x-stackd-refused: no-quorum` |
//! | `Timeout` | `deadline_exceeded` (it may still commit: not retried) | |
//! | `Membership` | `failed_precondition` | |
//! | anything else | `internal` | |
//!
//! The metadata says the refusal proposed nothing, so a caller may retry it
//! without risking a duplicate write; a following manager does.

use stackd_proto::metadata;
use tonic::Status;
use tonic::metadata::MetadataValue;

/// Why a Raft operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RaftError {
    /// This manager is not the leader; retry on the leader (forwarding does that).
    #[error("not the leader{}", leader.map(|l| format!(" (the leader is node {l:016x})")).unwrap_or_default())]
    NotLeader {
        /// The leader, if known.
        leader: Option<u64>,
        /// Its address, if known.
        leader_addr: Option<String>,
    },
    /// No quorum answered: the cluster cannot accept writes now; retry later.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// A write was sent but not confirmed in time: it may still be committed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The leader refused a forwarded request for another reason.
    #[error("the leader refused: {0}")]
    Remote(String),
    /// A membership change was refused (one is in progress, the node is not
    /// a learner, the last voter would go, …); retry later or fix the request.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The Raft node stopped (storage failure or shutdown); give up.
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// Opening the stores failed.
    #[error("cannot open raft storage in {path}: {message}")]
    Storage {
        /// The data dir.
        path: String,
        /// What failed.
        message: String,
    },
    /// The configuration is invalid.
    #[error("invalid raft configuration: {0}")]
    Config(String),
}

/// How [`RaftError::NoQuorum`] begins as text.
const NO_QUORUM: &str = "no quorum: ";

impl From<RaftError> for Status {
    fn from(e: RaftError) -> Self {
        match e {
            RaftError::NotLeader { leader_addr, .. } => {
                let mut status = Status::unavailable(format!(
                    "not the leader; the leader is at {}",
                    leader_addr.as_deref().unwrap_or("an unknown address")
                ));
                status.metadata_mut().insert(metadata::REFUSED, MetadataValue::from_static("not-leader"));
                if let Some(value) = leader_addr.and_then(|a| MetadataValue::try_from(a).ok()) {
                    status.metadata_mut().insert(metadata::LEADER, value);
                }
                status
            }
            e @ RaftError::NoQuorum(_) => {
                let mut status = Status::unavailable(e.to_string());
                status.metadata_mut().insert(metadata::REFUSED, MetadataValue::from_static("no-quorum"));
                status
            }
            // It may still have committed: not `unavailable`, which clients retry.
            e @ RaftError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
            e @ RaftError::Membership(_) => Status::failed_precondition(e.to_string()),
            other => Status::internal(other.to_string()),
        }
    }
}

/// The reason of a leader's no-quorum refusal, as [`RaftError::NoQuorum`]
/// holds it (without the "no quorum: " the status's message begins with).
pub(super) fn no_quorum_reason(status: &Status) -> String {
    let message = status.message();
    message.strip_prefix(NO_QUORUM).unwrap_or(message).to_string()
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn header<'a>(status: &'a Status, key: &str) -> Option<&'a str> {
        status.metadata().get(key).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn each_error_has_its_code_and_a_refusal_says_so() {
        let known = Status::from(RaftError::NotLeader { leader: Some(7), leader_addr: Some("10.0.0.7:7443".into()) });
        assert_eq!(known.code(), Code::Unavailable);
        assert_eq!(known.message(), "not the leader; the leader is at 10.0.0.7:7443");
        assert_eq!(header(&known, metadata::REFUSED), Some("not-leader"));
        assert_eq!(header(&known, metadata::LEADER), Some("10.0.0.7:7443"));
        let unknown = Status::from(RaftError::NotLeader { leader: None, leader_addr: None });
        assert_eq!(unknown.message(), "not the leader; the leader is at an unknown address");
        assert_eq!(header(&unknown, metadata::LEADER), None);

        let no_quorum = Status::from(RaftError::NoQuorum("2 of 3 voters unreachable".into()));
        assert_eq!(no_quorum.code(), Code::Unavailable);
        assert_eq!(no_quorum.message(), "no quorum: 2 of 3 voters unreachable");
        assert_eq!(header(&no_quorum, metadata::REFUSED), Some("no-quorum"));
        assert_eq!(no_quorum_reason(&no_quorum), "2 of 3 voters unreachable", "read back as it was");

        let cases = [
            (RaftError::Timeout("t".into()), Code::DeadlineExceeded),
            (RaftError::Membership("m".into()), Code::FailedPrecondition),
            (RaftError::Remote("r".into()), Code::Internal),
            (RaftError::Fatal("f".into()), Code::Internal),
        ];
        for (e, code) in cases {
            let message = e.to_string();
            let status = Status::from(e);
            assert_eq!((status.code(), status.message()), (code, message.as_str()));
            assert_eq!(header(&status, metadata::REFUSED), None, "{message} may have been proposed");
        }
    }
}
