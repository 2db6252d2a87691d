//! `stackd unlock`: gives a locked manager on this host (autolock) the
//! cluster's unlock key, over its own TLS address with the node's
//! certificate.

use std::path::Path;

use stackd_manager::{Identity, IdentityError};
use stackd_proto::v1;
use stackd_tls::seal::UnlockKey;

use crate::files::{self, FilesError};

/// Why the manager could not be unlocked.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    /// The data dir holds no node.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The node's credentials cannot be read.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The TLS configuration cannot be built.
    #[error("the node's TLS configuration: {0}")]
    Tls(#[from] stackd_tls::ConfigError),
    /// The manager cannot be reached.
    #[error("cannot reach the manager at {addr} (is `stackd run` started for this data dir?): {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: stackd_tls::ConnectError,
    },
    /// The manager refused the key, or is not locked.
    #[error("the manager at {addr}: {message}")]
    Refused {
        /// The address.
        addr: String,
        /// Its answer.
        message: String,
    },
}

/// Unlocks the manager of `data_dir` with `key`; returns the key's id.
pub async fn unlock(data_dir: &Path, key: &UnlockKey) -> Result<String, UnlockError> {
    let identity = Identity::load(data_dir)?;
    let credentials = files::load_credentials(data_dir)?;
    let tls = stackd_tls::client_config(credentials.ca(), Some(&credentials))?;
    let addr = crate::dial_addr(identity.bind_addr());
    let channel =
        stackd_tls::channel(&addr, tls).await.map_err(|source| UnlockError::Connect { addr: addr.clone(), source })?;
    let reply = v1::lock_client::LockClient::new(channel)
        .unlock(v1::UnlockRequest { key: key.to_secret_string() })
        .await
        .map_err(|s| UnlockError::Refused { addr: addr.clone(), message: s.message().to_string() })?;
    Ok(reply.into_inner().key_id)
}
