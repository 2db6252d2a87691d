//! stackd's wire protocol: the code generated from `proto/stackd/v1/*.proto`
//! and the conversions between wire types and the domain types of
//! `stackd-core`.
//!
//! Wire types stay at the edge: services and clients convert at once and
//! work with core types.
//!
//! # Layout
//!
//! - [`v1`]: generated messages, clients and servers (package `stackd.v1`).
//! - `convert/`: `From`/`TryFrom` between core and wire types, one file per
//!   family (`node.rs`, `service.rs`, `task.rs`, `stack.rs`, `event.rs`).
//! - [`ConvertError`]: what a malformed wire message is refused with.
//! - [`metadata`]: the gRPC metadata keys stackd's services and clients share.

/// Generated code for package `stackd.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("stackd.v1");
}

mod convert;

/// The gRPC metadata keys stackd's services and clients share: one
/// definition for the side that sets a key and the side that reads it.
pub mod metadata {
    /// On an `unavailable` refusal of a manager that does not lead: the
    /// address of the manager that does, when known. Agents and following
    /// managers go there next.
    pub const LEADER: &str = "x-stackd-leader";

    /// On a refusal that proposed nothing: `not-leader` or `no-quorum`. The
    /// caller may retry it without risking a duplicate write; an
    /// `unavailable` without it comes from the transport.
    pub const REFUSED: &str = "x-stackd-refused";

    /// On every Raft message between managers: the sender's restore
    /// generation (0 when absent). A manager refuses messages of a lower
    /// generation than its own: a manager of the cluster before a `stackd
    /// restore` that comes back is refused, not merged.
    pub const GENERATION: &str = "x-stackd-generation";

    /// The client token of a control API call: `authorization: Bearer STKC-1-…`.
    pub const AUTHORIZATION: &str = "authorization";
}

pub use convert::{ConvertError, registry_credential};
