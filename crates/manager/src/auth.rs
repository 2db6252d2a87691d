//! Who is calling, and what it may do.
//!
//! ```text
//!  request ─► TLS client certificate of this cluster? ─► Caller::Node (role from the state)
//!          └► else `authorization: Bearer STKC-1-…`  ─► Caller::Token (looked up, digest compared)
//!          └► else                                    ─► unauthenticated (what stackctl needs)
//!  Caller + Action ─► authorize: manager node = admin; worker node: no control API;
//!                      token: ClientToken::check (reads: all; stacks: deployer's own; rest: admin)
//! ```
//!
//! Tokens are checked against the local state of the manager the client
//! reached. The dispatcher accepts only a node certificate whose CN is the
//! node the request speaks for ([`check_node`]).

use stackd_core::model::NodeRole;
use stackd_core::security::{Action, ClientToken};
use stackd_core::{ClusterState, Refusal};
use stackd_proto::metadata::AUTHORIZATION;
use tonic::{Request, Status};

use crate::peer::peer_node;
use crate::refusal::refused;

/// What a client without credentials is told.
const NEEDS: &str = "stackctl needs a client token: set STACKCTL_TOKEN or --token (a manager's \
                     DATA_DIR/stackctl.env has the admin token)";

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A node of this cluster, by its certificate; its role is the one the
    /// cluster state records, not only the one in the certificate.
    Node {
        /// The node id (the certificate's CN).
        id: String,
        /// Its role in the cluster state.
        role: NodeRole,
    },
    /// A client token, as the cluster stores it.
    Token(ClientToken),
}

/// The check of the Raft service: only a manager certificate of the cluster
/// `cluster_id`, of a node the local state does not know as anything else.
/// A joining manager has its certificate before its own state holds
/// anything, so an empty state lets every manager certificate through; once
/// the state is there, a removed node (absent) or a demoted one (a worker
/// now) is refused although its certificate is still valid.
pub(crate) fn manager_peer(
    cluster_id: String,
    shared: std::sync::Arc<crate::raft::Shared>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| match peer_node(&req, &cluster_id)? {
        Some(peer) if peer.role == stackd_tls::Role::Manager => {
            let known = shared.read(|s| {
                s.cluster_id.is_empty() || s.nodes.get(&peer.node_id).is_some_and(|n| n.role == NodeRole::Manager)
            });
            if known {
                Ok(req)
            } else {
                Err(refused(Refusal::permission_denied(format!(
                    "node {} is no manager of this cluster (removed or demoted): it takes no part in Raft",
                    peer.node_id
                ))))
            }
        }
        Some(_) => Err(refused(Refusal::permission_denied("only managers take part in Raft"))),
        None => Err(Status::unauthenticated("Raft needs the manager certificate of this cluster")),
    }
}

/// Who made `req`: a node certificate of this cluster, else a valid bearer
/// token, else `unauthenticated`. Error messages never contain the token.
pub(crate) fn authenticate<T>(req: &Request<T>, state: &ClusterState) -> Result<Caller, Status> {
    if let Some(peer) = peer_node(req, &state.cluster_id)? {
        return match state.nodes.get(&peer.node_id) {
            Some(node) => Ok(Caller::Node { id: node.id.clone(), role: node.role }),
            None => Err(Status::unauthenticated(format!(
                "node {} is not a node of this cluster (removed?): its certificate is no longer accepted",
                peer.node_id
            ))),
        };
    }
    let Some(value) = req.metadata().get(AUTHORIZATION) else {
        return Err(Status::unauthenticated(NEEDS));
    };
    let bearer =
        value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(|| {
            Status::unauthenticated(format!("the authorization header is not `Bearer <token>`; {NEEDS}"))
        })?;
    match token_caller(bearer, state) {
        Ok(stored) => Ok(Caller::Token(stored.clone())),
        Err(BadToken::Malformed(e)) => Err(Status::unauthenticated(format!("STACKCTL_TOKEN is {e}"))),
        Err(e @ BadToken::Unknown(_)) => Err(Status::unauthenticated(e.to_string())),
    }
}

