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

/// Generated code for package `stackd.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("stackd.v1");
}

mod convert;

pub use convert::ConvertError;
