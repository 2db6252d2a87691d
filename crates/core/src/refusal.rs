//! Why the cluster refused a request, as data: a [`Refusal`] is a
//! [`RefusalKind`] (what the caller should do about it) and a message (what
//! exactly, in words an operator reads).
//!
//! `ClusterState::apply` refuses a command whole with one
//! ([`Applied::refusal`](crate::state::Applied::refusal)); the manager's
//! control API refuses a request it checks before proposing with the same
//! type. The manager turns a refusal into a gRPC status in one place, by its
//! kind only: core knows nothing of gRPC.

use serde::{Deserialize, Serialize};

use crate::security::SecurityError;

/// What kind of refusal: what the caller should do about it.
///
/// | kind | the caller should | gRPC code |
/// | --- | --- | --- |
/// | [`NotFound`](Self::NotFound) | name something that exists | `NOT_FOUND` |
/// | [`Invalid`](Self::Invalid) | fix the request: it is wrong whatever the state | `INVALID_ARGUMENT` |
/// | [`AlreadyExists`](Self::AlreadyExists) | choose another name, or remove the other object | `ALREADY_EXISTS` |
/// | [`FailedPrecondition`](Self::FailedPrecondition) | change the state first, then retry | `FAILED_PRECONDITION` |
/// | [`PermissionDenied`](Self::PermissionDenied) | use credentials that allow it | `PERMISSION_DENIED` |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// The request names something the cluster does not have: a node, a
    /// stack, a service, a config or secret, a token.
    NotFound,
    /// The request is wrong whatever the state: a bad name, a spec that
    /// fails validation, an object too large, a malformed message.
    Invalid,
    /// The request would create something whose name or id is taken.
    AlreadyExists,
    /// The request is well formed, but the cluster's state does not allow it
    /// now: an object in use, the last manager, a job, a reachable manager.
    FailedPrecondition,
    /// The caller may not do this.
    PermissionDenied,
}

impl RefusalKind {
    /// Every kind, in the order of the table above.
    pub const ALL: [RefusalKind; 5] = [
        RefusalKind::NotFound,
        RefusalKind::Invalid,
        RefusalKind::AlreadyExists,
        RefusalKind::FailedPrecondition,
        RefusalKind::PermissionDenied,
    ];

    /// The kind's name: `not_found`, `invalid`, … (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::NotFound => "not_found",
            RefusalKind::Invalid => "invalid",
            RefusalKind::AlreadyExists => "already_exists",
            RefusalKind::FailedPrecondition => "failed_precondition",
            RefusalKind::PermissionDenied => "permission_denied",
        }
    }
}

/// A refused request: its kind and why, in words. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// What the caller should do about it.
    pub kind: RefusalKind,
    /// Why, for the operator.
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind`.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// [`RefusalKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::NotFound, message)
    }

    /// [`RefusalKind::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Invalid, message)
    }

    /// [`RefusalKind::AlreadyExists`].
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::AlreadyExists, message)
    }

    /// [`RefusalKind::FailedPrecondition`].
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::FailedPrecondition, message)
    }

    /// [`RefusalKind::PermissionDenied`].
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::PermissionDenied, message)
    }
}

impl From<SecurityError> for Refusal {
    /// A security check's refusal, of the kind its variant is.
    fn from(e: SecurityError) -> Self {
        let kind = match &e {
            SecurityError::UnknownToken(_) => RefusalKind::NotFound,
            SecurityError::DuplicateTokenId(_)
            | SecurityError::DuplicateTokenName(_)
            | SecurityError::AmbiguousTokenName(_) => RefusalKind::AlreadyExists,
            SecurityError::PermissionDenied { .. } => RefusalKind::PermissionDenied,
            SecurityError::MissingCa
            | SecurityError::ShortSecret { .. }
            | SecurityError::SameSecrets
            | SecurityError::InvalidTokenId(_)
            | SecurityError::InvalidTokenName(_)
            | SecurityError::InvalidSecretDigest(_)
            | SecurityError::TokenKeyMismatch { .. }
            | SecurityError::UnknownRole(_)
            | SecurityError::DeployerWithoutStacks
            | SecurityError::StacksWithoutDeployer(_)
            | SecurityError::InvalidStack(_)
            | SecurityError::DuplicateStack(_) => RefusalKind::Invalid,
        };
        Refusal::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_its_message_and_serializes_its_kind_by_name() {
        let r = Refusal::not_found("no stack named \"shop\"");
        assert_eq!(r.to_string(), "no stack named \"shop\"");
        for kind in RefusalKind::ALL {
            let json = serde_json::to_string(&kind).expect("json");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<RefusalKind>(&json).expect("back"), kind);
        }
    }

    #[test]
    fn security_errors_keep_their_message_and_get_their_kind() {
        let r = Refusal::from(SecurityError::DuplicateTokenName("ci".into()));
        assert_eq!(r.kind, RefusalKind::AlreadyExists);
        assert!(r.message.contains("a token named ci exists already"), "{r}");
        assert_eq!(Refusal::from(SecurityError::UnknownToken("x".into())).kind, RefusalKind::NotFound);
        assert_eq!(Refusal::from(SecurityError::SameSecrets).kind, RefusalKind::Invalid);
    }
}
