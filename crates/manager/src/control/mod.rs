//! The control API: what stackctl calls.
//!
//! ```text
//!  Request<R> ─► checked: authenticate (auth.rs) ─► R::action (access.rs) ─► authorize
//!                  │
//!                  ▼
//!  a handler (stacks, objects, nodes, tokens, cluster): convert ─► validate ─► read or propose
//!                  │                                                         │
//!                  ▼                                                         ▼
//!  Refusal ─► refused() (refusal.rs)                 RaftError ─► Status::from (raft/error.rs)
//! ```
//!
//! Every RPC takes the same path: [`Control::checked`] authenticates the
//! caller and checks that it may do what the request asks (the table of
//! `access.rs`); the handler of its concern converts and validates the
//! request, then reads the state or proposes one command
//! ([`Control::propose`]). A refusal — of the handler before proposing, or
//! of `apply` — is a [`Refusal`](stackd_core::Refusal), mapped to its gRPC
//! code in one place ([`refused`](crate::refusal::refused)).
//!
//! Writes are proposed through Raft (a follower forwards them to the
//! leader). Reads wait for the leader's read index unless the request says
//! `stale`. A refused request changes nothing: specs are validated before
//! they are proposed, and `apply` refuses an invalid command whole.
//!
//! Join and certificate renewal are the exceptions to the caller check: a
//! join token is its own credential, and only a node renews its certificate.

mod access;
mod addresses;
mod autolock;
mod cluster;
mod events;
mod join;
mod logs;
mod nodes;
mod objects;
mod snapshots;
mod stacks;
mod tokens;

use std::collections::BTreeSet;

use stackd_core::state::Applied;
use stackd_core::{ClusterState, Command, Refusal};
use stackd_proto::v1;
use tonic::{Request, Response, Status};

use crate::auth::{self, Caller};
use crate::dispatcher::Dispatcher;
use crate::membership::{self, Change};
use crate::raft::{MembersView, RaftNode};
use crate::refusal::refused;
use access::Guarded;

/// The control gRPC service.
#[derive(Clone)]
pub struct Control {
    raft: RaftNode,
    node_id: String,
    /// This manager's dispatcher: when it leads, it knows when each agent
    /// last called (`node inspect`'s heartbeat).
    dispatcher: Dispatcher,
}

impl Control {
    /// A control service over `raft`, on the node `node_id`, beside its
    /// `dispatcher`.
    pub fn new(raft: RaftNode, node_id: String, dispatcher: Dispatcher) -> Self {
        Self { raft, node_id, dispatcher }
    }

    /// Who made `req` (see [`auth::authenticate`]).
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.raft.shared().read(|s| auth::authenticate(req, s))
    }

    /// The checked way in: authenticates `req`, checks that its caller may
    /// do what it asks ([`Guarded::action`]), and hands over the message.
    fn checked<R: Guarded>(&self, req: Request<R>) -> Result<R, Status> {
        let caller = self.caller(&req)?;
        auth::authorize(&caller, req.get_ref().action()?)?;
        Ok(req.into_inner())
    }

    /// Proposes `cmd`; a Raft failure or a refusal of `apply` becomes the
    /// status the client sees.
    async fn propose(&self, cmd: Command) -> Result<(u64, Applied), Status> {
        let (index, applied) = self.raft.propose(cmd).await?;
        match applied.refusal() {
            Some(refusal) => Err(refused(refusal)),
            None => Ok((index, applied)),
        }
    }

    /// Reads the state; linearizably (after the leader's read index) unless `stale`.
    async fn read<T>(&self, stale: bool, f: impl FnOnce(&ClusterState) -> T) -> Result<T, Status> {
        if !stale {
            self.raft.read_barrier().await?;
        }
        Ok(self.raft.shared().read(f))
    }

    /// Refuses (`failed_precondition`, with an explanation) when taking the
    /// manager `node_id` out of the voters would leave no reachable majority.
    async fn check_quorum(&self, node_id: &str, name: &str, what: &str) -> Result<(), Status> {
        let Some(id) = membership::raft_id(node_id) else { return Ok(()) };
        let view = self.raft.leader_members().await?;
        // Voters the state still wants: demotions and removals committed but
        // not yet carried out by the reconciler count as done, so that two
        // quick demotions cannot each pass against the same old membership.
        let desired = self.read(false, membership::desired_voters).await?;
        let voters: BTreeSet<u64> =
            view.members.iter().filter(|m| m.voter && desired.contains_key(&m.id)).map(|m| m.id).collect();
        let reachable: BTreeSet<u64> = view.members.iter().filter(|m| m.reachable).map(|m| m.id).collect();
        membership::check_quorum(&voters, &reachable, Change::Remove(id), name)
            .map_err(|why| refused(Refusal::failed_precondition(format!("{what}: {why}"))))
    }

    /// The managers as the leader sees them; with `stale`, as this manager
    /// sees them (it asks nobody: a stale read must answer during a partition).
    async fn members_view(&self, stale: bool) -> Result<MembersView, Status> {
        if stale {
            let mut view = self.raft.local_members_view();
            // A follower knows who leads, not who the leader hears from.
            view.leader = self.raft.status().leader.unwrap_or(0);
            return Ok(view);
        }
        Ok(self.raft.leader_members().await?)
    }
}

