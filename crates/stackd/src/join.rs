//! `stackd join`: a new node enters a cluster with a join token.
//!
//! ```text
//!  token STK-1-<CA digest>-<secret>
//!    │ 1. new key + CSR (nothing written yet)
//!    │ 2. TLS to ADDR, trusting only a manager whose chain holds the CA with that digest
//!    ▼ 3. Control.JoinCluster{token, csr, name, addr}: the manager checks the secret
//!  certificate (role from the secret) + CA + managers
//!    │ 4. the CA's digest checked again; tls/*, managers.json, then node.json last
//!    ▼
//!  the node runs as manager (Raft learner, then voter) or worker (agent only)
//! ```
//!
//! A refused join writes nothing: the data dir holds a node only once
//! `node.json` is written, after everything else.

use std::path::Path;

use stackd_manager::{Identity, IdentityError};
use stackd_proto::v1;
use stackd_tls::{ConfigError, PeerError, PkiError};

use crate::files::{self, FilesError};

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token is not a join token.
    #[error(
        "the join token is not of the form STK-1-<CA digest>-<secret>: copy it from `stackctl cluster join-token \
         manager|worker`"
    )]
    BadToken,
    /// The data dir holds a node already, or its identity cannot be written.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// `--listen` / `--advertise-addr` is not an address other nodes can dial.
    #[error("{0}")]
    Address(String),
    /// The node's key or certificate request could not be made.
    #[error("{what}: {source}")]
    Pki {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: PkiError,
    },
    /// A TLS configuration, or what the manager sent, is not usable.
    #[error("{what}: {source}")]
    Tls {
        /// What was being read.
        what: &'static str,
        /// Why.
        #[source]
        source: ConfigError,
    },
    /// The certificate the manager sent names no node.
    #[error("the certificate the manager sent: {0}")]
    Certificate(#[from] PeerError),
    /// No TLS connection to the manager.
    #[error(
        "cannot join through {manager}: {source}. A certificate error means the manager there does not hold the CA \
         this token names: check the address and the token"
    )]
    Connect {
        /// The manager's address.
        manager: String,
        /// Why.
        #[source]
        source: stackd_tls::ConnectError,
    },
    /// The manager refused the join.
    #[error("the manager at {manager} refused the join: {message}")]
    Refused {
        /// The manager's address.
        manager: String,
        /// Its reason.
        message: String,
    },
    /// The manager's answer does not fit the token or the request.
    #[error("{0}: refusing to join")]
    Mismatch(String),
    /// The node's files could not be written.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The managers' addresses could not be written.
    #[error("writing {path}: {source}")]
    Managers {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = JoinError> = std::result::Result<T, E>;

/// What `stackd join` was given.
pub struct JoinRequest<'a> {
    /// A manager's address.
    pub manager: &'a str,
    /// The join token's text.
    pub token: &'a str,
    /// The node's name.
    pub name: &'a str,
    /// The address the node's services listen on (managers), if given.
    pub listen: Option<&'a str>,
    /// The address others reach the node at, when not `listen`.
    pub advertise: Option<&'a str>,
    /// Generic resources the node offers.
    pub resources: &'a [(String, u64)],
    /// The node runs without its agent (managers only).
    pub no_agent: bool,
}

/// The address the node is known by: `--advertise-addr`, else `--listen`;
/// a manager's must be a concrete IP address and port.
fn advertised(req: &JoinRequest<'_>) -> Result<String> {
    let addr = req.advertise.or(req.listen).unwrap_or("");
    if addr.is_empty() {
        return Ok(String::new());
    }
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| JoinError::Address(format!("{addr:?} is not an address as IP:PORT (like 10.0.0.5:4280)")))?;
    if sock.ip().is_unspecified() {
        return Err(JoinError::Address(format!(
            "{addr} is not an address other nodes can reach: with --listen {addr}, give --advertise-addr IP:PORT"
        )));
    }
    Ok(addr.to_string())
}