/// Why a client token was not accepted. Neither message contains the token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadToken {
    /// Not a client token at all.
    #[error("{0}")]
    Malformed(#[source] stackd_tls::TokenError),
    /// Well-formed, but no valid token of this cluster.
    #[error("the client token {0} is unknown or revoked, or its secret is wrong: ask an admin for a valid one")]
    Unknown(String),
}

/// The stored token a client token's text (`STKC-1-<id>-<secret>`) stands
/// for: looked up by id, its secret compared by SHA-256 in constant time.
/// The one check of a token, for the control API and the status page.
pub(crate) fn token_caller<'s>(text: &str, state: &'s ClusterState) -> Result<&'s ClientToken, BadToken> {
    let token = stackd_tls::ClientToken::parse(text).map_err(BadToken::Malformed)?;
    state.security.verify_token(token.id(), &token.secret_sha256()).ok_or_else(|| BadToken::Unknown(token.id().into()))
}

/// Whether `caller` may do `action` on the control API: a manager node may
/// do everything (its certificate is an admin's), a worker node nothing, a
/// token what its role allows.
pub(crate) fn authorize(caller: &Caller, action: Action<'_>) -> Result<(), Status> {
    match caller {
        Caller::Node { role: NodeRole::Manager, .. } => Ok(()),
        Caller::Node { id, role: NodeRole::Worker } => Err(refused(Refusal::permission_denied(format!(
            "permission denied: node {id} is a worker; its certificate gives no access to the control API"
        )))),
        Caller::Token(token) => token_may(token, action),
    }
}

/// Whether the token `token` may do `action`: what [`authorize`] checks of
/// a token caller (the status page asks it for [`Action::Read`]).
pub(crate) fn token_may(token: &ClientToken, action: Action<'_>) -> Result<(), Status> {
    token.check(action).map_err(|e| refused(e.into()))
}