/// A handler's answer as a gRPC response.
fn reply<T>(answer: Result<T, Status>) -> Result<Response<T>, Status> {
    answer.map(Response::new)
}

/// The RPCs: each one takes the checked way in, then its handler.
#[tonic::async_trait]
impl v1::control_server::Control for Control {
    type WatchEventsStream = events::EventStream;
    type SaveSnapshotStream = snapshots::SnapshotStream;
    type LogsStream = crate::logs::LogStream;

    async fn deploy_stack(
        &self,
        req: Request<v1::DeployStackRequest>,
    ) -> Result<Response<v1::DeployStackResponse>, Status> {
        reply(stacks::deploy(self, self.checked(req)?).await)
    }

    async fn remove_stack(
        &self,
        req: Request<v1::RemoveStackRequest>,
    ) -> Result<Response<v1::RemoveStackResponse>, Status> {
        reply(stacks::remove(self, self.checked(req)?).await)
    }

    async fn list_stacks(
        &self,
        req: Request<v1::ListStacksRequest>,
    ) -> Result<Response<v1::ListStacksResponse>, Status> {
        reply(stacks::list(self, self.checked(req)?).await)
    }

    async fn list_services(
        &self,
        req: Request<v1::ListServicesRequest>,
    ) -> Result<Response<v1::ListServicesResponse>, Status> {
        reply(stacks::list_services(self, self.checked(req)?).await)
    }

    async fn update_service(
        &self,
        req: Request<v1::UpdateServiceRequest>,
    ) -> Result<Response<v1::UpdateServiceResponse>, Status> {
        let caller = self.caller(&req)?;
        reply(stacks::update_service(self, &caller, req.into_inner()).await)
    }

    async fn inspect_service(
        &self,
        req: Request<v1::InspectServiceRequest>,
    ) -> Result<Response<v1::InspectServiceResponse>, Status> {
        reply(stacks::inspect_service(self, self.checked(req)?).await)
    }

    async fn list_tasks(&self, req: Request<v1::ListTasksRequest>) -> Result<Response<v1::ListTasksResponse>, Status> {
        reply(stacks::list_tasks(self, self.checked(req)?).await)
    }

    async fn create_object(
        &self,
        req: Request<v1::CreateObjectRequest>,
    ) -> Result<Response<v1::CreateObjectResponse>, Status> {
        reply(objects::create(self, self.checked(req)?).await)
    }

    async fn list_objects(
        &self,
        req: Request<v1::ListObjectsRequest>,
    ) -> Result<Response<v1::ListObjectsResponse>, Status> {
        reply(objects::list(self, self.checked(req)?).await)
    }

    async fn remove_object(
        &self,
        req: Request<v1::RemoveObjectRequest>,
    ) -> Result<Response<v1::RemoveObjectResponse>, Status> {
        reply(objects::remove(self, self.checked(req)?).await)
    }