/// Joins the cluster and writes the node's data dir. Returns its identity.
pub async fn join(dir: &Path, req: &JoinRequest<'_>) -> Result<Identity> {
    let token = stackd_tls::JoinToken::parse(req.token).map_err(|_| JoinError::BadToken)?;
    if Identity::exists(dir) {
        return Err(IdentityError::Exists(dir.display().to_string(), dir.display().to_string()).into());
    }
    let addr = advertised(req)?;
    let pki = |what| move |source| JoinError::Pki { what, source };
    let key = stackd_tls::NodeKey::generate().map_err(pki("generating the node key"))?;
    let csr = key.csr_der().map_err(pki("making the certificate request"))?;
    let tls = stackd_tls::pinned_client_config(token.ca_digest())
        .map_err(|source| JoinError::Tls { what: "the token's CA digest", source })?;
    let channel = stackd_tls::channel(req.manager, tls)
        .await
        .map_err(|source| JoinError::Connect { manager: req.manager.to_string(), source })?;
    let mut client = v1::control_client::ControlClient::new(channel);
    let request = v1::JoinClusterRequest {
        token: token.reveal(),
        csr_der: csr,
        name: req.name.to_string(),
        addr: addr.clone(),
        resources: Some(v1::Resources { generic: req.resources.iter().cloned().collect(), ..Default::default() }),
        labels: Default::default(),
        no_agent: req.no_agent,
    };
    let resp = client
        .join_cluster(request)
        .await
        .map_err(|s| JoinError::Refused { manager: req.manager.to_string(), message: s.message().to_string() })?
        .into_inner();
    // The TLS handshake pinned the CA; check that the one sent is the same.
    let ca = stackd_tls::read_ca(&resp.ca_pem)
        .map_err(|source| JoinError::Tls { what: "the CA the manager sent", source })?;
    if stackd_tls::ca_digest(&ca) != token.ca_digest() {
        return Err(JoinError::Mismatch("the manager sent a CA whose digest is not the token's".into()));
    }
    let key_pem = key.to_pem();
    let credentials = stackd_tls::Credentials::from_pem(&resp.cert_pem, &key_pem, &resp.ca_pem)
        .map_err(|source| JoinError::Tls { what: "the certificate the manager sent", source })?;
    let id = credentials.identity()?;
    if id.node_id != resp.node_id || id.cluster_id != resp.cluster_id {
        return Err(JoinError::Mismatch(format!(
            "the certificate the manager sent is not for node {} of cluster {}",
            resp.node_id, resp.cluster_id
        )));
    }
    files::write_joined(dir, &key_pem, &resp.cert_pem, &resp.ca_pem)?;
    let mut managers = resp.managers.clone();
    if !managers.iter().any(|m| m == req.manager) {
        managers.push(req.manager.to_string());
    }
    stackd_agent::save_managers(dir, &managers).map_err(|source| JoinError::Managers {
        path: dir.join(stackd_agent::MANAGERS_FILE).display().to_string(),
        source,
    })?;
    let identity = Identity {
        cluster_id: resp.cluster_id,
        node_id: resp.node_id,
        raft_id: resp.raft_id,
        name: req.name.to_string(),
        addr: addr.clone(),
        listen: req.listen.filter(|l| *l != addr).unwrap_or("").to_string(),
    };
    identity.save_new(dir)?;
    tracing::info!(node = %identity.node_id, role = id.role.as_str(), cluster = %identity.cluster_id, "joined the cluster");
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(listen: Option<&'a str>, advertise: Option<&'a str>) -> JoinRequest<'a> {
        JoinRequest { manager: "127.0.0.1:1", token: "", name: "n", listen, advertise, resources: &[], no_agent: false }
    }

    #[test]
    fn the_advertised_address_must_be_reachable() {
        assert_eq!(advertised(&req(Some("10.0.0.5:4280"), None)).expect("listen"), "10.0.0.5:4280");
        assert_eq!(advertised(&req(Some("0.0.0.0:4280"), Some("10.0.0.5:4280"))).expect("adv"), "10.0.0.5:4280");
        let e = advertised(&req(Some("0.0.0.0:4280"), None)).expect_err("unspecified");
        assert!(e.to_string().contains("--advertise-addr"), "{e}");
        assert!(advertised(&req(Some("myhost"), None)).is_err());
        assert_eq!(advertised(&req(None, None)).expect("worker"), "");
    }

    #[tokio::test]
    async fn a_malformed_token_writes_nothing() {
        let dir = std::env::temp_dir().join(format!("stackd-join-test-{}", std::process::id()));
        let mut r = req(Some("127.0.0.1:4999"), None);
        r.token = "STK-1-nothex";
        let e = join(&dir, &r).await.expect_err("bad token");
        assert!(e.to_string().contains("STK-1-"), "{e}");
        assert!(!dir.exists());
    }
}
