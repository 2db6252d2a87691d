//! stackd's domain, pure: the model, the stack-file loader, the scheduler,
//! the orchestrators and the replicated state machine.
//!
//! Nothing here does I/O, reads a clock or draws random numbers: time comes
//! in as an argument (`now`, or the `at` of a command), files come in through
//! a reader the caller passes to the loader. Everything can be tested without
//! a runtime, and `apply` gives the same result on every manager.
//!
//! # Layout
//!
//! - [`autoscale`]: the autoscaler's decision (HPA-like: proportional,
//!   a tolerance band, up at once, down after a window, bounded steps).
//! - [`backup`]: the cluster snapshot file of `stackctl snapshot save`
//!   (plain header, payload encrypted by the caller), and its summary.
//! - [`schedule`]: scheduled snapshots: the policy and record in the
//!   state, and the leader's pure decision of the next tick (cron, UTC).
//! - [`model`]: nodes, stacks, services, tasks and their specs.
//! - [`command`]: [`Command`], the only way the state changes, and the
//!   [`Plan`](command::Plan) / [`Placement`](command::Placement) values the
//!   orchestrators and scheduler produce.
//! - [`state`]: [`ClusterState`] and its deterministic `apply` (`state/`:
//!   `mod.rs` the types, `apply` and stacks; `nodes.rs` nodes, joins and
//!   tokens; `objects.rs` configs and secrets; `tasks.rs` plans, placements
//!   and status reports; `network.rs` the networks' addresses;
//!   `rollouts.rs` forced updates, resumes and rollbacks; `table.rs` [`state::Tasks`], the tasks in a
//!   persistent map indexed by service, so a snapshot of the state is cheap
//!   to keep).
//! - [`registry`]: registry credentials sent with a deploy
//!   (`--with-registry-auth`), kept per stack like secrets, and which
//!   registry an image comes from.
//! - [`refusal`]: [`Refusal`], why `apply` (or the control API) refused a
//!   request, of a [`RefusalKind`] that says what the caller should do.
//! - [`security`]: the CA, join secrets and client tokens kept in the state,
//!   and what each token role may do.
//! - [`validate`]: checks every stored stack spec passes, and the name
//!   and size of a config or secret created on its own.
//! - [`orchestrator`]: desired services vs existing tasks → a plan
//!   (replicated and global slots, restarts, rolling updates, history).
//! - [`scheduler`]: unassigned tasks → nodes, with reasons for refusals,
//!   and which of its decisions take effect ([`scheduler::effective`]).
//! - [`liveness`]: which silent nodes are down, given the leader's last
//!   heartbeats and a clock passed in.
//! - [`loader`]: compose files → [`StackSpec`](model::StackSpec), with
//!   file:line:column errors.
//! - [`net`]: the container networks' addresses (a subnet per network, a
//!   slice per node, an address per task, a virtual address per service),
//!   allocated in the state.
//! - [`journal`]: the last events of the cluster, kept by every manager
//!   (`stackctl events`, watchers that resume after a failover).
//! - [`diff`]: field-level differences between service specs (`deploy --dry-run`).
//! - [`metrics`]: the state's figures for `/metrics` (tasks by state and
//!   why they wait, rollouts, nodes, the last scheduled snapshot), with
//!   labels of a closed set.
//! - [`compose`]: a [`StackSpec`](model::StackSpec) written back as a compose
//!   document (what `stackctl config` prints; the loader reads it back unchanged).

pub mod autoscale;
pub mod backup;
pub mod command;
pub mod compose;
pub mod diff;
pub mod journal;
pub mod liveness;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod net;
pub mod orchestrator;
pub mod refusal;
pub mod registry;
pub mod schedule;
pub mod scheduler;
pub mod security;
pub mod state;
pub mod validate;

pub use command::Command;
pub use refusal::{Refusal, RefusalKind};
pub use security::{ClientToken, Security, TokenRole};
pub use state::ClusterState;
