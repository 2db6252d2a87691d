//! Nodes and Raft membership: list, inspect, update (availability and
//! labels), promote and demote, remove. A manager leaves the voters only
//! when a reachable majority stays.

use stackd_core::model::{Availability, Node, NodeRole, NodeState};
use stackd_core::{ClusterState, Command, Refusal, scheduler, validate};
use stackd_proto::v1;
use tonic::Status;

use super::cluster::manager_statuses;
use super::{Control, addresses};
use crate::membership;
use crate::now_ms;
use crate::reconcile::mono_ms;
use crate::refusal::refused;

/// A node by id or name.
fn find_node<'a>(state: &'a ClusterState, key: &str) -> Result<&'a Node, Refusal> {
    state
        .nodes
        .get(key)
        .or_else(|| state.nodes.values().find(|n| n.name == key))
        .ok_or_else(|| Refusal::not_found(format!("no node {key:?} (give its name or id, see `stackctl node ls`)")))
}

/// A wire node role.
pub(super) fn node_role(role: i32) -> Result<NodeRole, Status> {
    v1::NodeRole::try_from(role)
        .ok()
        .and_then(|r| NodeRole::try_from(r).ok())
        .ok_or_else(|| refused(Refusal::invalid("the role must be manager or worker")))
}

/// Whether `addr` is an address other managers can dial: IP:PORT, neither
/// the unspecified address nor port 0.
pub(super) fn reachable_addr(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>().is_ok_and(|a| !a.ip().is_unspecified() && a.port() != 0)
}

/// `ListNodes`, with the managers as the leader sees them (best effort:
/// without a leader the nodes are still listed).
pub(super) async fn list(ctl: &Control, r: v1::ListNodesRequest) -> Result<v1::ListNodesResponse, Status> {
    let nodes = ctl.read(r.stale, |s| s.nodes.values().map(v1::Node::from).collect()).await?;
    let managers = ctl.members_view(r.stale).await.map(|v| manager_statuses(&v)).unwrap_or_default();
    Ok(v1::ListNodesResponse { nodes, managers })
}

/// `InspectNode`: the node, its Raft status when it is a manager (best
/// effort, as for `ListNodes`), its share of the cluster's networks, what
/// its tasks reserve, and — when this manager leads, as only the leader
/// hears the agents — how long ago its agent last called.
pub(super) async fn inspect(ctl: &Control, r: v1::InspectNodeRequest) -> Result<v1::InspectNodeResponse, Status> {
    let (node, networks, reserved) = ctl
        .read(r.stale, |s| {
            find_node(s, &r.node).map(|n| {
                let reserved = v1::Resources::from(&scheduler::reserved_on(s, &n.id));
                (v1::Node::from(n), addresses::node_networks(s, &n.id), reserved)
            })
        })
        .await?
        .map_err(refused)?;
    let from_leader = ctl.raft.is_leading();
    let heartbeat_age_ms = if from_leader {
        ctl.dispatcher.last_seen().get(&node.id).map(|seen| mono_ms().saturating_sub(*seen))
    } else {
        None
    };
    let manager = if node.role == i32::from(v1::NodeRole::Manager) {
        let view = ctl.members_view(r.stale).await.map(|v| manager_statuses(&v)).unwrap_or_default();
        view.into_iter().find(|m| m.node_id == node.id)
    } else {
        None
    };
    Ok(v1::InspectNodeResponse {
        node: Some(node),
        manager,
        networks,
        reserved: Some(reserved),
        from_leader,
        heartbeat_age_ms,
    })
}

/// `SetNodeRole`: promote a node with a reachable address; demote a manager
/// when a reachable majority stays (or with `force`).
pub(super) async fn set_role(ctl: &Control, r: v1::SetNodeRoleRequest) -> Result<v1::SetNodeRoleResponse, Status> {
    let role = node_role(r.role)?;
    let (id, name, current) = ctl
        .read(false, |s| find_node(s, &r.node).map(|n| (n.id.clone(), n.name.clone(), n.role)))
        .await?
        .map_err(refused)?;
    if current == role {
        return Ok(v1::SetNodeRoleResponse { node_id: id, unchanged: true });
    }
    if role == NodeRole::Manager {
        let addr = ctl.read(true, |s| s.nodes.get(&id).map(|n| n.addr.clone()).unwrap_or_default()).await?;
        if !reachable_addr(&addr) {
            return Err(refused(Refusal::failed_precondition(format!(
                "node {name} has no address the managers can reach ({addr:?}): a manager serves Raft; join it \
                 with `stackd join --listen IP:PORT` to be able to promote it"
            ))));
        }
    }
    if role == NodeRole::Worker && !r.force {
        ctl.check_quorum(&id, &name, &format!("demoting {name}")).await?;
    }
    ctl.propose(Command::SetNodeRole { id: id.clone(), role, at: now_ms() }).await?;
    tracing::info!(node = %id, role = role.as_str(), "node role changed");
    Ok(v1::SetNodeRoleResponse { node_id: id, unchanged: false })
}