/// Checks that a dispatcher request comes from the node `node_id` itself:
/// a certificate of this cluster whose CN is `node_id`.
pub(crate) fn check_node<T>(req: &Request<T>, cluster_id: &str, node_id: &str) -> Result<(), Status> {
    let peer = peer_node(req, cluster_id)?.ok_or_else(|| {
        Status::unauthenticated(
            "the dispatcher needs the node's certificate (DATA_DIR/tls/node.crt) as client certificate",
        )
    })?;
    if peer.node_id != node_id {
        return Err(refused(Refusal::permission_denied(format!(
            "the certificate of node {} may not speak for node {node_id}",
            peer.node_id
        ))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use stackd_core::model::Blob;
    use stackd_core::security::{Security, TokenRole};
    use tonic::Code;

    use super::*;

    fn stored(id: &str, role: TokenRole, stacks: &[&str], secret_sha256: String) -> ClientToken {
        ClientToken {
            id: id.into(),
            name: format!("{role}-token"),
            role,
            stacks: stacks.iter().map(|s| s.to_string()).collect(),
            secret_sha256,
            created_at: 0,
        }
    }

    fn token(role: TokenRole, stacks: &[&str]) -> Caller {
        Caller::Token(stored("0123456789abcdef", role, stacks, "0".repeat(64)))
    }

    /// The per-RPC matrix: reads for all, stacks for their deployers, the
    /// rest for admins and managers.
    #[test]
    fn each_caller_may_do_what_its_role_allows() {
        let admin = token(TokenRole::Admin, &[]);
        let deployer = token(TokenRole::Deployer, &["shop"]);
        let viewer = token(TokenRole::Viewer, &[]);
        let manager = Caller::Node { id: "m1".into(), role: NodeRole::Manager };
        let worker = Caller::Node { id: "w1".into(), role: NodeRole::Worker };
        let actions = [
            Action::Read,
            Action::DeployStack("shop"),
            Action::RemoveStack("shop"),
            Action::DeployStack("blog"),
            Action::RemoveStack("blog"),
            Action::ManageObjects,
            Action::ManageNodes,
            Action::ManageTokens,
            Action::ManageCluster,
        ];
        let allowed =
            |caller: &Caller| -> Vec<bool> { actions.iter().map(|a| authorize(caller, *a).is_ok()).collect() };
        assert_eq!(allowed(&admin), vec![true; 9]);
        assert_eq!(allowed(&manager), vec![true; 9]);
        assert_eq!(allowed(&deployer), vec![true, true, true, false, false, false, false, false, false]);
        assert_eq!(allowed(&viewer), vec![true, false, false, false, false, false, false, false, false]);
        assert_eq!(allowed(&worker), vec![false; 9]);

        let denied = authorize(&deployer, Action::DeployStack("blog")).expect_err("denied");
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(denied.message().contains("may not deploy stack blog"), "{}", denied.message());
        assert!(denied.message().contains("shop"), "{}", denied.message());
        let denied = authorize(&viewer, Action::ManageObjects).expect_err("denied");
        assert_eq!(denied.code(), Code::PermissionDenied);
    }

    fn state_with(token: &stackd_tls::ClientToken) -> ClusterState {
        let mut state = ClusterState { cluster_id: "c1".into(), ..ClusterState::default() };
        state.security = Security {
            ca_cert_pem: "x".into(),
            ca_key_pem: Blob(b"x".to_vec()),
            manager_secret: Blob(vec![1; 16]),
            worker_secret: Blob(vec![2; 16]),
            tokens: [(token.id().to_string(), stored(token.id(), TokenRole::Viewer, &[], token.secret_sha256()))]
                .into(),
            recovery_recipient: String::new(),
            unlock_key: Blob::default(),
        };
        state
    }

    fn request(authorization: Option<&str>) -> Request<()> {
        let mut req = Request::new(());
        if let Some(value) = authorization {
            req.metadata_mut().insert(AUTHORIZATION, value.parse().expect("ASCII"));
        }
        req
    }

    #[test]
    fn tokens_authenticate_and_nothing_else_does() {
        let good = stackd_tls::ClientToken::generate();
        let state = state_with(&good);
        let caller = authenticate(&request(Some(&format!("Bearer {}", good.reveal()))), &state).expect("valid token");
        assert!(matches!(caller, Caller::Token(t) if t.id == good.id() && t.role == TokenRole::Viewer));

        let none = authenticate(&request(None), &state).expect_err("no token");
        assert_eq!(none.code(), Code::Unauthenticated);
        assert!(none.message().contains("STACKCTL_TOKEN"), "{}", none.message());

        // Same id, another secret: refused, and the secret is never echoed.
        let forged = format!("STKC-1-{}-{}", good.id(), "ab".repeat(16));
        let wrong = authenticate(&request(Some(&format!("Bearer {forged}"))), &state).expect_err("wrong secret");
        assert_eq!(wrong.code(), Code::Unauthenticated);
        assert!(!wrong.message().contains(&"ab".repeat(16)), "{}", wrong.message());

        let other = stackd_tls::ClientToken::generate();
        let unknown = authenticate(&request(Some(&format!("Bearer {}", other.reveal()))), &state).expect_err("unknown");
        assert_eq!(unknown.code(), Code::Unauthenticated);

        for bad in ["Bearer nonsense", "Basic abc", "STKC-1-x"] {
            let e = authenticate(&request(Some(bad)), &state).expect_err(bad);
            assert_eq!(e.code(), Code::Unauthenticated, "{bad}");
            assert!(!e.message().contains("nonsense"), "{}", e.message());
        }
    }

    #[test]
    fn the_dispatcher_needs_a_node_certificate() {
        let e = check_node(&request(None), "c1", "n1").expect_err("no certificate");
        assert_eq!(e.code(), Code::Unauthenticated);
    }
}
