//! The control API: what stackctl calls.
//!
//! Writes are proposed through Raft (a follower forwards them to the
//! leader). Reads wait for the leader's read index unless the request says
//! `stale`.
//! Every call is authenticated and authorised first (`auth.rs`): reads
//! for every caller, deploying and removing a stack for the tokens that may,
//! everything else for admins.
//! A refused request changes nothing: specs are validated before they are
//! proposed, and `apply` refuses an invalid command whole.

use std::collections::BTreeMap;
use std::pin::Pin;

use std::collections::BTreeSet;

use stackd_core::model::{Availability, Blob, DataKind, Node, NodeRole, NodeState, Service, StackSpec, Task};
use stackd_core::orchestrator::service_counts;
use stackd_core::security::{Action, ClientToken, TokenRole};
use stackd_core::state::ObjectKind;
use stackd_core::{ClusterState, Command, validate};
use stackd_proto::v1;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::auth::{self, Caller};

use crate::membership::{self, Change};
use crate::now_ms;
use crate::raft::{MembersView, RaftNode};

/// The control gRPC service.
#[derive(Clone)]
pub struct Control {
    raft: RaftNode,
    node_id: String,
}

impl Control {
    /// A control service over `raft`, on the node `node_id`.
    pub fn new(raft: RaftNode, node_id: String) -> Self {
        Self { raft, node_id }
    }

    /// Who made `req` (see [`auth::authenticate`]).
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.raft.shared().read(|s| auth::authenticate(req, s))
    }

    /// Authenticates `req` and checks that its caller may do `action`.
    fn allow<T>(&self, req: &Request<T>, action: Action<'_>) -> Result<(), Status> {
        auth::authorize(&self.caller(req)?, action)
    }

    /// Refuses (`failed_precondition`, with an explanation) when taking the
    /// manager `node_id` out of the voters would leave no reachable majority.
    async fn check_quorum(&self, node_id: &str, name: &str, what: &str) -> Result<(), Status> {
        let Some(id) = membership::raft_id(node_id) else { return Ok(()) };
        let view = self.raft.leader_members().await.map_err(Status::from)?;
        // Voters the state still wants: demotions and removals committed but
        // not yet carried out by the reconciler count as done, so that two
        // quick demotions cannot each pass against the same old membership.
        let desired = self.read(false, membership::desired_voters).await?;
        let voters: BTreeSet<u64> =
            view.members.iter().filter(|m| m.voter && desired.contains_key(&m.id)).map(|m| m.id).collect();
        let reachable: BTreeSet<u64> = view.members.iter().filter(|m| m.reachable).map(|m| m.id).collect();
        membership::check_quorum(&voters, &reachable, Change::Remove(id), name)
            .map_err(|why| Status::failed_precondition(format!("{what}: {why}")))
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
        self.raft.leader_members().await.map_err(Status::from)
    }

    async fn read<T>(&self, stale: bool, f: impl FnOnce(&ClusterState) -> T) -> Result<T, Status> {
        if !stale {
            self.raft.read_barrier().await.map_err(Status::from)?;
        }
        Ok(self.raft.shared().read(f))
    }
}

/// A service as read APIs show it: secrets' digests left out (see
/// [`TaskTemplate::redacted`](stackd_core::model::TaskTemplate::redacted)).
fn redacted(svc: &Service) -> Service {
    let mut svc = svc.clone();
    svc.spec.task = svc.spec.task.redacted();
    for r in &mut svc.history {
        r.spec.task = r.spec.task.redacted();
    }
    svc
}

fn summary(state: &ClusterState, svc: &Service) -> v1::ServiceSummary {
    let c = service_counts(state, svc);
    v1::ServiceSummary {
        service: Some(v1::Service::from(&redacted(svc))),
        running: c.running,
        desired: c.desired,
        completed: c.completed,
    }
}

/// A wire config/secret kind.
fn data_kind(kind: i32) -> Result<DataKind, Status> {
    v1::DataKind::try_from(kind)
        .map(DataKind::from)
        .map_err(|_| Status::invalid_argument(format!("unknown object kind {kind}")))
}

fn find_service<'a>(state: &'a ClusterState, key: &str) -> Option<&'a Service> {
    state.services.get(key).or_else(|| state.service_by_name(key))
}

