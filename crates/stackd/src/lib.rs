//! stackd's node: the library behind the `stackd` binary. One process runs
//! the manager role and the agent role of a node, serving every gRPC
//! service on one TCP address; [`run_roles`] runs them until a signal.
//!
//! # Layout
//!
//! - `main.rs` (the binary): argument parsing, tracing, signals; it calls
//!   [`run_roles`].
//! - `node.rs`: [`run_roles`] and [`NodeOptions`]: the node's roles, the
//!   manager's if its certificate is a manager's (the agent too unless
//!   `--no-agent`), the agent only for a worker; again after each role
//!   change. A manager also serves the status page on `--status-addr`
//!   (HTTPS, `stackd_manager::Manager::serve_status`).
//! - [`http`]: the node's plain HTTP address (`--metrics-addr`):
//!   `/healthz`, `/readyz` (each role's state) and `/metrics`.
//! - [`join`]: `stackd join`, entering a cluster with a join token.
//! - `role.rs`: the node follows the role the cluster gives it (promote,
//!   demote): a new certificate, then its roles restart.
//! - [`restore`]: `stackd restore`, a new single-manager cluster from a
//!   snapshot file (checked whole before the data dir is touched).
//! - [`unlock`]: `stackd unlock`, the unlock key to a locked manager
//!   (autolock) on this host.
//! - [`files`]: the node's security files (`tls/`, `stackctl.env`) and the
//!   managers' addresses.

pub mod files;
pub mod http;
pub mod join;
mod node;
pub mod restore;
mod role;
pub mod unlock;

pub use node::{NodeError, NodeOptions, dial_addr, run_roles};
pub use role::RoleError;
