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

use anyhow::{Context, Result, anyhow, bail};
use stackd_manager::Identity;
use stackd_proto::v1;

use crate::files;

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
    let sock: std::net::SocketAddr =
        addr.parse().map_err(|_| anyhow!("{addr:?} is not an address as IP:PORT (like 10.0.0.5:4280)"))?;
    if sock.ip().is_unspecified() {
        bail!("{addr} is not an address other nodes can reach: with --listen {addr}, give --advertise-addr IP:PORT");
    }
    Ok(addr.to_string())
}

/// Joins the cluster and writes the node's data dir. Returns its identity.
pub async fn join(dir: &Path, req: &JoinRequest<'_>) -> Result<Identity> {
    let token = stackd_tls::JoinToken::parse(req.token).map_err(|_| {
        anyhow!(
            "the join token is not of the form STK-1-<CA digest>-<secret>: copy it from `stackctl cluster join-token \
             manager|worker`"
        )
    })?;
    if Identity::exists(dir) {
        bail!(stackd_manager::IdentityError::Exists(dir.display().to_string(), dir.display().to_string()));
    }
    let addr = advertised(req)?;
    let key = stackd_tls::NodeKey::generate().context("generating the node key")?;
    let csr = key.csr_der().context("making the certificate request")?;
    let tls = stackd_tls::pinned_client_config(token.ca_digest())?;
    let channel = stackd_tls::channel(req.manager, tls).await.map_err(|e| {
        anyhow!(
            "cannot join through {}: {e}. A certificate error means the manager there does not hold the CA this \
             token names: check the address and the token",
            req.manager
        )
    })?;
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
        .map_err(|s| anyhow!("the manager at {} refused the join: {}", req.manager, s.message()))?
        .into_inner();
    // The TLS handshake pinned the CA; check that the one sent is the same.
    let ca = stackd_tls::read_ca(&resp.ca_pem).context("the CA the manager sent")?;
    if stackd_tls::ca_digest(&ca) != token.ca_digest() {
        bail!("the manager sent a CA whose digest is not the token's: refusing to join");
    }
    let key_pem = key.to_pem();
    let credentials = stackd_tls::Credentials::from_pem(&resp.cert_pem, &key_pem, &resp.ca_pem)
        .context("the certificate the manager sent")?;
    let id = credentials.identity().context("the certificate the manager sent")?;
    if id.node_id != resp.node_id || id.cluster_id != resp.cluster_id {
        bail!("the certificate the manager sent is not for node {} of cluster {}", resp.node_id, resp.cluster_id);
    }
    files::write_joined(dir, &key_pem, &resp.cert_pem, &resp.ca_pem)?;
    let mut managers = resp.managers.clone();
    if !managers.iter().any(|m| m == req.manager) {
        managers.push(req.manager.to_string());
    }
    stackd_agent::save_managers(dir, &managers)
        .with_context(|| format!("writing {}", dir.join(stackd_agent::MANAGERS_FILE).display()))?;
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