/// A node by id or name.
fn find_node<'a>(state: &'a ClusterState, key: &str) -> Result<&'a Node, Status> {
    state
        .nodes
        .get(key)
        .or_else(|| state.nodes.values().find(|n| n.name == key))
        .ok_or_else(|| Status::not_found(format!("no node {key:?} (give its name or id, see `stackctl node ls`)")))
}

/// A wire node role.
fn node_role(role: i32) -> Result<NodeRole, Status> {
    v1::NodeRole::try_from(role)
        .ok()
        .and_then(|r| NodeRole::try_from(r).ok())
        .ok_or_else(|| Status::invalid_argument("the role must be manager or worker"))
}

/// A wire token role.
fn token_role(role: i32) -> Result<TokenRole, Status> {
    match v1::TokenRole::try_from(role) {
        Ok(v1::TokenRole::Admin) => Ok(TokenRole::Admin),
        Ok(v1::TokenRole::Deployer) => Ok(TokenRole::Deployer),
        Ok(v1::TokenRole::Viewer) => Ok(TokenRole::Viewer),
        _ => Err(Status::invalid_argument("the token role must be admin, deployer or viewer")),
    }
}

fn token_info(t: &ClientToken) -> v1::TokenInfo {
    let role = match t.role {
        TokenRole::Admin => v1::TokenRole::Admin,
        TokenRole::Deployer => v1::TokenRole::Deployer,
        TokenRole::Viewer => v1::TokenRole::Viewer,
    };
    v1::TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        role: role.into(),
        stacks: t.stacks.clone(),
        created_at: t.created_at,
    }
}

/// The managers as the leader sees them, for status and `node ls`.
fn manager_statuses(view: &MembersView) -> Vec<v1::ManagerStatus> {
    view.members
        .iter()
        .map(|m| v1::ManagerStatus {
            node_id: format!("{:016x}", m.id),
            addr: m.addr.clone(),
            leader: m.id == view.leader,
            reachable: m.reachable,
            voter: m.voter,
            matched: m.matched,
        })
        .collect()
}

/// The cluster CA with its key, from the replicated security state.
fn cluster_ca(state: &ClusterState) -> Result<stackd_tls::Ca, Status> {
    let key = std::str::from_utf8(&state.security.ca_key_pem.0)
        .map_err(|_| Status::internal("the cluster's CA key is not PEM text"))?;
    stackd_tls::Ca::from_pem(&state.security.ca_cert_pem, key)
        .map_err(|e| Status::internal(format!("the cluster's CA is unusable: {e}")))
}

/// The role a join token's secret gives, if the token is this cluster's:
/// its CA digest (compared without the CA key) and one of the join secrets.
fn join_role(state: &ClusterState, token: &stackd_tls::JoinToken) -> Result<NodeRole, Status> {
    let ca = stackd_tls::read_ca(&state.security.ca_cert_pem)
        .map_err(|e| Status::internal(format!("the cluster's CA certificate is unusable: {e}")))?;
    if !stackd_tls::ct_eq(stackd_tls::ca_digest(&ca).as_bytes(), token.ca_digest().as_bytes()) {
        return Err(Status::permission_denied(
            "invalid join token: it belongs to another cluster (its CA digest is not this cluster's)",
        ));
    }
    state.security.join_role(token.secret().as_bytes()).ok_or_else(|| {
        Status::permission_denied(
            "invalid join token: its secret is neither the manager nor the worker secret (rotated?); get the \
             current one with `stackctl cluster join-token manager|worker`",
        )
    })
}

/// Whether `addr` is an address other managers can dial: IP:PORT, neither
/// the unspecified address nor port 0.
fn reachable_addr(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>().is_ok_and(|a| !a.ip().is_unspecified() && a.port() != 0)
}

