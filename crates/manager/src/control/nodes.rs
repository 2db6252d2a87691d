//! Nodes and Raft membership: list, inspect, promote and demote, remove. A manager
//! leaves the voters only when a reachable majority stays.

use stackd_core::model::{Node, NodeRole, NodeState};
use stackd_core::{ClusterState, Command, Refusal};
use stackd_proto::v1;
use tonic::Status;

use super::cluster::manager_statuses;
use super::{Control, addresses};
use crate::membership;
use crate::now_ms;
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
/// effort, as for `ListNodes`), and its share of the cluster's networks.
pub(super) async fn inspect(ctl: &Control, r: v1::InspectNodeRequest) -> Result<v1::InspectNodeResponse, Status> {
    let (node, networks) = ctl
        .read(r.stale, |s| find_node(s, &r.node).map(|n| (v1::Node::from(n), addresses::node_networks(s, &n.id))))
        .await?
        .map_err(refused)?;
    let manager = if node.role == i32::from(v1::NodeRole::Manager) {
        let view = ctl.members_view(r.stale).await.map(|v| manager_statuses(&v)).unwrap_or_default();
        view.into_iter().find(|m| m.node_id == node.id)
    } else {
        None
    };
    Ok(v1::InspectNodeResponse { node: Some(node), manager, networks })
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
