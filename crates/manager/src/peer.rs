//! The certificate a request came with: which node of which cluster calls.
//! The lowest layer of the manager's request checks, used by `raft` (the
//! Raft service admits member managers) and by `auth` (callers of the
//! control API and the dispatcher); it depends on no other module of the
//! crate.

use stackd_tls::PeerIdentity;
use tonic::{Request, Status};

/// The node certificate the request came with, if any, checked to belong to
/// the cluster `cluster_id`. The chain itself was verified against the
/// cluster's CA during the TLS handshake.
pub(crate) fn peer_node<T>(req: &Request<T>, cluster_id: &str) -> Result<Option<PeerIdentity>, Status> {
    let Some(certs) = req.peer_certs() else {
        return Ok(None);
    };
    if certs.is_empty() {
        return Ok(None);
    }
    let peer = PeerIdentity::from_chain(&certs).map_err(|e| Status::unauthenticated(e.to_string()))?;
    if peer.cluster_id != cluster_id {
        return Err(Status::unauthenticated("the client certificate belongs to another cluster"));
    }
    Ok(Some(peer))
}
