//! The bootstrap: make a new cluster usable.
//!
//! ```text
//!  stackd init ─► raft.initialize ─► (leading, read barrier) ─► cluster_id empty? ─► propose InitCluster ─► done
//!                                                                        └ no ─► done
//! ```
//!
//! Initialises Raft when asked (a new cluster), then, once this manager
//! leads, proposes `InitCluster` if the state has none yet (also after a
//! crash between the two). The waiting is the one loop shape
//! ([`crate::reconcile::run`]), with a read barrier before each look so that
//! everything committed is applied first; the loop ends once the cluster is
//! initialised.

use std::time::Duration;

use stackd_core::model::{Availability, Node, NodeRole, NodeState};
use stackd_core::security::Security;
use stackd_core::{ClusterState, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Identity;
use crate::raft::RaftNode;
use crate::reconcile::{self, Next, Pass, Reconciler, Tick};

/// The outcome of the bootstrap, once known: `Err` holds why `InitCluster`
/// was refused or could not start.
pub(crate) type Outcome = watch::Sender<Option<Result<(), String>>>;

/// What a new cluster starts from.
#[derive(Clone, Debug)]
pub enum Bootstrap {
    /// A new cluster (`stackd init`): its CA with its key, the join
    /// secrets, the admin token's digest, the recovery key's public half.
    New(Security),
    /// A cluster restored from a snapshot file (`stackd restore`): the
    /// saved state, proposed as `RestoreCluster` in place of `InitCluster`.
    Restore(Box<ClusterState>),
}

/// Runs the bootstrap of a node started with `security` (only `stackd init`
/// and `stackd restore` bring it, until their first command commits; any
/// other manager gets the state by replication) until done or `cancel`.
pub(crate) async fn run(
    raft: RaftNode,
    identity: Identity,
    security: Option<Bootstrap>,
    cancel: CancellationToken,
    done: Outcome,
) {
    let Some(security) = security else { return };
    if let Err(e) = raft.initialize(&identity.addr).await {
        tracing::error!(error = %e, "cannot initialise the cluster");
        let _ = done.send(Some(Err(e.to_string())));
        return;
    }
    reconcile::run(raft, Bootstrapper { identity, security, done }, cancel).await;
}

/// What the bootstrap does next.
#[derive(Debug)]
pub(crate) enum Action {
    /// The state has its cluster: report success.
    Finish,
    /// Propose the cluster's `InitCluster`.
    Init(Box<Command>),
}

/// The bootstrap's loop.
struct Bootstrapper {
    identity: Identity,
    security: Bootstrap,
    done: Outcome,
}

/// The bootstrap's decision: initialise a state that has no cluster yet.
/// The first manager is a node from the start, so that its own certificate
/// is recognised before its agent registers.
fn decide(state: &ClusterState, identity: &Identity, security: &Bootstrap, now: u64) -> Action {
    if !state.cluster_id.is_empty() {
        return Action::Finish;
    }
    let node = Node {
        id: identity.node_id.clone(),
        name: identity.name.clone(),
        addr: identity.addr.clone(),
        role: NodeRole::Manager,
        availability: Availability::Active,
        state: NodeState::Unknown,
        labels: Default::default(),
        resources: Default::default(),
        engine_version: String::new(),
        engine: Default::default(),
        updated_at: 0,
    };
    Action::Init(Box::new(match security {
        Bootstrap::New(security) => Command::InitCluster {
            cluster_id: identity.cluster_id.clone(),
            at: now,
            security: Some(security.clone()),
            node: Some(node),
        },
        Bootstrap::Restore(state) => Command::RestoreCluster { state: state.clone(), node, at: now },
    }))
}

impl Reconciler for Bootstrapper {
    type Action = Action;
    const DEBOUNCE: Duration = Duration::from_millis(20);
    const BARRIER: bool = true;

    fn decide(&mut self, _raft: &RaftNode, state: &ClusterState, tick: &Tick) -> Pass<Action> {
        Pass { actions: vec![decide(state, &self.identity, &self.security, tick.now)], wake_in: None }
    }

    async fn act(&mut self, raft: &RaftNode, actions: Vec<Action>, _tick: &Tick) -> Next {
        for action in actions {
            match action {
                Action::Finish => {
                    let _ = self.done.send(Some(Ok(())));
                }
                Action::Init(cmd) => match raft.propose(*cmd).await {
                    Ok((index, applied)) => {
                        if matches!(self.security, Bootstrap::Restore(_)) && applied.rejected.is_none() {
                            let raft = raft.clone();
                            tokio::spawn(async move {
                                match raft.snapshot_and_purge(index, Duration::from_secs(300)).await {
                                    Ok(()) => tracing::info!(
                                        index,
                                        "the restored state is in a snapshot; the log before it is dropped"
                                    ),
                                    Err(e) => {
                                        tracing::warn!(error = %e, "no snapshot after the restore: managers joining now receive the whole state as one entry")
                                    }
                                }
                            });
                        }
                        let _ = self.done.send(Some(applied.rejected.map_or(Ok(()), Err)));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "proposing InitCluster failed; retrying");
                        return Next::Retry(Duration::from_millis(500));
                    }
                },
            }
        }
        Next::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            node_id: "00000000000000aa".into(),
            name: "m1".into(),
            addr: "10.0.0.1:4280".into(),
            cluster_id: "c1".into(),
            raft_id: 0xaa,
            listen: String::new(),
        }
    }

    #[test]
    fn an_empty_state_gets_its_cluster_with_the_first_manager_as_node() {
        let Action::Init(cmd) = decide(&ClusterState::default(), &identity(), &Bootstrap::New(Security::default()), 7)
        else {
            panic!("expected InitCluster");
        };
        let Command::InitCluster { cluster_id, at, node: Some(node), security: Some(_) } = *cmd else {
            panic!("expected InitCluster with node and security: {cmd:?}");
        };
        assert_eq!((cluster_id.as_str(), at), ("c1", 7));
        assert_eq!(
            (node.id.as_str(), node.role, node.state),
            ("00000000000000aa", NodeRole::Manager, NodeState::Unknown)
        );
    }

    #[test]
    fn an_initialised_state_finishes_the_bootstrap() {
        let state = ClusterState { cluster_id: "c1".into(), ..ClusterState::default() };
        assert!(matches!(decide(&state, &identity(), &Bootstrap::New(Security::default()), 7), Action::Finish));
    }
}
