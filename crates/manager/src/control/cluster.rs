//! The cluster as a whole: its status, its join tokens, its events.

use stackd_core::model::Blob;
use stackd_core::{ClusterState, Command};
use stackd_proto::v1;
use tonic::Status;

use super::{Control, nodes};
use crate::now_ms;
use crate::raft::MembersView;

/// The managers as the leader sees them, for status and `node ls`.
pub(super) fn manager_statuses(view: &MembersView) -> Vec<v1::ManagerStatus> {
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
pub(super) fn cluster_ca(state: &ClusterState) -> Result<stackd_tls::Ca, Status> {
    let key = std::str::from_utf8(&state.security.ca_key_pem.0)
        .map_err(|_| Status::internal("the cluster's CA key is not PEM text"))?;
    stackd_tls::Ca::from_pem(&state.security.ca_cert_pem, key)
        .map_err(|e| Status::internal(format!("the cluster's CA is unusable: {e}")))
}

/// `ClusterStatus`: this manager's view of Raft, and the managers as the
/// leader (or, stale, this manager) sees them.
pub(super) async fn status(ctl: &Control, r: v1::ClusterStatusRequest) -> Result<v1::ClusterStatusResponse, Status> {
    let (cluster_id, state_hash, recovery_recipient, unlock_key) = ctl
        .read(r.stale, |s| {
            (s.cluster_id.clone(), s.state_hash(), s.security.recovery_recipient.clone(), s.security.unlock_key.clone())
        })
        .await?;
    let unlock_key_id = super::autolock::key_id(&unlock_key);
    let st = ctl.raft.status();
    let view = ctl.members_view(r.stale).await.ok();
    Ok(v1::ClusterStatusResponse {
        managers: view.as_ref().map(manager_statuses).unwrap_or_default(),
        has_quorum: view.is_some_and(|v| v.has_quorum),
        snapshot_index: st.snapshot_index,
        snapshots_installed: st.snapshots_installed,
        cluster_id,
        node_id: ctl.node_id.clone(),
        leader_id: st.leader.map(|l| format!("{l:016x}")).unwrap_or_default(),
        term: st.term,
        last_log_index: st.last_log_index,
        last_applied: st.last_applied,
        state_hash,
        recovery_recipient,
        autolock: !unlock_key.0.is_empty(),
        unlock_key_id,
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// `GetJoinToken`: the token of a role, its secret rotated first when asked.
pub(super) async fn join_token(ctl: &Control, r: v1::GetJoinTokenRequest) -> Result<v1::GetJoinTokenResponse, Status> {
    let role = nodes::node_role(r.role)?;
    let secret = if r.rotate {
        let secret = stackd_tls::Secret::generate();
        let cmd = Command::RotateJoinSecret { role, secret: Blob(secret.as_bytes().to_vec()), at: now_ms() };
        ctl.propose(cmd).await?;
        tracing::info!(role = role.as_str(), "join secret rotated");
        secret
    } else {
        let bytes = ctl.read(false, |s| s.security.join_secret(role).0.clone()).await?;
        stackd_tls::Secret::from_bytes(&bytes)
            .map_err(|_| Status::internal("the stored join secret has an unexpected length"))?
    };
    let digest = ctl.read(true, |s| cluster_ca(s).map(|ca| ca.digest())).await??;
    let token = stackd_tls::JoinToken::new(&digest, secret).map_err(|e| Status::internal(e.to_string()))?;
    Ok(v1::GetJoinTokenResponse { token: token.reveal() })
}