    async fn list_nodes(&self, req: Request<v1::ListNodesRequest>) -> Result<Response<v1::ListNodesResponse>, Status> {
        reply(nodes::list(self, self.checked(req)?).await)
    }

    async fn inspect_node(
        &self,
        req: Request<v1::InspectNodeRequest>,
    ) -> Result<Response<v1::InspectNodeResponse>, Status> {
        reply(nodes::inspect(self, self.checked(req)?).await)
    }

    async fn join_cluster(
        &self,
        req: Request<v1::JoinClusterRequest>,
    ) -> Result<Response<v1::JoinClusterResponse>, Status> {
        // No caller check: the join token is the credential.
        reply(join::join(self, req.into_inner()).await)
    }

    async fn renew_node_certificate(
        &self,
        req: Request<v1::RenewNodeCertificateRequest>,
    ) -> Result<Response<v1::RenewNodeCertificateResponse>, Status> {
        // Only a node, with its own certificate: the handler checks it.
        reply(join::renew_certificate(self, req).await)
    }

    async fn set_node_role(
        &self,
        req: Request<v1::SetNodeRoleRequest>,
    ) -> Result<Response<v1::SetNodeRoleResponse>, Status> {
        reply(nodes::set_role(self, self.checked(req)?).await)
    }

    async fn update_node(
        &self,
        req: Request<v1::UpdateNodeRequest>,
    ) -> Result<Response<v1::UpdateNodeResponse>, Status> {
        reply(nodes::update(self, self.checked(req)?).await)
    }

    async fn remove_node(
        &self,
        req: Request<v1::RemoveNodeRequest>,
    ) -> Result<Response<v1::RemoveNodeResponse>, Status> {
        reply(nodes::remove(self, self.checked(req)?).await)
    }

    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        reply(tokens::create(self, self.checked(req)?).await)
    }

    async fn list_tokens(
        &self,
        req: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        reply(tokens::list(self, self.checked(req)?).await)
    }

    async fn revoke_token(
        &self,
        req: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        reply(tokens::revoke(self, self.checked(req)?).await)
    }

    async fn save_snapshot(
        &self,
        req: Request<v1::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        reply(snapshots::save(self, self.checked(req)?).await)
    }

    async fn list_snapshots(
        &self,
        req: Request<v1::ListSnapshotsRequest>,
    ) -> Result<Response<v1::ListSnapshotsResponse>, Status> {
        reply(snapshots::list(self, self.checked(req)?).await)
    }

    async fn set_snapshot_policy(
        &self,
        req: Request<v1::SetSnapshotPolicyRequest>,
    ) -> Result<Response<v1::SetSnapshotPolicyResponse>, Status> {
        reply(snapshots::set_policy(self, self.checked(req)?).await)
    }

    async fn set_recovery_key(
        &self,
        req: Request<v1::SetRecoveryKeyRequest>,
    ) -> Result<Response<v1::SetRecoveryKeyResponse>, Status> {
        reply(snapshots::set_recovery_key(self, self.checked(req)?).await)
    }

    async fn set_autolock(
        &self,
        req: Request<v1::SetAutolockRequest>,
    ) -> Result<Response<v1::UnlockKeyResponse>, Status> {
        reply(autolock::set(self, self.checked(req)?).await)
    }

    async fn get_unlock_key(
        &self,
        req: Request<v1::GetUnlockKeyRequest>,
    ) -> Result<Response<v1::UnlockKeyResponse>, Status> {
        reply(autolock::get(self, self.checked(req)?).await)
    }

    async fn cluster_status(
        &self,
        req: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        reply(cluster::status(self, self.checked(req)?).await)
    }

    async fn get_join_token(
        &self,
        req: Request<v1::GetJoinTokenRequest>,
    ) -> Result<Response<v1::GetJoinTokenResponse>, Status> {
        reply(cluster::join_token(self, self.checked(req)?).await)
    }

    async fn watch_events(
        &self,
        req: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        reply(Ok(events::watch(self, self.checked(req)?)))
    }

    async fn logs(&self, req: Request<v1::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        reply(logs::logs(self, self.checked(req)?).await)
    }
}