/// A fresh Raft id, not zero and not the id of a node in `state`.
fn new_raft_id(state: &ClusterState) -> u64 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    loop {
        let id: u64 = rng.gen_range(1..=u64::MAX);
        if !state.nodes.contains_key(&format!("{id:016x}")) {
            return id;
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;

#[tonic::async_trait]
impl v1::control_server::Control for Control {
    type WatchEventsStream = EventStream;

    async fn deploy_stack(
        &self,
        req: Request<v1::DeployStackRequest>,
    ) -> Result<Response<v1::DeployStackResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        let spec = r.spec.ok_or_else(|| Status::invalid_argument("missing stack spec"))?;
        auth::authorize(&caller, Action::DeployStack(&spec.name))?;
        let spec: StackSpec =
            spec.try_into().map_err(|e: stackd_proto::ConvertError| Status::invalid_argument(e.to_string()))?;
        if let Err(errors) = validate::stack_spec(&spec) {
            return Err(Status::invalid_argument(errors.join("\n")));
        }
        let (index, applied) =
            self.raft.propose(Command::PutStack { spec, prune: r.prune, at: now_ms() }).await.map_err(Status::from)?;
        if let Some(why) = applied.rejected {
            return Err(Status::invalid_argument(why));
        }
        let d = applied.deploy.unwrap_or_default();
        Ok(Response::new(v1::DeployStackResponse {
            created: d.created,
            updated: d.updated,
            unchanged: d.unchanged,
            removed: d.removed,
            index,
        }))
    }

    async fn create_object(
        &self,
        req: Request<v1::CreateObjectRequest>,
    ) -> Result<Response<v1::CreateObjectResponse>, Status> {
        self.allow(&req, Action::ManageObjects)?;
        let r = req.into_inner();
        let kind = data_kind(r.kind)?;
        // Checked before proposing, so that a bad request never reaches the log.
        let what = kind.as_str();
        if !validate::is_valid_name(&r.name) {
            return Err(Status::invalid_argument(format!(
                "{what} name {:?} is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit (63 at most)",
                r.name
            )));
        }
        if r.data.len() > stackd_core::model::MAX_OBJECT_BYTES {
            return Err(Status::invalid_argument(format!(
                "a {what} holds at most {} bytes, this one has {}",
                stackd_core::model::MAX_OBJECT_BYTES,
                r.data.len()
            )));
        }
        let data = Blob(r.data);
        let digest = if kind == DataKind::Secret { String::new() } else { stackd_core::model::digest(&data.0) };
        let labels = r.labels.into_iter().collect();
        let cmd = Command::CreateObject { kind, name: r.name, data, labels, at: now_ms() };
        let (_, applied) = self.raft.propose(cmd).await.map_err(Status::from)?;
        if let Some(why) = applied.rejected {
            return Err(Status::failed_precondition(why));
        }
        Ok(Response::new(v1::CreateObjectResponse { digest }))
    }

    async fn list_objects(
        &self,
        req: Request<v1::ListObjectsRequest>,
    ) -> Result<Response<v1::ListObjectsResponse>, Status> {
        self.allow(&req, Action::Read)?;
        let r = req.into_inner();
        let kind = data_kind(r.kind)?;
        let objects = self
            .read(r.stale, |s| {
                s.objects(kind)
                    .values()
                    .map(|o| v1::ObjectInfo {
                        name: o.name.clone(),
                        stack: o.stack.clone(),
                        // A secret's digest would let a reader test guesses of its content.
                        digest: if kind == DataKind::Secret { String::new() } else { o.current.clone() },
                        size: o.content("").map_or(0, |b| b.0.len() as u64),
                        labels: o.labels.clone().into_iter().collect(),
                        created_at: o.created_at,
                        updated_at: o.updated_at,
                        used_by: s.users_of(kind, &o.name),
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(v1::ListObjectsResponse { objects }))
    }

    async fn remove_object(
        &self,
        req: Request<v1::RemoveObjectRequest>,
    ) -> Result<Response<v1::RemoveObjectResponse>, Status> {
        self.allow(&req, Action::ManageObjects)?;
        let r = req.into_inner();
        let kind = data_kind(r.kind)?;
        let (_, applied) = self
            .raft
            .propose(Command::RemoveObject { kind, name: r.name, at: now_ms() })
            .await
            .map_err(Status::from)?;
        if let Some(why) = applied.rejected {
            return Err(Status::failed_precondition(why));
        }
        Ok(Response::new(v1::RemoveObjectResponse {}))
    }

    async fn remove_stack(
        &self,
        req: Request<v1::RemoveStackRequest>,
    ) -> Result<Response<v1::RemoveStackResponse>, Status> {
        let caller = self.caller(&req)?;
        let name = req.into_inner().name;
        auth::authorize(&caller, Action::RemoveStack(&name))?;
        let (index, applied) =
            self.raft.propose(Command::RemoveStack { name: name.clone(), at: now_ms() }).await.map_err(Status::from)?;
        if let Some(why) = applied.rejected {
            return Err(Status::not_found(why));
        }
        let removed_services =
            applied.events.iter().filter(|e| e.kind == ObjectKind::Service).map(|e| e.name.clone()).collect();
        Ok(Response::new(v1::RemoveStackResponse { removed_services, index }))
    }

    async fn list_stacks(
        &self,
        req: Request<v1::ListStacksRequest>,
    ) -> Result<Response<v1::ListStacksResponse>, Status> {
        self.allow(&req, Action::Read)?;
        let stacks = self
            .read(req.into_inner().stale, |s| {
                s.stacks
                    .values()
                    .map(|st| {
                        let services: Vec<&Service> = s.services.values().filter(|sv| sv.stack == st.name).collect();
                        // A job counts the completions it still needs: a finished job wants nothing.
                        let (running, desired) = services
                            .iter()
                            .map(|sv| service_counts(s, sv))
                            .fold((0, 0), |a, b| (a.0 + b.running, a.1 + b.desired.saturating_sub(b.completed)));
                        v1::StackSummary {
                            stack: Some(st.into()),
                            services: services.len() as u64,
                            tasks_running: running,
                            tasks_desired: desired,
                        }
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(v1::ListStacksResponse { stacks }))
    }

    async fn list_services(
        &self,
        req: Request<v1::ListServicesRequest>,
    ) -> Result<Response<v1::ListServicesResponse>, Status> {
        self.allow(&req, Action::Read)?;
        let r = req.into_inner();
        let services = self
            .read(r.stale, |s| {
                s.services
                    .values()
                    .filter(|sv| r.stack.is_empty() || sv.stack == r.stack)
                    .map(|sv| summary(s, sv))
                    .collect()
            })
            .await?;
        Ok(Response::new(v1::ListServicesResponse { services }))
    }

    async fn inspect_service(
        &self,
        req: Request<v1::InspectServiceRequest>,
    ) -> Result<Response<v1::InspectServiceResponse>, Status> {
        self.allow(&req, Action::Read)?;
        let r = req.into_inner();
        let found = self.read(r.stale, |s| find_service(s, &r.service).map(|sv| summary(s, sv))).await?;
        match found {
            Some(service) => Ok(Response::new(v1::InspectServiceResponse { service: Some(service) })),
            None => Err(Status::not_found(format!("no service {:?}", r.service))),
        }
    }

    async fn list_tasks(&self, req: Request<v1::ListTasksRequest>) -> Result<Response<v1::ListTasksResponse>, Status> {
        self.allow(&req, Action::Read)?;
        let r = req.into_inner();
        let result = self
            .read(r.stale, |s| {
                let service_id = if r.service.is_empty() {
                    None
                } else {
                    match find_service(s, &r.service) {
                        Some(sv) => Some(sv.id.clone()),
                        None => return Err(Status::not_found(format!("no service {:?}", r.service))),
                    }
                };
                let node_id = if r.node.is_empty() {
                    None
                } else {
                    match s.nodes.values().find(|n| n.id == r.node || n.name == r.node) {
                        Some(n) => Some(n.id.clone()),
                        None => return Err(Status::not_found(format!("no node {:?}", r.node))),
                    }
                };
                let tasks: Vec<v1::Task> = s
                    .tasks
                    .values()
                    .filter(|t| r.stack.is_empty() || t.stack == r.stack)
                    .filter(|t| service_id.as_ref().is_none_or(|id| &t.service_id == id))
                    .filter(|t| node_id.is_none() || t.node_id == node_id)
                    .map(|t| v1::Task::from(&Task { template: t.template.redacted(), ..t.clone() }))
                    .collect();
                let node_names: BTreeMap<String, String> =
                    s.nodes.values().map(|n| (n.id.clone(), n.name.clone())).collect();
                Ok((tasks, node_names))
            })
            .await??;
        Ok(Response::new(v1::ListTasksResponse { tasks: result.0, node_names: result.1.into_iter().collect() }))
    }

    async fn list_nodes(&self, req: Request<v1::ListNodesRequest>) -> Result<Response<v1::ListNodesResponse>, Status> {
        self.allow(&req, Action::Read)?;
        let stale = req.into_inner().stale;
        let nodes = self.read(stale, |s| s.nodes.values().map(v1::Node::from).collect()).await?;
        // Best effort: without a leader the nodes are still listed.
        let managers = self.members_view(stale).await.map(|v| manager_statuses(&v)).unwrap_or_default();
        Ok(Response::new(v1::ListNodesResponse { nodes, managers }))
    }

    async fn cluster_status(
        &self,
        req: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        self.allow(&req, Action::Read)?;
        let stale = req.into_inner().stale;
        let (cluster_id, state_hash) = self.read(stale, |s| (s.cluster_id.clone(), s.state_hash())).await?;
        let st = self.raft.status();
        let view = self.members_view(stale).await.ok();
        Ok(Response::new(v1::ClusterStatusResponse {
            managers: view.as_ref().map(manager_statuses).unwrap_or_default(),
            has_quorum: view.is_some_and(|v| v.has_quorum),
            snapshot_index: st.snapshot_index,
            snapshots_installed: st.snapshots_installed,
            cluster_id,
            node_id: self.node_id.clone(),
            leader_id: st.leader.map(|l| format!("{l:016x}")).unwrap_or_default(),
            term: st.term,
            last_log_index: st.last_log_index,
            last_applied: st.last_applied,
            state_hash,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn join_cluster(
        &self,
        req: Request<v1::JoinClusterRequest>,
    ) -> Result<Response<v1::JoinClusterResponse>, Status> {
        // No caller check: the join token is the credential.
        let r = req.into_inner();
        let token = stackd_tls::JoinToken::parse(&r.token)
            .map_err(|_| Status::invalid_argument("the join token is not of the form STK-1-<CA digest>-<secret>"))?;
        // Checked against this manager's state first, so that a bad token
        // costs no quorum round; then again after the read barrier, so that a
        // secret rotated a moment ago is not accepted by a lagging manager.
        self.raft.shared().read(|s| join_role(s, &token))?;
        self.raft.read_barrier().await.map_err(Status::from)?;
        let (ca, role, raft_id, managers) = self.raft.shared().read(|s| {
            let role = join_role(s, &token)?;
            let ca = cluster_ca(s)?;
            if let Some(n) = s.nodes.values().find(|n| n.name == r.name) {
                return Err(Status::already_exists(format!(
                    "a node named {} exists already (id {}): choose another --name, or remove the old node with \
                     `stackctl node rm {}`",
                    r.name, n.id, n.id
                )));
            }
            let managers: Vec<String> =
                s.nodes.values().filter(|n| n.role == NodeRole::Manager).map(|n| n.addr.clone()).collect();
            Ok((ca, role, new_raft_id(s), managers))
        })?;
        if !validate::is_valid_name(&r.name) {
            return Err(Status::invalid_argument(format!(
                "node name {:?} is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit",
                r.name
            )));
        }
        if role == NodeRole::Worker && r.no_agent {
            return Err(Status::invalid_argument(
                "this is a worker token, and a worker runs only its agent: join without --no-agent, or use the \
                 manager token",
            ));
        }
        if role == NodeRole::Manager && !reachable_addr(&r.addr) {
            return Err(Status::invalid_argument(format!(
                "a manager needs an address the other managers can reach, as IP:PORT (`stackd join --listen`); got {:?}",
                r.addr
            )));
        }
        let node_id = format!("{raft_id:016x}");
        let tls_role = match role {
            NodeRole::Manager => stackd_tls::Role::Manager,
            NodeRole::Worker => stackd_tls::Role::Worker,
        };
        let cert = ca
            .sign_csr(&r.csr_der, &node_id, tls_role)
            .map_err(|e| Status::invalid_argument(format!("the certificate request: {e}")))?;
        let resources = r
            .resources
            .map(stackd_core::model::Resources::try_from)
            .transpose()
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .unwrap_or_default();
        let node = Node {
            id: node_id.clone(),
            name: r.name,
            addr: r.addr,
            role,
            availability: Availability::Active,
            state: NodeState::Unknown,
            labels: r.labels.into_iter().collect(),
            resources,
            engine_version: String::new(),
            updated_at: 0,
        };
        let (_, applied) = self.raft.propose(Command::JoinNode { node, at: now_ms() }).await.map_err(Status::from)?;
        if let Some(why) = applied.rejected {
            return Err(Status::failed_precondition(why));
        }
        tracing::info!(node = %node_id, role = role.as_str(), "a node joined");
        Ok(Response::new(v1::JoinClusterResponse {
            cluster_id: ca.cluster_id().to_string(),
            node_id,
            raft_id,
            role: v1::NodeRole::from(role).into(),
            ca_pem: ca.cert_pem().to_string(),
            cert_pem: format!("{cert}{}", ca.cert_pem()),
            managers,
        }))
    }

    async fn renew_node_certificate(
        &self,
        req: Request<v1::RenewNodeCertificateRequest>,
    ) -> Result<Response<v1::RenewNodeCertificateResponse>, Status> {
        // Only a node's own certificate (checked before anything costs a
        // quorum round); the role is the state's, read linearizably so that a
        // node never acts on a role change undone since.
        if !matches!(self.caller(&req)?, Caller::Node { .. }) {
            return Err(Status::permission_denied("only a node, with its own certificate, renews it"));
        }
        self.raft.read_barrier().await.map_err(Status::from)?;
        let Caller::Node { id: node_id, role } = self.caller(&req)? else {
            return Err(Status::permission_denied("only a node, with its own certificate, renews it"));
        };
        let csr = req.into_inner().csr_der;
        let cert_pem = if csr.is_empty() {
            String::new()
        } else {
            let ca = self.raft.shared().read(cluster_ca)?;
            let tls_role = match role {
                NodeRole::Manager => stackd_tls::Role::Manager,
                NodeRole::Worker => stackd_tls::Role::Worker,
            };
            let cert = ca
                .sign_csr(&csr, &node_id, tls_role)
                .map_err(|e| Status::invalid_argument(format!("the certificate request: {e}")))?;
            tracing::info!(node = %node_id, role = role.as_str(), "node certificate renewed");
            format!("{cert}{}", ca.cert_pem())
        };
        Ok(Response::new(v1::RenewNodeCertificateResponse { role: v1::NodeRole::from(role).into(), cert_pem }))
    }

    async fn get_join_token(
        &self,
        req: Request<v1::GetJoinTokenRequest>,
    ) -> Result<Response<v1::GetJoinTokenResponse>, Status> {
        self.allow(&req, Action::ManageCluster)?;
        let r = req.into_inner();
        let role = node_role(r.role)?;
        let secret = if r.rotate {
            let secret = stackd_tls::Secret::generate();
            let cmd = Command::RotateJoinSecret { role, secret: Blob(secret.as_bytes().to_vec()), at: now_ms() };
            let (_, applied) = self.raft.propose(cmd).await.map_err(Status::from)?;
            if let Some(why) = applied.rejected {
                return Err(Status::failed_precondition(why));
            }
            tracing::info!(role = role.as_str(), "join secret rotated");
            secret
        } else {
            let bytes = self.read(false, |s| s.security.join_secret(role).0.clone()).await?;
            stackd_tls::Secret::from_bytes(&bytes)
                .map_err(|_| Status::internal("the stored join secret has an unexpected length"))?
        };
        let digest = self.read(true, |s| cluster_ca(s).map(|ca| ca.digest())).await??;
        let token = stackd_tls::JoinToken::new(&digest, secret).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(v1::GetJoinTokenResponse { token: token.reveal() }))
    }

    async fn set_node_role(
        &self,
        req: Request<v1::SetNodeRoleRequest>,
    ) -> Result<Response<v1::SetNodeRoleResponse>, Status> {
        self.allow(&req, Action::ManageNodes)?;
        let r = req.into_inner();
        let role = node_role(r.role)?;
        let (id, name, current) =
            self.read(false, |s| find_node(s, &r.node).map(|n| (n.id.clone(), n.name.clone(), n.role))).await??;
        if current == role {
            return Ok(Response::new(v1::SetNodeRoleResponse { node_id: id, unchanged: true }));
        }
        if role == NodeRole::Manager {
            let addr = self.read(true, |s| s.nodes.get(&id).map(|n| n.addr.clone()).unwrap_or_default()).await?;
            if !reachable_addr(&addr) {
                return Err(Status::failed_precondition(format!(
                    "node {name} has no address the managers can reach ({addr:?}): a manager serves Raft; join it \
                     with `stackd join --listen IP:PORT` to be able to promote it"
                )));
            }
        }
        if role == NodeRole::Worker && !r.force {
            self.check_quorum(&id, &name, &format!("demoting {name}")).await?;
        }
        let (_, applied) = self
            .raft
            .propose(Command::SetNodeRole { id: id.clone(), role, at: now_ms() })
            .await
            .map_err(Status::from)?;
        if let Some(why) = applied.rejected {
            return Err(Status::failed_precondition(why));
        }
        tracing::info!(node = %id, role = role.as_str(), "node role changed");
        Ok(Response::new(v1::SetNodeRoleResponse { node_id: id, unchanged: false }))
    }

    async fn remove_node(
        &self,
        req: Request<v1::RemoveNodeRequest>,
    ) -> Result<Response<v1::RemoveNodeResponse>, Status> {
        self.allow(&req, Action::ManageNodes)?;
        let r = req.into_inner();
        let node = self.read(false, |s| find_node(s, &r.node).cloned()).await??;
        if !r.force {
            if node.role == NodeRole::Manager {
                let view = self.raft.leader_members().await.map_err(Status::from)?;
                let id = membership::raft_id(&node.id);
                if view.members.iter().any(|m| Some(m.id) == id && m.reachable) {
                    return Err(Status::failed_precondition(format!(
                        "manager {} is reachable: demote it first (`stackctl node demote {}`), stop it, then \
                         remove it; or pass --force",
                        node.name, node.name
                    )));
                }
                self.check_quorum(&node.id, &node.name, &format!("removing {}", node.name)).await?;
            } else if node.state == NodeState::Ready {
                return Err(Status::failed_precondition(format!(
                    "node {} is ready (its agent is connected): stop stackd on it first (once it is down, its \
                     tasks run elsewhere), then remove it; or pass --force",
                    node.name
                )));
            }
        }
        let (_, applied) =
            self.raft.propose(Command::RemoveNode { id: node.id.clone(), at: now_ms() }).await.map_err(Status::from)?;
        if let Some(why) = applied.rejected {
            return Err(Status::failed_precondition(why));
        }
        tracing::info!(node = %node.id, name = %node.name, "node removed");
        Ok(Response::new(v1::RemoveNodeResponse { node_id: node.id }))
    }

    async fn create_token(
        &self,
        req: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        self.allow(&req, Action::ManageTokens)?;
        let r = req.into_inner();
        let role = token_role(r.role)?;
        let secret = stackd_tls::ClientToken::generate();
        let at = now_ms();
        let token = ClientToken {
            id: secret.id().to_string(),
            name: r.name,
            role,
            stacks: r.stacks,
            secret_sha256: secret.secret_sha256(),
            created_at: at,
        };
        // Checked before proposing: a bad request never reaches the log.
        token.validate().map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.read(false, |s| s.security.check_new_token(&token))
            .await?
            .map_err(|e| Status::already_exists(e.to_string()))?;
        let info = token_info(&token);
        let (_, applied) = self.raft.propose(Command::CreateToken { token, at }).await.map_err(Status::from)?;
        if let Some(why) = applied.rejected {
            return Err(Status::failed_precondition(why));
        }
        tracing::info!(token = %info.id, name = %info.name, "client token created");
        Ok(Response::new(v1::CreateTokenResponse { token: secret.reveal(), info: Some(info) }))
    }

    async fn list_tokens(
        &self,
        req: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.allow(&req, Action::ManageTokens)?;
        let stale = req.into_inner().stale;
        let tokens = self.read(stale, |s| s.security.tokens.values().map(token_info).collect()).await?;
        Ok(Response::new(v1::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        req: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        self.allow(&req, Action::ManageTokens)?;
        let key = req.into_inner().token;
        let id = self.read(false, |s| s.security.token(&key).map(|t| t.id.clone())).await?.ok_or_else(|| {
            Status::not_found(format!("no token {key:?} (give its id or name, see `stackctl token ls`)"))
        })?;
        let (_, applied) =
            self.raft.propose(Command::RevokeToken { id: id.clone(), at: now_ms() }).await.map_err(Status::from)?;
        if let Some(why) = applied.rejected {
            return Err(Status::not_found(why));
        }
        tracing::info!(token = %id, "client token revoked");
        Ok(Response::new(v1::RevokeTokenResponse { id }))
    }

    async fn watch_events(
        &self,
        req: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.allow(&req, Action::Read)?;
        let stack = req.into_inner().stack;
        let rx = self.raft.shared().events();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |e| match e {
            Ok(e) if stack.is_empty() || e.stack == stack => Some(Ok(v1::Event::from(&e))),
            Ok(_) => None,
            // A watcher that fell behind is told so and must re-list.
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Some(Err(Status::data_loss(format!("watcher fell {n} events behind; re-list and watch again"))))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
