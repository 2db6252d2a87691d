//! Autolock's locked manager: the `Lock` service, and what a manager serves
//! while its raft data waits for the cluster's unlock key.
//!
//! ```text
//!  start ─► keys::open ─► Locked ─► serve_until_unlocked: TLS on the node's address,
//!                                    Lock.Unlock(key) ─► keys::open(key) ─► AtRest ─► Manager::start
//!                                    any other call ─► UNAVAILABLE "this manager is locked …"
//! ```
//!
//! A locked manager does not exit: systemd would only restart it into the
//! same state. It waits, says so in its log and to every caller, and
//! starts once `stackd unlock` or `stackctl cluster unlock` gives it the
//! key. The key is the credential: `Unlock` needs no token (a running
//! manager answers it with "not locked").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use stackd_proto::v1;
use stackd_tls::seal::UnlockKey;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::keys::{self, AtRest, KeysError};

/// What every other call to a locked manager gets.
const LOCKED: &str = "this manager is locked (autolock): it waits for the cluster's unlock key; give it with \
                      `stackctl --addr ADDR cluster unlock` or, on its host, `stackd unlock --data-dir DIR`";

/// Why a locked manager could not wait for its key.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The node's TLS credentials are unusable.
    #[error("the node's TLS credentials: {0}")]
    Tls(#[from] stackd_tls::ConfigError),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed.
    #[error("serving the locked manager on {addr}: {message}")]
    Serve {
        /// The address.
        addr: String,
        /// What failed.
        message: String,
    },
}

/// The `Lock` service of a running manager: there is nothing to unlock.
#[derive(Clone, Default)]
pub(crate) struct Unlocked;

#[tonic::async_trait]
impl v1::lock_server::Lock for Unlocked {
    async fn unlock(&self, _req: Request<v1::UnlockRequest>) -> Result<Response<v1::UnlockResponse>, Status> {
        Err(Status::failed_precondition("this manager is not locked"))
    }
}

/// The `Lock` service of a locked manager.
#[derive(Clone)]
struct Locked {
    data_dir: PathBuf,
    opened: Arc<watch::Sender<Option<AtRest>>>,
}

#[tonic::async_trait]
impl v1::lock_server::Lock for Locked {
    async fn unlock(&self, req: Request<v1::UnlockRequest>) -> Result<Response<v1::UnlockResponse>, Status> {
        let key: UnlockKey = req.into_inner().key.parse().map_err(|e: stackd_tls::seal::SealError| {
            Status::invalid_argument(format!("{e}; the unlock key is what `stackctl cluster unlock-key` prints"))
        })?;
        let id = key.id();
        let dir = self.data_dir.clone();
        let opened = tokio::task::spawn_blocking(move || keys::open(&dir, Some(&key)))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        match opened {
            Ok(at_rest) => {
                tracing::info!(key_id = %id, "unlocked: starting the manager");
                self.opened.send_replace(Some(at_rest));
                Ok(Response::new(v1::UnlockResponse { key_id: id }))
            }
            Err(e @ KeysError::WrongKey { .. }) => {
                tracing::warn!(error = %e, "an unlock with the wrong key was refused");
                Err(Status::permission_denied(e.to_string()))
            }
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }
}

/// What every call but `Unlock` gets from a locked manager.
async fn locked_reply() -> tonic::codegen::http::Response<tonic::body::Body> {
    Status::unavailable(LOCKED).into_http()
}

/// Waits on `addr`, over TLS with the node's `credentials`, for the unlock
/// key of the manager in `data_dir`, which [`keys::open`] found locked
/// (`why`). Returns its data key once a caller gave the key, or `None` when
/// `stop` came first.
pub async fn serve_until_unlocked(
    data_dir: &Path,
    addr: &str,
    credentials: &stackd_tls::Credentials,
    why: &KeysError,
    stop: CancellationToken,
) -> Result<Option<AtRest>, LockError> {
    tracing::warn!("{why}; waiting for it on {addr}");
    let store = stackd_tls::CertStore::new(credentials)?;
    let tls = stackd_tls::server_config(credentials.ca(), Arc::new(store))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| LockError::Listen { addr: addr.to_string(), source })?;
    let (opened, mut rx) = watch::channel(None);
    let service = Locked { data_dir: data_dir.to_path_buf(), opened: Arc::new(opened) };
    let mut routes = tonic::service::Routes::new(v1::lock_server::LockServer::new(service));
    let router = std::mem::take(routes.axum_router_mut()).fallback(locked_reply);
    let done = CancellationToken::new();
    let serve = tonic::transport::Server::builder()
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming_shutdown(stackd_tls::tls_incoming(listener, tls), done.clone().cancelled_owned());
    tokio::pin!(serve);
    let reminder = async {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            tracing::warn!("{LOCKED}");
        }
    };
    let outcome = tokio::select! {
        r = &mut serve => Err(LockError::Serve {
            addr: addr.to_string(),
            message: r.err().map(|e| e.to_string()).unwrap_or_else(|| "the server stopped".into()),
        }),
        r = rx.wait_for(Option::is_some) => Ok(r.ok().and_then(|v| v.clone())),
        () = stop.cancelled() => Ok(None),
        () = reminder => Ok(None),
    };
    // The `Unlock` reply goes out first; clients that keep their connection
    // open would hold a graceful stop forever: a moment, not more.
    done.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), &mut serve).await;
    outcome
}
