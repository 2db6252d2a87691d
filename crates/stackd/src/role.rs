//! A node follows the role the cluster gives it.
//!
//! ```text
//!  every PERIOD: Control.RenewNodeCertificate{} on a manager (this node first when it is one)
//!    role in the state == role in tls/node.crt ─► nothing
//!    otherwise (promote / demote):
//!      demoted manager: wait until Raft let it go (not a member), at most LEAVE_WAIT
//!      new certificate for the new role (same key) ─► tls/node.crt
//!      ─► the node restarts its roles: manager (Raft learner + server + agent) or worker (agent)
//! ```
//!
//! The manager's answer is linearizable (read index), so a node never acts
//! on a change that was undone since.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use stackd_manager::{Identity, RaftNode};
use stackd_proto::v1;
use stackd_tls::{Credentials, Role};

use crate::files;

/// How often the node asks for its role.
const PERIOD: Duration = Duration::from_secs(3);

/// How long one question may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a demoted manager waits for Raft to remove it before it stops
/// its manager role anyway.
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
    files::load_managers(dir).unwrap_or_default().into_iter().for_each(add);
    list
}

async fn ask(addr: &str, tls: Arc<rustls::ClientConfig>, csr: Vec<u8>) -> Result<v1::RenewNodeCertificateResponse> {
    let call = async {
        let channel = stackd_tls::channel(addr, tls).await?;
        let mut client = v1::control_client::ControlClient::new(channel);
        let resp = client
            .renew_node_certificate(v1::RenewNodeCertificateRequest { csr_der: csr })
            .await
            .map_err(|s| anyhow!("{}: {}", addr, s.message()))?;
        Ok::<_, anyhow::Error>(resp.into_inner())
    };
    tokio::time::timeout(ASK_TIMEOUT, call).await.map_err(|_| anyhow!("{addr}: no answer within {ASK_TIMEOUT:?}"))?
}

/// The first answer of the managers at `addrs`.
async fn ask_any(
    addrs: &[String],
    tls: &Arc<rustls::ClientConfig>,
    csr: &[u8],
) -> Result<v1::RenewNodeCertificateResponse> {
    let mut last = anyhow!("no manager address known");
    for addr in addrs {
        match ask(addr, tls.clone(), csr.to_vec()).await {
            Ok(r) => return Ok(r),
            Err(e) => last = e,
        }
    }
    Err(last)
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
/// node's roles. Runs for ever while the role does not change.
pub async fn watch(
    dir: &Path,
    identity: &Identity,
    credentials: &Credentials,
    current: Role,
    raft: Option<RaftNode>,
    own_addr: Option<String>,
) -> Result<Role> {
    let tls = stackd_tls::client_config(credentials.ca(), Some(credentials)).context("the node's TLS configuration")?;
    let mut demoted_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(PERIOD).await;
        let addrs = addresses(dir, own_addr.as_deref(), raft.as_ref());
        let resp = match ask_any(&addrs, &tls, &[]).await {
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
            // Leave Raft first: stopping while still a voter would take a vote away.
            let since = *demoted_since.get_or_insert_with(Instant::now);
            let member = raft.as_ref().is_some_and(|r| {
                let m = r.members();
                m.voters.contains_key(&identity.raft_id) || m.learners.contains_key(&identity.raft_id)
            });
            if member && since.elapsed() < LEAVE_WAIT {
                tracing::info!("this manager was demoted: waiting for Raft to let it go");
                continue;
            }
        }
        tracing::info!(from = current.as_str(), to = wanted.as_str(), "the cluster changed this node's role");
        renew(dir, identity, credentials, &tls, &addrs, wanted).await?;
        return Ok(wanted);
    }
}

/// Gets a certificate for `wanted` and writes it.
async fn renew(
    dir: &Path,
    identity: &Identity,
    credentials: &Credentials,
    tls: &Arc<rustls::ClientConfig>,
    addrs: &[String],
    wanted: Role,
) -> Result<()> {
    let key = files::load_key(dir)?;
    let csr = key.csr_der().context("making the certificate request")?;
    let mut attempt = 0;
    let resp = loop {
        match ask_any(addrs, tls, &csr).await {
            Ok(r) if role_of(r.role) == Some(wanted) && !r.cert_pem.is_empty() => break r,
            Ok(_) => bail!("the cluster changed this node's role again while it was being renewed"),
            Err(e) if attempt < 10 => {
                attempt += 1;
                tracing::warn!(error = %e, "renewing the node certificate failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.context("renewing the node certificate")),
        }
    };
    let ca_pem = files::read_ca_pem(dir)?;
    let renewed = Credentials::from_pem(&resp.cert_pem, &key.to_pem(), &ca_pem).context("the renewed certificate")?;
    let id = renewed.identity().context("the renewed certificate")?;
    if id.node_id != identity.node_id || id.role != wanted || credentials.ca() != renewed.ca() {
        bail!("the renewed certificate is not a {} certificate of node {}", wanted.as_str(), identity.node_id);
    }
    files::write_cert(dir, &resp.cert_pem)?;
    Ok(())
}
