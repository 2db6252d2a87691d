//! The one place a [`Refusal`] becomes the gRPC status a client sees: by its
//! kind, with its message as the status's message.
//!
//! | kind | code |
//! | --- | --- |
//! | `NotFound` | `not_found` |
//! | `Invalid` | `invalid_argument` |
//! | `AlreadyExists` | `already_exists` |
//! | `FailedPrecondition` | `failed_precondition` |
//! | `PermissionDenied` | `permission_denied` |
//!
//! Refusals of `apply` come back from a proposal
//! ([`Applied::refusal`](stackd_core::state::Applied::refusal)); the control
//! API makes its own, of the same type, for what it checks before proposing.
//! Raft's own failures map beside [`RaftError`](crate::RaftError).

use stackd_core::{Refusal, RefusalKind};
use tonic::{Code, Status};

/// The gRPC code of a refusal kind.
fn code(kind: RefusalKind) -> Code {
    match kind {
        RefusalKind::NotFound => Code::NotFound,
        RefusalKind::Invalid => Code::InvalidArgument,
        RefusalKind::AlreadyExists => Code::AlreadyExists,
        RefusalKind::FailedPrecondition => Code::FailedPrecondition,
        RefusalKind::PermissionDenied => Code::PermissionDenied,
    }
}

/// The status a client sees for `refusal`.
pub(crate) fn refused(refusal: Refusal) -> Status {
    Status::new(code(refusal.kind), refusal.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code_and_keeps_its_message() {
        let codes: Vec<Code> = RefusalKind::ALL.iter().map(|k| refused(Refusal::new(*k, "why")).code()).collect();
        assert_eq!(
            codes,
            [
                Code::NotFound,
                Code::InvalidArgument,
                Code::AlreadyExists,
                Code::FailedPrecondition,
                Code::PermissionDenied
            ]
        );
        assert_eq!(refused(Refusal::not_found("no stack named \"shop\"")).message(), "no stack named \"shop\"");
    }
}
