//! Stacks, their services and tasks: deploy, remove, list, inspect.

use std::collections::BTreeMap;

use stackd_core::model::{Service, StackSpec, Task};
use stackd_core::orchestrator::service_counts;
use stackd_core::registry::RegistryAuth;
use stackd_core::state::ObjectKind;
use stackd_core::{ClusterState, Command, Refusal, validate};
use stackd_proto::v1;
use tonic::Status;

use super::{Control, addresses};
use crate::now_ms;
use crate::refusal::refused;

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

/// A service by id or full name.
fn find_service<'a>(state: &'a ClusterState, key: &str) -> Option<&'a Service> {
    state.services.get(key).or_else(|| state.service_by_name(key))
}

/// `DeployStack`: the spec converted and validated here, so that a bad one
/// never reaches the log, then `PutStack`.
pub(super) async fn deploy(ctl: &Control, r: v1::DeployStackRequest) -> Result<v1::DeployStackResponse, Status> {
    let spec = r.spec.ok_or_else(|| refused(Refusal::invalid("missing stack spec")))?;
    let spec: StackSpec =
        spec.try_into().map_err(|e: stackd_proto::ConvertError| refused(Refusal::invalid(e.to_string())))?;
    if let Err(errors) = validate::stack_spec(&spec) {
        return Err(refused(Refusal::invalid(errors.join("\n"))));
    }
    // `--with-registry-auth`: the credentials replace the stack's; without, it keeps them.
    let registry_auth = r
        .registry_auth
        .map(RegistryAuth::try_from)
        .transpose()
        .map_err(|e| refused(Refusal::invalid(format!("registry credentials: {e}"))))?;
    let (index, applied) = ctl.propose(Command::PutStack { spec, prune: r.prune, registry_auth, at: now_ms() }).await?;
    let d = applied.deploy.unwrap_or_default();
    Ok(v1::DeployStackResponse {
        created: d.created,
        updated: d.updated,
        unchanged: d.unchanged,
        removed: d.removed,
        index,
    })
}

/// `RemoveStack`: its services, tasks and own objects go with it.
pub(super) async fn remove(ctl: &Control, r: v1::RemoveStackRequest) -> Result<v1::RemoveStackResponse, Status> {
    let (index, applied) = ctl.propose(Command::RemoveStack { name: r.name, at: now_ms() }).await?;
    let removed_services =
        applied.events.iter().filter(|e| e.kind == ObjectKind::Service).map(|e| e.name.clone()).collect();
    Ok(v1::RemoveStackResponse { removed_services, index })
}

/// `ListStacks`, with their services' task counts.
pub(super) async fn list(ctl: &Control, r: v1::ListStacksRequest) -> Result<v1::ListStacksResponse, Status> {
    let stacks = ctl
        .read(r.stale, |s| {
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
    Ok(v1::ListStacksResponse { stacks })
}

/// `ListServices`, of one stack or all.
pub(super) async fn list_services(
    ctl: &Control,
    r: v1::ListServicesRequest,
) -> Result<v1::ListServicesResponse, Status> {
    let services = ctl
        .read(r.stale, |s| {
            s.services
                .values()
                .filter(|sv| r.stack.is_empty() || sv.stack == r.stack)
                .map(|sv| summary(s, sv))
                .collect()
        })
        .await?;
    Ok(v1::ListServicesResponse { services })
}

/// `InspectService`, by id or full name: the service with its virtual
/// addresses, endpoints and published ports.
pub(super) async fn inspect_service(
    ctl: &Control,
    r: v1::InspectServiceRequest,
) -> Result<v1::InspectServiceResponse, Status> {
    let found = ctl
        .read(r.stale, |s| {
            find_service(s, &r.service).map(|sv| v1::InspectServiceResponse {
                service: Some(summary(s, sv)),
                networks: addresses::service_networks(s, sv),
                published: addresses::published_ports(s, sv),
            })
        })
        .await?;
    found.ok_or_else(|| refused(Refusal::not_found(format!("no service {:?}", r.service))))
}

/// `ListTasks`, filtered by stack, service and node.
pub(super) async fn list_tasks(ctl: &Control, r: v1::ListTasksRequest) -> Result<v1::ListTasksResponse, Status> {
    let (tasks, node_names) = ctl
        .read(r.stale, |s| {
            let service_id = if r.service.is_empty() {
                None
            } else {
                match find_service(s, &r.service) {
                    Some(sv) => Some(sv.id.clone()),
                    None => return Err(Refusal::not_found(format!("no service {:?}", r.service))),
                }
            };
            let node_id = if r.node.is_empty() {
                None
            } else {
                match s.nodes.values().find(|n| n.id == r.node || n.name == r.node) {
                    Some(n) => Some(n.id.clone()),
                    None => return Err(Refusal::not_found(format!("no node {:?}", r.node))),
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
        .await?
        .map_err(refused)?;
    Ok(v1::ListTasksResponse { tasks, node_names: node_names.into_iter().collect() })
}

/// `UpdateService`: a forced update, a resumed rollout or a rollback of one
/// service, by the deployer of its stack (checked here: the stack is known
/// from the state).
pub(super) async fn update_service(
    ctl: &Control,
    caller: &crate::auth::Caller,
    r: v1::UpdateServiceRequest,
) -> Result<v1::UpdateServiceResponse, Status> {
    let found =
        ctl.read(false, |s| find_service(s, &r.service).map(|svc| (svc.name.clone(), svc.stack.clone()))).await?;
    let Some((name, stack)) = found else {
        return Err(refused(Refusal::not_found(format!("no service {:?} (see stackctl service ls)", r.service))));
    };
    crate::auth::authorize(caller, stackd_core::security::Action::DeployStack(&stack))?;
    let at = now_ms();
    let cmd = match (r.force, r.resume, r.rollback, r.replicas, r.rebalance) {
        (true, false, false, None, false) => Command::ForceUpdate { service: name.clone(), at },
        (false, true, false, None, false) => Command::ResumeUpdate { service: name.clone(), at },
        (false, false, true, None, false) => Command::RollbackService { service: name.clone(), to: r.to, at },
        (false, false, false, Some(replicas), false) => {
            Command::ScaleService { service: name.clone(), replicas, disable_autoscale: r.disable_autoscale, at }
        }
        (false, false, false, None, true) => Command::RebalanceService { service: name.clone(), at },
        _ => {
            return Err(refused(Refusal::invalid(
                "give exactly one of force, resume, rollback, replicas and rebalance",
            )));
        }
    };
    let (index, _) = ctl.propose(cmd).await?;
    let revision = ctl.read(true, |s| s.service_by_name(&name).map_or(0, |svc| svc.revision)).await?;
    Ok(v1::UpdateServiceResponse { service: name, stack, revision, index })
}
