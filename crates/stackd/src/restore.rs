//! `stackd restore`: a new single-manager cluster from a snapshot file,
//! with the cluster id, CA, secrets and tokens of the saved state, so that
//! the cluster's workers and clients reconnect to it as they are.
//!
//! Everything that can refuse the file is checked before the data dir is
//! touched: the file's header, the key, the payload's authentication, the
//! state. Then the data dir gets this node's identity (a new node id in the
//! saved cluster), a manager certificate signed by the saved CA, and the
//! saved state in `tls/restore.json`; [`crate::run_roles`] proposes it as
//! `RestoreCluster` and drops that file once it is committed.

use std::path::{Path, PathBuf};

use stackd_core::ClusterState;
use stackd_core::backup::{self, BackupError, Header};
use stackd_manager::{Identity, IdentityError};
use stackd_tls::age::{self, AgeError, Identity as Key};

use crate::files::{self, FilesError};

/// Why a restore was refused.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An `s3://` source without an endpoint, or a malformed one.
    #[error("--from {0}: {1}")]
    Remote(String, String),
    /// The download failed.
    #[error("downloading {url}: {source}")]
    Download {
        /// The `s3://` URL.
        url: String,
        /// Why.
        #[source]
        source: stackd_manager::s3::S3Error,
    },
    /// The snapshot file is refused.
    #[error("{path} is refused: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: BackupError,
    },
    /// The key does not open it, or the payload is damaged.
    #[error("{path} cannot be opened: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: AgeError,
    },
    /// The key file is not a key.
    #[error("{path} is not a recovery key: {source}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: AgeError,
    },
    /// A node of the snapshot that stays (a worker) has this manager's name.
    #[error("a worker of the snapshot is named {0}: give this manager another --name")]
    NameTaken(String),
    /// The data dir holds something and `--force` was not given.
    #[error(
        "{0} is not empty: a restore starts a new data dir. Give an empty (or new) directory, or --force to move \
         this one aside (to {0}.before-restore-<time>)"
    )]
    NotEmpty(String),
    /// Moving the old data dir aside failed.
    #[error("moving {from} aside to {to}: {source}")]
    MoveAside {
        /// The data dir.
        from: String,
        /// Where it was to go.
        to: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the node's files failed.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// Writing the identity failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Where an `s3://` snapshot is fetched from.
#[derive(Default)]
pub struct S3Source<'a> {
    /// `http(s)://host[:port]` of the S3 API.
    pub endpoint: Option<&'a str>,
    /// The region (default us-east-1).
    pub region: Option<&'a str>,
    /// A credentials file; default: the environment.
    pub credentials_file: Option<&'a Path>,
}

/// What `stackd restore` was given.
pub struct RestoreRequest<'a> {
    /// The snapshot file, or `s3://bucket/key`.
    pub from: &'a str,
    /// Where `s3://` sources are.
    pub s3: S3Source<'a>,
    /// The recovery key file.
    pub key_file: &'a Path,
    /// The new data dir.
    pub data_dir: &'a Path,
    /// The node's name.
    pub name: &'a str,
    /// The address other nodes reach it at.
    pub addr: &'a str,
    /// The address it listens on, when not `addr`.
    pub listen: Option<&'a str>,
    /// Move a non-empty data dir aside.
    pub force: bool,
    /// Unix ms now (the name of a data dir moved aside).
    pub now_ms: u64,
}

/// The bytes of `from`: a local file, or an object of an S3-compatible bucket.
async fn fetch(from: &str, s3: &S3Source<'_>) -> Result<Vec<u8>, RestoreError> {
    if !from.starts_with("s3://") {
        if from.contains("://") {
            return Err(RestoreError::Remote(from.into(), "a local file or s3://bucket/key".into()));
        }
        return std::fs::read(from).map_err(|source| RestoreError::Read { path: from.to_string(), source });
    }
    let remote = |why: &str| RestoreError::Remote(from.to_string(), why.to_string());
    let (bucket, key) = stackd_manager::s3::parse_url(from).ok_or_else(|| remote("not s3://bucket/key"))?;
    let endpoint = s3.endpoint.ok_or_else(|| remote("give --s3-endpoint (the S3 API's http(s)://host[:port])"))?;
    let download = |source| RestoreError::Download { url: from.to_string(), source };
    let credentials = stackd_manager::s3::credentials(s3.credentials_file).map_err(download)?;
    let client = stackd_manager::s3::Client::new(endpoint, bucket, s3.region.unwrap_or_default(), credentials)
        .map_err(download)?;
    Ok(client.get(key).await.map_err(download)?.to_vec())
}

/// Reads, checks and opens the snapshot: its header and state.
pub async fn open(from: &str, s3: &S3Source<'_>, key_file: &Path) -> Result<(Header, ClusterState), RestoreError> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|source| RestoreError::Read { path: p.display().to_string(), source });
    let bytes = fetch(from, s3).await?;
    let file = |source| RestoreError::File { path: from.to_string(), source };
    let (header, sealed) = backup::split(&bytes).map_err(file)?;
    let key_text = String::from_utf8_lossy(&read(key_file)?).into_owned();
    let keys = Key::parse_file(&key_text)
        .map_err(|source| RestoreError::Key { path: key_file.display().to_string(), source })?;
    let plain = age::decrypt(&keys, sealed).map_err(|source| RestoreError::Open { path: from.to_string(), source })?;
    let state = backup::open(&header, &plain).map_err(file)?;
    Ok((header, state))
}

/// Checks the snapshot, then prepares the data dir; the node's identity,
/// for [`crate::run_roles`].
pub async fn prepare(req: &RestoreRequest<'_>) -> Result<(Header, Identity), RestoreError> {
    let (header, state) = open(req.from, &req.s3, req.key_file).await?;
    let stays = |n: &&stackd_core::model::Node| n.role == stackd_core::model::NodeRole::Worker;
    if state.nodes.values().filter(stays).any(|n| n.name == req.name) {
        return Err(RestoreError::NameTaken(req.name.to_string()));
    }
    let dir = req.data_dir;
    let occupied = std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if occupied {
        if !req.force {
            return Err(RestoreError::NotEmpty(dir.display().to_string()));
        }
        let mut aside = dir.as_os_str().to_os_string();
        aside.push(format!(".before-restore-{}", req.now_ms));
        let aside = PathBuf::from(aside);
        std::fs::rename(dir, &aside).map_err(|source| RestoreError::MoveAside {
            from: dir.display().to_string(),
            to: aside.display().to_string(),
            source,
        })?;
        tracing::warn!(from = %dir.display(), to = %aside.display(), "--force: the data dir was moved aside");
    }
    let mut identity = Identity::generate(req.name, req.addr);
    identity.cluster_id = state.cluster_id.clone();
    if let Some(listen) = req.listen.filter(|l| *l != req.addr) {
        identity.listen = listen.to_string();
    }
    let write = || -> Result<(), RestoreError> {
        files::restore_pki(dir, &identity, &state)?;
        identity.save_new(dir)?;
        Ok(())
    };
    if let Err(e) = write() {
        // Nothing half-made is left behind.
        let _ = std::fs::remove_dir_all(dir);
        return Err(e);
    }
    Ok((header, identity))
}
