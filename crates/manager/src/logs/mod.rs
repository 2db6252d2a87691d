//! Logs: what `stackctl logs` prints, relayed by the leader from the agents.
//!
//! ```text
//!  stackctl ──Logs──► a follower ──(proxied on a connection of its own)──┐
//!  stackctl ──Logs──► the leader ◄───────────────────────────────────────┘
//!                       plan(): the target → a subscription, the nodes to ask,
//!                       what to tell of nodes that cannot be asked
//!                       │ LogSubscription on each asked node's session stream
//!                       ▼
//!  agent ──PublishLogs (client stream, a connection of its own)──► leader
//!                       names each line's task (web.2@node3) ──► LogsMessage ──► stackctl
//! ```
//!
//! Nothing is kept, in Raft or elsewhere: the engines keep the logs, the
//! leader only relays. Every buffer is bounded ([`BUFFER`] messages): a
//! slow client slows the agent's reading of the engine (which keeps the log
//! on disk), never a heartbeat — the session and its heartbeats travel on
//! another connection, and the leader serves each stream on a task of its
//! own.
//!
//! A subscription that does not follow ends when every asked node said it
//! sent all it had (or did not answer within [`ANSWER_WITHIN`], or lost
//! its stream: the client is told). A followed service's subscription goes
//! to every node with a session, and to each node that opens one later,
//! since its tasks may be replaced anywhere; it ends when the client goes
//! away, the service is removed, or this manager stops leading. A followed
//! task ends when its container stops (with how the task ended, once its
//! status report is in), or once it is over and its node says nothing.
//!
//! Only the nodes a subscription was sent to may publish into it, and only
//! lines of their own tasks of its target.
//!
//! # Layout
//!
//! - `plan.rs`: pure: a target → the subscription and the nodes to ask;
//!   tasks' names; what a node may publish; what is told at a task's end.
//! - `broker.rs`: [`LogBroker`]: the subscriptions, the sessions they go
//!   out on, the `PublishLogs` streams that feed them.

mod broker;
mod plan;

use std::pin::Pin;
use std::time::Duration;

use stackd_proto::v1;
use tokio_stream::Stream;
use tonic::Status;

pub(crate) use broker::LogBroker;
pub(crate) use plan::plan;

/// The stream `Logs` answers with.
pub(crate) type LogStream = Pin<Box<dyn Stream<Item = Result<v1::LogsMessage, Status>> + Send>>;

/// Messages waiting for a slow reader, each way.
pub(crate) const BUFFER: usize = 64;
/// How long a node asked for logs has to start answering.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);
/// Subscription changes waiting for a node's session stream.
const SESSION_BUFFER: usize = 64;
