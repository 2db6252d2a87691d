//! A node joins with a join token, and renews its certificate with its own:
//! the two RPCs whose credential is not a caller the control API checks.

use stackd_core::model::{Availability, Node, NodeRole, NodeState, Resources};
use stackd_core::{ClusterState, Command, Refusal, validate};
use stackd_proto::v1;
use tonic::{Request, Status};

use super::Control;
use super::cluster::cluster_ca;
use super::nodes::reachable_addr;
use crate::auth::Caller;
use crate::now_ms;
use crate::refusal::refused;

/// The role a join token's secret gives, if the token is this cluster's:
/// its CA digest (compared without the CA key) and one of the join secrets.
fn join_role(state: &ClusterState, token: &stackd_tls::JoinToken) -> Result<NodeRole, Status> {
    let ca = stackd_tls::read_ca(&state.security.ca_cert_pem)
        .map_err(|e| Status::internal(format!("the cluster's CA certificate is unusable: {e}")))?;
    if !stackd_tls::ct_eq(stackd_tls::ca_digest(&ca).as_bytes(), token.ca_digest().as_bytes()) {
        return Err(refused(Refusal::permission_denied(
            "invalid join token: it belongs to another cluster (its CA digest is not this cluster's)",
        )));
    }
    state.security.join_role(token.secret().as_bytes()).ok_or_else(|| {
        refused(Refusal::permission_denied(
            "invalid join token: its secret is neither the manager nor the worker secret (rotated?); get the \
             current one with `stackctl cluster join-token manager|worker`",
        ))
    })
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

/// The TLS role of a node role.
fn tls_role(role: NodeRole) -> stackd_tls::Role {
    match role {
        NodeRole::Manager => stackd_tls::Role::Manager,
        NodeRole::Worker => stackd_tls::Role::Worker,
    }
}

/// `JoinCluster`: the token checked, the node's certificate signed, the node
/// proposed (`JoinNode`).
pub(super) async fn join(ctl: &Control, r: v1::JoinClusterRequest) -> Result<v1::JoinClusterResponse, Status> {
    let token = stackd_tls::JoinToken::parse(&r.token)
        .map_err(|_| refused(Refusal::invalid("the join token is not of the form STK-1-<CA digest>-<secret>")))?;
    // Checked against this manager's state first, so that a bad token
    // costs no quorum round; then again after the read barrier, so that a
    // secret rotated a moment ago is not accepted by a lagging manager.
    ctl.raft.shared().read(|s| join_role(s, &token))?;
    ctl.raft.read_barrier().await?;
    let (ca, role, raft_id, managers) = ctl.raft.shared().read(|s| {
        let role = join_role(s, &token)?;
        let ca = cluster_ca(s)?;
        if let Some(n) = s.nodes.values().find(|n| n.name == r.name) {
            return Err(refused(Refusal::already_exists(format!(
                "a node named {} exists already (id {}): choose another --name, or remove the old node with \
                 `stackctl node rm {}`",
                r.name, n.id, n.id
            ))));
        }
        let managers: Vec<String> =
            s.nodes.values().filter(|n| n.role == NodeRole::Manager).map(|n| n.addr.clone()).collect();
        Ok((ca, role, new_raft_id(s), managers))
    })?;
    if !validate::is_valid_name(&r.name) {
        return Err(refused(Refusal::invalid(format!(
            "node name {:?} is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit",
            r.name
        ))));
    }
    if role == NodeRole::Worker && r.no_agent {
        return Err(refused(Refusal::invalid(
            "this is a worker token, and a worker runs only its agent: join without --no-agent, or use the \
             manager token",
        )));
    }
    if role == NodeRole::Manager && !reachable_addr(&r.addr) {
        return Err(refused(Refusal::invalid(format!(
            "a manager needs an address the other managers can reach, as IP:PORT (`stackd join --listen`); got {:?}",
            r.addr
        ))));
    }
    let node_id = format!("{raft_id:016x}");
    let cert = ca
        .sign_csr(&r.csr_der, &node_id, tls_role(role))
        .map_err(|e| refused(Refusal::invalid(format!("the certificate request: {e}"))))?;
    let resources = r
        .resources
        .map(Resources::try_from)
        .transpose()
        .map_err(|e| refused(Refusal::invalid(e.to_string())))?
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
        engine: Default::default(),
        updated_at: 0,
    };
    ctl.propose(Command::JoinNode { node, at: now_ms() }).await?;
    tracing::info!(node = %node_id, role = role.as_str(), "a node joined");
    Ok(v1::JoinClusterResponse {
        cluster_id: ca.cluster_id().to_string(),
        node_id,
        raft_id,
        role: v1::NodeRole::from(role).into(),
        ca_pem: ca.cert_pem().to_string(),
        cert_pem: format!("{cert}{}", ca.cert_pem()),
        managers,
    })
}

/// `RenewNodeCertificate`: only a node's own certificate (checked before
/// anything costs a quorum round); the role is the state's, read
/// linearizably so that a node never acts on a role change undone since.
pub(super) async fn renew_certificate(
    ctl: &Control,
    req: Request<v1::RenewNodeCertificateRequest>,
) -> Result<v1::RenewNodeCertificateResponse, Status> {
    let only_nodes = || refused(Refusal::permission_denied("only a node, with its own certificate, renews it"));
    if !matches!(ctl.caller(&req)?, Caller::Node { .. }) {
        return Err(only_nodes());
    }
    ctl.raft.read_barrier().await?;
    let Caller::Node { id: node_id, role } = ctl.caller(&req)? else {
        return Err(only_nodes());
    };
    let csr = req.into_inner().csr_der;
    let cert_pem = if csr.is_empty() {
        String::new()
    } else {
        let ca = ctl.raft.shared().read(cluster_ca)?;
        let cert = ca
            .sign_csr(&csr, &node_id, tls_role(role))
            .map_err(|e| refused(Refusal::invalid(format!("the certificate request: {e}"))))?;
        tracing::info!(node = %node_id, role = role.as_str(), "node certificate renewed");
        format!("{cert}{}", ca.cert_pem())
    };
    Ok(v1::RenewNodeCertificateResponse { role: v1::NodeRole::from(role).into(), cert_pem })
}
