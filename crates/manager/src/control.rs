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

use stackd_core::model::{Blob, DataKind, Service, StackSpec, Task};
use stackd_core::orchestrator::service_counts;
use stackd_core::security::Action;
use stackd_core::state::ObjectKind;
use stackd_core::{ClusterState, Command, validate};
use stackd_proto::v1;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::auth::{self, Caller};
use crate::dispatcher::raft_status;
use crate::now_ms;
use crate::raft::RaftNode;

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

    async fn read<T>(&self, stale: bool, f: impl FnOnce(&ClusterState) -> T) -> Result<T, Status> {
        if !stale {
            self.raft.read_barrier().await.map_err(raft_status)?;
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
            self.raft.propose(Command::PutStack { spec, prune: r.prune, at: now_ms() }).await.map_err(raft_status)?;
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
        let (_, applied) = self.raft.propose(cmd).await.map_err(raft_status)?;
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
        let (_, applied) =
            self.raft.propose(Command::RemoveObject { kind, name: r.name, at: now_ms() }).await.map_err(raft_status)?;
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
            self.raft.propose(Command::RemoveStack { name: name.clone(), at: now_ms() }).await.map_err(raft_status)?;
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
        let nodes = self.read(req.into_inner().stale, |s| s.nodes.values().map(v1::Node::from).collect()).await?;
        Ok(Response::new(v1::ListNodesResponse { nodes }))
    }

    async fn cluster_status(
        &self,
        req: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        self.allow(&req, Action::Read)?;
        let (cluster_id, state_hash) =
            self.read(req.into_inner().stale, |s| (s.cluster_id.clone(), s.state_hash())).await?;
        let st = self.raft.status();
        Ok(Response::new(v1::ClusterStatusResponse {
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
