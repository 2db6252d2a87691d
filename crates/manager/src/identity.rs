//! A node's identity, kept in `DATA_DIR/node.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the identity could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `stackd init` on a data dir that already holds a node.
    #[error("{0} already holds a stackd node; start it with `stackd run --data-dir {1}`")]
    Exists(String, String),
    /// `stackd run` on a data dir without a node.
    #[error("{0} holds no stackd node; create one with `stackd init --data-dir {1}`")]
    Missing(String, String),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Who this node is. Written once by `stackd init`, read by `stackd run`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The cluster it belongs to.
    pub cluster_id: String,
    /// Node id (16 hex digits of `raft_id`).
    pub node_id: String,
    /// Its Raft id.
    pub raft_id: u64,
    /// Its name.
    pub name: String,
    /// The address other nodes and clients reach its gRPC services at.
    pub addr: String,
    /// The address its gRPC services listen on, when not `addr` (such as
    /// `0.0.0.0:4280`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub listen: String,
}

fn path(dir: &Path) -> PathBuf {
    dir.join("node.json")
}

impl Identity {
    /// Makes a new identity with random ids.
    pub fn generate(name: &str, addr: &str) -> Self {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        // Raft ids are non-zero: zero reads as "none" in too many places.
        let raft_id: u64 = rng.gen_range(1..=u64::MAX);
        let cluster: u128 = rng.r#gen();
        Self {
            cluster_id: format!("{cluster:032x}"),
            node_id: format!("{raft_id:016x}"),
            raft_id,
            name: name.to_string(),
            addr: addr.to_string(),
            listen: String::new(),
        }
    }

    /// The address to listen on: `listen`, else `addr`.
    pub fn bind_addr(&self) -> &str {
        if self.listen.is_empty() { &self.addr } else { &self.listen }
    }

    /// Whether `dir` holds an identity.
    pub fn exists(dir: &Path) -> bool {
        path(dir).exists()
    }

    /// Reads the identity of `dir`.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let p = path(dir);
        if !p.exists() {
            return Err(IdentityError::Missing(dir.display().to_string(), dir.display().to_string()));
        }
        let bytes = std::fs::read(&p).map_err(|source| IdentityError::Io { path: p.display().to_string(), source })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| IdentityError::Corrupt { path: p.display().to_string(), message: e.to_string() })
    }

    /// Writes the identity into `dir`, which must not hold one.
    pub fn save_new(&self, dir: &Path) -> Result<(), IdentityError> {
        let p = path(dir);
        if p.exists() {
            return Err(IdentityError::Exists(dir.display().to_string(), dir.display().to_string()));
        }
        let io = |source| IdentityError::Io { path: p.display().to_string(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| IdentityError::Corrupt { path: p.display().to_string(), message: e.to_string() })?;
        crate::util::write_atomic(dir, "node.json", &bytes)
            .map_err(|source| IdentityError::Io { path: p.display().to_string(), source })
    }
}
