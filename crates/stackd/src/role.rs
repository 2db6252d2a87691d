//! A node follows the role the cluster gives it.
//!
//! ```text
//!  every PERIOD: Control.RenewNodeCertificate{} on a manager (this node first when it is one)
//!    role in the state == role in tls/node.crt ─► nothing
//!    otherwise (promote / demote):
//!      demoted manager: wait until Raft let it go (not a member)
//!      new certificate for the new role (same key) ─► tls/node.crt
//!      ─► the node restarts its roles: manager (Raft learner + server + agent) or worker (agent)
//! ```
//!
//! The manager's answer is linearizable (read index), so a node never acts
//! on a change that was undone since.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stackd_manager::{Identity, RaftNode};
use stackd_proto::v1;
use stackd_tls::{ConfigError, Credentials, PeerError, PkiError, Role};
use tonic::transport::Channel;

use crate::files::{self, FilesError};

/// Why the node could not take its new role (yet).
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// A manager could not be asked, or did not answer.
    #[error("{addr}: {message}")]
    Ask {
        /// The manager's address.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// The node knows no manager to ask.
    #[error("no manager address known")]
    NoManager,
    /// The node's TLS configuration cannot be built.
    #[error("the node's TLS configuration: {0}")]
    Tls(#[source] ConfigError),
    /// The node's files could not be read or written.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The certificate request could not be made.
    #[error("making the certificate request: {0}")]
    Pki(#[from] PkiError),
    /// The role changed back while the certificate was being renewed.
    #[error("the cluster changed this node's role again while it was being renewed")]
    ChangedAgain,
    /// No manager renewed the certificate after several tries.
    #[error("renewing the node certificate: {0}")]
    Renew(#[source] Box<RoleError>),
    /// The renewed certificate is not usable.
    #[error("the renewed certificate: {0}")]
    Renewed(#[source] ConfigError),
    /// The renewed certificate names no node.
    #[error("the renewed certificate: {0}")]
    RenewedIdentity(#[from] PeerError),
    /// The renewed certificate is for another node or role, or another CA.
    #[error("the renewed certificate is not a {role} certificate of node {node}")]
    WrongCertificate {
        /// The role asked for.
        role: &'static str,
        /// This node.
        node: String,
    },
}

type Result<T, E = RoleError> = std::result::Result<T, E>;

/// How often the node asks for its role.
const PERIOD: Duration = Duration::from_secs(3);

/// How long one question may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a demoted manager waits for Raft to remove it before it warns
/// (it never stops its manager role while still a member).
const LEAVE_WAIT: Duration = Duration::from_secs(15);

/// Where this node asks: itself first when it is a manager, then the
/// managers it knows of.
fn addresses(dir: &Path, own: Option<&str>, raft: Option<&RaftNode>) -> Vec<String> {
    let mut list: Vec<String> = own.map(str::to_string).into_iter().collect();
    let mut add = |a: String| {
        if !a.is_empty() && !list.contains(&a) {
            list.push(a);
        }
    };
    if let Some(raft) = raft {
        let m = raft.members();
        m.voters.into_values().chain(m.learners.into_values()).for_each(&mut add);
    }
    stackd_agent::saved_managers(dir).into_iter().for_each(add);
    list
}

/// Connections to the managers, made once and reused by every question
/// (a lazy channel reconnects by itself).
struct Managers {
    tls: Arc<rustls::ClientConfig>,
    channels: HashMap<String, Channel>,
}

impl Managers {
    fn channel(&mut self, addr: &str) -> Result<Channel> {
        if let Some(ch) = self.channels.get(addr) {
            return Ok(ch.clone());
        }
        let ch = stackd_tls::lazy_channel(addr, self.tls.clone())
            .map_err(|e| RoleError::Ask { addr: addr.to_string(), message: e.to_string() })?;
        self.channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    async fn ask(&mut self, addr: &str, csr: Vec<u8>) -> Result<v1::RenewNodeCertificateResponse> {
        let mut client = v1::control_client::ControlClient::new(self.channel(addr)?);
        let mut req = tonic::Request::new(v1::RenewNodeCertificateRequest { csr_der: csr });
        req.set_timeout(ASK_TIMEOUT);
        let resp = tokio::time::timeout(ASK_TIMEOUT, client.renew_node_certificate(req))
            .await
            .map_err(|_| RoleError::Ask {
                addr: addr.to_string(),
                message: format!("no answer within {ASK_TIMEOUT:?}"),
            })?
            .map_err(|s| RoleError::Ask { addr: addr.to_string(), message: s.message().to_string() })?;
        Ok(resp.into_inner())
    }

    /// The first answer of the managers at `addrs`.
    async fn ask_any(&mut self, addrs: &[String], csr: &[u8]) -> Result<v1::RenewNodeCertificateResponse> {
        let mut last = RoleError::NoManager;
        for addr in addrs {
            match self.ask(addr, csr.to_vec()).await {
                Ok(r) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

fn role_of(wire: i32) -> Option<Role> {
    match v1::NodeRole::try_from(wire) {
        Ok(v1::NodeRole::Manager) => Some(Role::Manager),
        Ok(v1::NodeRole::Worker) => Some(Role::Worker),
        _ => None,
    }
}

/// Watches the node's role; returns the new role once the node holds a
/// certificate for it (written to `tls/node.crt`): the caller restarts the
/// node's roles. Runs for ever while the role does not change; failures
/// (managers unreachable, a role changed back meanwhile) are retried.
pub async fn watch(
    dir: &Path,
    identity: &Identity,
    credentials: &Credentials,
    current: Role,
    raft: Option<RaftNode>,
    own_addr: Option<String>,
) -> Result<Role> {
    let tls = stackd_tls::client_config(credentials.ca(), Some(credentials)).map_err(RoleError::Tls)?;
    let mut managers = Managers { tls, channels: HashMap::new() };
    let mut demoted_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(PERIOD).await;
        // A demoted manager asks the others: its own state may no longer follow the log.
        let own = if demoted_since.is_some() { None } else { own_addr.as_deref() };
        let addrs = addresses(dir, own, raft.as_ref());
        let resp = match managers.ask_any(&addrs, &[]).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the managers for this node's role");
                continue;
            }
        };
        let Some(wanted) = role_of(resp.role) else { continue };
        if wanted == current {
            demoted_since = None;
            continue;
        }
        if current == Role::Manager {
            // Leave Raft first: stopping while still a voter would take a vote
            // away for good. The leader removes a demoted manager within a
            // tick unless it has no quorum: then this one waits with it.
            let since = *demoted_since.get_or_insert_with(Instant::now);
            let member = raft.as_ref().is_some_and(|r| {
                let m = r.members();
                m.voters.contains_key(&identity.raft_id) || m.learners.contains_key(&identity.raft_id)
            });
            if member {
                if since.elapsed() > LEAVE_WAIT {
                    tracing::warn!(
                        waiting = ?since.elapsed(),
                        "this manager was demoted but is still a Raft member: waiting for the leader to remove it \
                         (does the cluster have a quorum? `stackctl cluster status`)"
                    );
                }
                continue;
            }
        }
        tracing::info!(from = current.as_str(), to = wanted.as_str(), "the cluster changed this node's role");
        match renew(dir, identity, credentials, &mut managers, &addrs, wanted).await {
            Ok(()) => return Ok(wanted),
            Err(e) => tracing::warn!(error = %e, "could not take the new role yet; retrying"),
        }
    }
}

/// Gets a certificate for `wanted` and writes it.
async fn renew(
    dir: &Path,
    identity: &Identity,
    credentials: &Credentials,
    managers: &mut Managers,
    addrs: &[String],
    wanted: Role,
) -> Result<()> {
    let key = files::load_key(dir)?;
    let csr = key.csr_der()?;
    let mut attempt = 0;
    let resp = loop {
        match managers.ask_any(addrs, &csr).await {
            Ok(r) if role_of(r.role) == Some(wanted) && !r.cert_pem.is_empty() => break r,
            Ok(_) => return Err(RoleError::ChangedAgain),
            Err(e) if attempt < 10 => {
                attempt += 1;
                tracing::warn!(error = %e, "renewing the node certificate failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(RoleError::Renew(Box::new(e))),
        }
    };
    let ca_pem = files::read_ca_pem(dir)?;
    let renewed = Credentials::from_pem(&resp.cert_pem, &key.to_pem(), &ca_pem).map_err(RoleError::Renewed)?;
    let id = renewed.identity()?;
    if id.node_id != identity.node_id || id.role != wanted || credentials.ca() != renewed.ca() {
        return Err(RoleError::WrongCertificate { role: wanted.as_str(), node: identity.node_id.clone() });
    }
    files::write_cert(dir, &resp.cert_pem)?;
    Ok(())
}
