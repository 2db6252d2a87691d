//! `stackctl cluster status|join-token` and the membership commands
//! `stackctl node promote|demote|rm`.

use anyhow::Result;
use serde::Serialize;
use stackd_proto::v1;

use crate::args::{Global, JoinRole, Output};
use crate::client::{connect, status};
use crate::output::{print_document, print_rows};

/// A manager as `cluster status` shows it.
#[derive(Serialize)]
pub(crate) struct ManagerRow {
    node_id: String,
    addr: String,
    leader: bool,
    reachable: bool,
    voter: bool,
    matched: u64,
}

impl From<&v1::ManagerStatus> for ManagerRow {
    fn from(m: &v1::ManagerStatus) -> Self {
        ManagerRow {
            node_id: m.node_id.clone(),
            addr: m.addr.clone(),
            leader: m.leader,
            reachable: m.reachable,
            voter: m.voter,
            matched: m.matched,
        }
    }
}

/// `stackctl cluster status`.
#[derive(Serialize)]
struct StatusDoc {
    cluster_id: String,
    node_id: String,
    leader_id: String,
    term: u64,
    last_log_index: u64,
    last_applied: u64,
    snapshot_index: u64,
    snapshots_installed: u64,
    has_quorum: bool,
    state_hash: String,
    recovery_recipient: String,
    autolock: bool,
    unlock_key_id: String,
    version: String,
    managers: Vec<ManagerRow>,
}

/// `stackctl cluster status`: this manager's view of Raft.
pub async fn status_cmd(g: &Global) -> Result<i32> {
    let mut c = connect(g).await?;
    let r = c
        .read(|mut c| async move { c.cluster_status(v1::ClusterStatusRequest { stale: g.stale }).await })
        .await
        .map_err(status)?
        .into_inner();
    let doc = StatusDoc {
        cluster_id: r.cluster_id,
        node_id: r.node_id,
        leader_id: r.leader_id,
        term: r.term,
        last_log_index: r.last_log_index,
        last_applied: r.last_applied,
        snapshot_index: r.snapshot_index,
        snapshots_installed: r.snapshots_installed,
        has_quorum: r.has_quorum,
        state_hash: r.state_hash,
        recovery_recipient: r.recovery_recipient,
        autolock: r.autolock,
        unlock_key_id: r.unlock_key_id,
        version: r.version,
        managers: r.managers.iter().map(ManagerRow::from).collect(),
    };
    if g.output != Output::Table {
        print_document(&doc, g.output)?;
        return Ok(crate::EXIT_OK);
    }
    out!("Cluster:        {}", doc.cluster_id);
    out!("This manager:   {}", doc.node_id);
    out!("Leader:         {}", if doc.leader_id.is_empty() { "none known" } else { &doc.leader_id });
    out!("Quorum:         {}", if doc.has_quorum { "yes" } else { "NO: the leader does not hear from a majority" });
    out!("Term:           {}", doc.term);
    out!(
        "Log:            last {}, applied {}, snapshot at {}",
        doc.last_log_index,
        doc.last_applied,
        doc.snapshot_index
    );
    out!("State hash:     {}", doc.state_hash);
    out!(
        "Recovery key:   {}",
        if doc.recovery_recipient.is_empty() {
            "none (stackctl cluster recovery-key --rotate)"
        } else {
            &doc.recovery_recipient
        }
    );
    out!(
        "Autolock:       {}",
        if doc.autolock {
            format!("on (unlock key id {}): managers need the key to start", doc.unlock_key_id)
        } else {
            "off".to_string()
        }
    );
    out!("Version:        {}", doc.version);
    if !doc.managers.is_empty() {
        out!();
        print_rows(&doc.managers, &["node_id", "addr", "leader", "voter", "reachable", "matched"], Output::Table)?;
    }
    Ok(crate::EXIT_OK)
}

/// `stackctl cluster join-token manager|worker [--rotate]`: the token alone
/// on standard output; what happened on standard error.
pub async fn join_token(g: &Global, role: JoinRole, rotate: bool) -> Result<i32> {
    let mut c = connect(g).await?;
    let wire = match role {
        JoinRole::Manager => v1::NodeRole::Manager,
        JoinRole::Worker => v1::NodeRole::Worker,
    };
    let req = v1::GetJoinTokenRequest { role: wire.into(), rotate };
    // Reading a token may go to the next manager; a rotation only if it never left.
    let r = if rotate {
        c.write(|mut c| async move { c.get_join_token(req).await }).await
    } else {
        c.read(|mut c| async move { c.get_join_token(req).await }).await
    }
    .map_err(status)?
    .into_inner();
    if rotate {
        eprintln!("The {} join token was replaced: the old one no longer lets a node join.", wire_name(role));
    }
    out!("{}", r.token);
    Ok(crate::EXIT_OK)
}

fn wire_name(role: JoinRole) -> &'static str {
    match role {
        JoinRole::Manager => "manager",
        JoinRole::Worker => "worker",
    }
}

/// `stackctl node promote|demote NODE`.
pub async fn set_role(g: &Global, node: &str, role: JoinRole, force: bool) -> Result<i32> {
    let mut c = connect(g).await?;
    let wire = match role {
        JoinRole::Manager => v1::NodeRole::Manager,
        JoinRole::Worker => v1::NodeRole::Worker,
    };
    let req = v1::SetNodeRoleRequest { node: node.to_string(), role: wire.into(), force };
    // Setting a role twice is harmless: it may go to the next manager.
    let r = c
        .read(|mut c| {
            let req = req.clone();
            async move { c.set_node_role(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    match (r.unchanged, role) {
        (true, _) => out!("Node {node} is a {} already", wire_name(role)),
        (false, JoinRole::Manager) => {
            out!("Node {node} is now a manager: it joins Raft as a learner and votes once it has caught up")
        }
        (false, JoinRole::Worker) => out!("Node {node} is now a worker: it leaves Raft"),
    }
    Ok(crate::EXIT_OK)
}

/// `stackctl node rm NODE`.
pub async fn rm(g: &Global, node: &str, force: bool) -> Result<i32> {
    let mut c = connect(g).await?;
    let req = v1::RemoveNodeRequest { node: node.to_string(), force };
    let r = c
        .write(|mut c| {
            let req = req.clone();
            async move { c.remove_node(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    out!("Removed node {node} ({})", r.node_id);
    Ok(crate::EXIT_OK)
}