/// `UpdateNode`: labels, then availability, proposed as one entry. What
/// `apply` would refuse for the request itself (an invalid label, too
/// many) is checked first, so that a refused request changes nothing: the
/// only refusal left to `apply` is a node removed meanwhile, which refuses
/// both commands.
pub(super) async fn update(ctl: &Control, r: v1::UpdateNodeRequest) -> Result<v1::UpdateNodeResponse, Status> {
    let availability = match r.availability {
        None => None,
        Some(a) => Some(
            v1::Availability::try_from(a)
                .map(Availability::from)
                .map_err(|_| refused(Refusal::invalid("the availability must be active, pause or drain")))?,
        ),
    };
    let add = r.label_add.into_iter().collect();
    validate::node_label_change(&add, &r.label_rm).map_err(|why| refused(Refusal::invalid(why)))?;
    let (node, labels_after) = ctl
        .read(false, |s| {
            find_node(s, &r.node).map(|n| {
                let mut labels = n.labels.clone();
                labels.retain(|k, _| !r.label_rm.contains(k));
                labels.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
                (n.clone(), labels)
            })
        })
        .await?
        .map_err(refused)?;
    if labels_after.len() > validate::MAX_NODE_LABELS {
        return Err(refused(Refusal::invalid(format!(
            "node {} would have {} labels, {} at most",
            node.name,
            labels_after.len(),
            validate::MAX_NODE_LABELS
        ))));
    }
    let at = now_ms();
    let mut commands = Vec::new();
    if labels_after != node.labels {
        commands.push(Command::UpdateNodeLabels { id: node.id.clone(), add, remove: r.label_rm, at });
    }
    if let Some(a) = availability.filter(|a| *a != node.availability) {
        commands.push(Command::SetNodeAvailability { id: node.id.clone(), availability: a, at });
    }
    let unchanged = commands.is_empty();
    let cmd = match commands.len() {
        0 => return Ok(v1::UpdateNodeResponse { node_id: node.id, unchanged }),
        1 => commands.remove(0),
        _ => Command::Batch { commands },
    };
    let (_, applied) = ctl.propose(cmd).await?;
    if let Some(refusal) = applied.batch.iter().find_map(|a| a.refusal()) {
        return Err(refused(refusal));
    }
    tracing::info!(node = %node.id, name = %node.name, "node updated");
    Ok(v1::UpdateNodeResponse { node_id: node.id, unchanged })
}

/// `RemoveNode`: without `force`, only a manager that is unreachable (and
/// whose going leaves a majority) or a worker that is not ready.
pub(super) async fn remove(ctl: &Control, r: v1::RemoveNodeRequest) -> Result<v1::RemoveNodeResponse, Status> {
    let node = ctl.read(false, |s| find_node(s, &r.node).cloned()).await?.map_err(refused)?;
    if !r.force {
        if node.role == NodeRole::Manager {
            let view = ctl.raft.leader_members().await?;
            let id = membership::raft_id(&node.id);
            if view.members.iter().any(|m| Some(m.id) == id && m.reachable) {
                return Err(refused(Refusal::failed_precondition(format!(
                    "manager {} is reachable: demote it first (`stackctl node demote {}`), stop it, then \
                     remove it; or pass --force",
                    node.name, node.name
                ))));
            }
            ctl.check_quorum(&node.id, &node.name, &format!("removing {}", node.name)).await?;
        } else if node.state == NodeState::Ready {
            return Err(refused(Refusal::failed_precondition(format!(
                "node {} is ready (its agent is connected): stop stackd on it first (once it is down, its \
                 tasks run elsewhere), then remove it; or pass --force",
                node.name
            ))));
        }
    }
    ctl.propose(Command::RemoveNode { id: node.id.clone(), at: now_ms() }).await?;
    tracing::info!(node = %node.id, name = %node.name, "node removed");
    Ok(v1::RemoveNodeResponse { node_id: node.id })
}
