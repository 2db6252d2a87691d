//! The node's security files in its data dir.
//!
//! ```text
//!  DATA_DIR/            0700
//!    tls/               0700
//!      ca.crt           the cluster's CA certificate (public)
//!      node.crt         the node's certificate, then the CA's
//!      node.key         the node's private key, 0600
//!      bootstrap.json   0600, `stackd init` only, until InitCluster committed:
//!                       the security state to propose and the admin token
//!    stackctl.env       0600, written once InitCluster committed (`init` only)
//!    managers.json      the managers' addresses (stackd join, then the agent)
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stackd_core::model::Blob;
use stackd_core::security::{ClientToken, Security, TokenRole};
use stackd_manager::Identity;
use stackd_manager::util::write_atomic_mode;
use stackd_tls::{Ca, ConfigError, Credentials, NodeKey, PkiError, Role, Secret};

/// What went wrong with the node's files.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A file or directory could not be read, written, moved or removed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (`writing /var/lib/stackd/tls/node.key`).
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A key, certificate or the CA could not be made or read.
    #[error("{what}: {source}")]
    Pki {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: PkiError,
    },
    /// The node's certificate, key and CA do not make usable credentials.
    #[error("the node's credentials in {dir}: {source}")]
    Credentials {
        /// The data dir.
        dir: String,
        /// Why.
        #[source]
        source: ConfigError,
    },
    /// A data dir made before TLS existed.
    #[error(
        "{0} has no TLS credentials (tls/node.key): it was made by a stackd without TLS and cannot be migrated; \
         create a new node with `stackd init`"
    )]
    NoCredentials(String),
    /// The recovery key could not be made.
    #[error("{0}")]
    Recovery(String),
    /// `bootstrap.json` cannot be written or read back.
    #[error("{what}: {source}")]
    Json {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: serde_json::Error,
    },
    /// The generated security state does not hold together (a bug).
    #[error("the new cluster's security state: {0}")]
    Security(#[from] stackd_core::security::SecurityError),
}

type Result<T, E = FilesError> = std::result::Result<T, E>;

/// An I/O error, saying what was being done.
fn io(what: String) -> impl FnOnce(std::io::Error) -> FilesError {
    move |source| FilesError::Io { what, source }
}

/// A PKI error, saying what was being done.
fn pki(what: &str) -> impl FnOnce(PkiError) -> FilesError + '_ {
    move |source| FilesError::Pki { what: what.to_string(), source }
}

/// The name of the admin token `stackd init` creates.
const ADMIN_TOKEN_NAME: &str = "admin";

/// What `stackd init` keeps until the cluster's first command committed.
#[derive(Serialize, Deserialize)]
pub struct Bootstrap {
    /// The security state `InitCluster` carries (the CA key included).
    pub security: Security,
    /// The admin token's full text, for `stackctl.env`.
    pub admin_token: String,
}

fn tls_dir(dir: &Path) -> PathBuf {
    dir.join("tls")
}

fn bootstrap_path(dir: &Path) -> PathBuf {
    tls_dir(dir).join("bootstrap.json")
}

/// Creates `dir` if needed and restricts it to its owner.
fn private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("chmod 0700 {}", dir.display())))
}

/// Writes `bytes` to `dir/name` with `mode` from the start, atomically and
/// durably ([`write_atomic_mode`]).
fn write_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_mode(dir, name, bytes, mode).map_err(io(format!("writing {}", dir.join(name).display())))
}

/// `stackd init`: the cluster's CA, this node's key and manager certificate,
/// two join secrets and an admin token. Writes `tls/` (with
/// `bootstrap.json`) into `dir`, which becomes private to its owner.
/// With `autolock`, the cluster's state holds a new unlock key.
pub fn init_pki(dir: &Path, identity: &Identity, now_ms: u64, autolock: bool) -> Result<()> {
    private_dir(dir)?;
    let tls = tls_dir(dir);
    private_dir(&tls)?;
    let ca = Ca::generate(&identity.cluster_id).map_err(pki("generating the cluster CA"))?;
    let key = NodeKey::generate().map_err(pki("generating the node key"))?;
    let cert = ca.sign_key(&key, &identity.node_id, Role::Manager).map_err(pki("signing the node certificate"))?;
    let admin = stackd_tls::ClientToken::generate();
    let token = ClientToken {
        id: admin.id().to_string(),
        name: ADMIN_TOKEN_NAME.to_string(),
        role: TokenRole::Admin,
        stacks: vec![],
        secret_sha256: admin.secret_sha256(),
        created_at: now_ms,
    };
    let recovery = stackd_tls::age::Identity::generate()
        .map_err(|e| FilesError::Recovery(format!("generating the recovery key: {e}")))?;
    let (manager_secret, mut worker_secret) = (Secret::generate(), Secret::generate());
    while worker_secret == manager_secret {
        worker_secret = Secret::generate();
    }
    let security = Security {
        ca_cert_pem: ca.cert_pem().to_string(),
        ca_key_pem: Blob(ca.key_pem().into_bytes()),
        manager_secret: Blob(manager_secret.as_bytes().to_vec()),
        worker_secret: Blob(worker_secret.as_bytes().to_vec()),
        tokens: [(token.id.clone(), token)].into(),
        recovery_recipient: recovery.recipient().to_string(),
        unlock_key: match autolock {
            true => Blob(
                stackd_tls::seal::UnlockKey::generate()
                    .map_err(|e| FilesError::Recovery(format!("generating the unlock key: {e}")))?
                    .to_secret_string()
                    .into_bytes(),
            ),
            false => Blob::default(),
        },
    };
    security.validate()?;
    let bootstrap = Bootstrap { security, admin_token: admin.reveal() };
    write_file(&tls, "ca.crt", ca.cert_pem().as_bytes(), 0o644)?;
    write_file(&tls, "node.crt", format!("{}{}", cert, ca.cert_pem()).as_bytes(), 0o644)?;
    write_file(&tls, "node.key", key.to_pem().as_bytes(), 0o600)?;
    let json = serde_json::to_vec(&bootstrap)
        .map_err(|source| FilesError::Json { what: "encoding bootstrap.json".into(), source })?;
    write_file(&tls, "bootstrap.json", &json, 0o600)?;
    write_file(dir, RECOVERY_KEY, recovery_key_file(&recovery, &identity.cluster_id, now_ms).as_bytes(), 0o600)?;
    Ok(())
}

/// The file `stackd init` writes the recovery key to, in the data dir.
pub const RECOVERY_KEY: &str = "recovery.key";

/// The text of a recovery key file (age's identity format, with comments).
fn recovery_key_file(key: &stackd_tls::age::Identity, cluster_id: &str, now_ms: u64) -> String {
    key.to_file(
        &stackd_core::model::rfc3339(now_ms),
        &format!(
            "stackd recovery key of cluster {cluster_id}: it opens the cluster's snapshots.\n\
             Move it off the cluster (a password manager, a safe) and delete this copy.\n\
             Without stackd: tail -n +3 SNAPSHOT | age -d -i recovery.key"
        ),
    )
}

/// `stackd join`: the node's key, its certificate (followed by the CA's)
/// and the CA, as the cluster sent them, into `dir/tls`; `dir` becomes
/// private to its owner.
pub fn write_joined(dir: &Path, key_pem: &str, cert_pem: &str, ca_pem: &str) -> Result<()> {
    private_dir(dir)?;
    let tls = tls_dir(dir);
    private_dir(&tls)?;
    write_file(&tls, "node.key", key_pem.as_bytes(), 0o600)?;
    write_file(&tls, "ca.crt", ca_pem.as_bytes(), 0o644)?;
    write_file(&tls, "node.crt", cert_pem.as_bytes(), 0o644)
}

/// The node's private key.
pub fn load_key(dir: &Path) -> Result<NodeKey> {
    let path = tls_dir(dir).join("node.key");
    let pem = std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
    NodeKey::from_pem(&pem)
        .map_err(|source| FilesError::Pki { what: format!("{} is not a usable key", path.display()), source })
}

/// The cluster CA's certificate, PEM.
pub fn read_ca_pem(dir: &Path) -> Result<String> {
    let path = tls_dir(dir).join("ca.crt");
    std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))
}

/// Replaces the node's certificate (a renewal for a new role).
pub fn write_cert(dir: &Path, cert_pem: &str) -> Result<()> {
    write_file(&tls_dir(dir), "node.crt", cert_pem.as_bytes(), 0o644)
}

/// Moves a demoted manager's Raft state aside (`raft.removed-<ms>`): it is
/// no member any more, and a later promotion starts from an empty log.
pub fn retire_raft(dir: &Path, now_ms: u64) -> Result<()> {
    let from = dir.join("raft");
    if !from.exists() {
        return Ok(());
    }
    let to = dir.join(format!("raft.removed-{now_ms}"));
    std::fs::rename(&from, &to).map_err(io(format!("moving {} to {}", from.display(), to.display())))?;
    // Its data key is wrapped by the local key file, which a later
    // promotion replaces: the retired data keeps a copy that opens it.
    let kek = dir.join("raft.kek");
    if kek.exists() {
        std::fs::copy(&kek, to.join("raft.kek")).map_err(io(format!(
            "copying {} into {}",
            kek.display(),
            to.display()
        )))?;
    }
    Ok(())
}

/// The node's credentials from `dir/tls`.
pub fn load_credentials(dir: &Path) -> Result<Credentials> {
    let tls = tls_dir(dir);
    if !tls.join("node.key").exists() {
        return Err(FilesError::NoCredentials(dir.display().to_string()));
    }
    let read = |name: &str| {
        let path = tls.join(name);
        std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))
    };
    Credentials::from_pem(&read("node.crt")?, &read("node.key")?, &read("ca.crt")?)
        .map_err(|source| FilesError::Credentials { dir: dir.display().to_string(), source })
}

/// The bootstrap state of `stackd init`, if the cluster's first command has
/// not been confirmed yet.
pub fn load_bootstrap(dir: &Path) -> Result<Option<Bootstrap>> {
    load_pending(&bootstrap_path(dir))
}

/// A pending JSON file (`bootstrap.json`, `restore.json`), if it is there.
fn load_pending<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
    let value = serde_json::from_slice(&bytes)
        .map_err(|source| FilesError::Json { what: format!("{} is corrupt", path.display()), source })?;
    Ok(Some(value))
}

fn restore_path(dir: &Path) -> PathBuf {
    tls_dir(dir).join("restore.json")
}

/// `stackd restore`: this node's key and a manager certificate signed by
/// the CA of the saved `state` (the same CA: workers and clients of the
/// cluster keep trusting it), and the saved state in `tls/restore.json`
/// (0600) until its `RestoreCluster` commits. `dir` becomes private.
pub fn restore_pki(dir: &Path, identity: &Identity, state: &stackd_core::ClusterState) -> Result<()> {
    private_dir(dir)?;
    let tls = tls_dir(dir);
    private_dir(&tls)?;
    let key_pem = String::from_utf8(state.security.ca_key_pem.0.clone())
        .map_err(|_| FilesError::Recovery("the snapshot's CA key is not PEM text".into()))?;
    let ca = Ca::from_pem(&state.security.ca_cert_pem, &key_pem).map_err(pki("reading the snapshot's CA"))?;
    let key = NodeKey::generate().map_err(pki("generating the node key"))?;
    let cert = ca.sign_key(&key, &identity.node_id, Role::Manager).map_err(pki("signing the node certificate"))?;
    write_file(&tls, "ca.crt", ca.cert_pem().as_bytes(), 0o644)?;
    write_file(&tls, "node.crt", format!("{}{}", cert, ca.cert_pem()).as_bytes(), 0o644)?;
    write_file(&tls, "node.key", key.to_pem().as_bytes(), 0o600)?;
    let json = stackd_core::state::with_shared_templates(|| serde_json::to_vec(state))
        .map_err(|source| FilesError::Json { what: "encoding restore.json".into(), source })?;
    write_file(&tls, "restore.json", &json, 0o600)
}

/// The saved state of a `stackd restore` whose `RestoreCluster` has not
/// committed yet, if any.
pub fn load_restore(dir: &Path) -> Result<Option<stackd_core::ClusterState>> {
    load_pending(&restore_path(dir))
}

/// Once `RestoreCluster` committed: writes `stackctl.env` (0600) without a
/// token (the cluster's tokens are those of the snapshot: use one of
/// them), then drops `restore.json`. Returns the path of `stackctl.env`.
pub fn finish_restore(dir: &Path, identity: &Identity, dial_addr: &str) -> Result<PathBuf> {
    let dir = std::path::absolute(dir).map_err(io(format!("resolving {}", dir.display())))?;
    let ca = tls_dir(&dir).join("ca.crt");
    let body = format!(
        "# stackctl settings for cluster {} (restored): `set -a; . {}; set +a`\n\
         # The cluster's client tokens are those of the snapshot: set STACKCTL_TOKEN to one of them.\n\
         STACKCTL_ADDR={}\nSTACKCTL_CA={}\n",
        identity.cluster_id,
        dir.join("stackctl.env").display(),
        shell_value(&format!("https://{dial_addr}")),
        shell_value(&ca.display().to_string()),
    );
    write_file(&dir, "stackctl.env", body.as_bytes(), 0o600)?;
    let path = restore_path(&dir);
    std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
    Ok(dir.join("stackctl.env"))
}

/// Once `InitCluster` committed: writes `stackctl.env` (0600), then drops
/// `bootstrap.json` (the CA key and the token live on in the Raft state and
/// in `stackctl.env`). Returns the path of `stackctl.env`.
pub fn finish_bootstrap(dir: &Path, identity: &Identity, dial_addr: &str, admin_token: &str) -> Result<PathBuf> {
    let dir = std::path::absolute(dir).map_err(io(format!("resolving {}", dir.display())))?;
    let ca = tls_dir(&dir).join("ca.crt");
    let body = format!(
        "# stackctl settings for cluster {}: `set -a; . {}; set +a`\nSTACKCTL_ADDR={}\nSTACKCTL_CA={}\nSTACKCTL_TOKEN={}\n",
        identity.cluster_id,
        dir.join("stackctl.env").display(),
        shell_value(&format!("https://{dial_addr}")),
        shell_value(&ca.display().to_string()),
        shell_value(admin_token),
    );
    write_file(&dir, "stackctl.env", body.as_bytes(), 0o600)?;
    let path = bootstrap_path(&dir);
    std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
    Ok(dir.join("stackctl.env"))
}

/// `value` as a shell word: as it is when it is safe, single-quoted if not.
fn shell_value(value: &str) -> String {
    let safe = value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,[]".contains(&b));
    if safe { value.to_string() } else { format!("'{}'", value.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_private_files_that_load() {
        let tmp = std::env::temp_dir().join(format!("stackd-files-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let identity = Identity::generate("n1", "127.0.0.1:4280");
        init_pki(&tmp, &identity, 1, false).expect("init");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&tmp), 0o700);
        assert_eq!(mode(&tmp.join("tls")), 0o700);
        assert_eq!(mode(&tmp.join("tls/node.key")), 0o600);
        assert_eq!(mode(&tmp.join("tls/bootstrap.json")), 0o600);
        assert_eq!(mode(&tmp.join(RECOVERY_KEY)), 0o600);
        let text = std::fs::read_to_string(tmp.join(RECOVERY_KEY)).expect("recovery key");
        let keys = stackd_tls::age::Identity::parse_file(&text).expect("an age identity file");
        let boot = load_bootstrap(&tmp).expect("bootstrap").expect("pending");
        assert_eq!(keys[0].recipient().to_string(), boot.security.recovery_recipient);
        let creds = load_credentials(&tmp).expect("credentials");
        let id = creds.identity().expect("identity");
        assert_eq!((id.node_id.as_str(), id.role), (identity.node_id.as_str(), Role::Manager));
        assert_eq!(id.cluster_id, identity.cluster_id);
        let boot = load_bootstrap(&tmp).expect("read").expect("bootstrap");
        boot.security.validate().expect("valid security");
        let token = stackd_tls::ClientToken::parse(&boot.admin_token).expect("token");
        assert!(boot.security.verify_token(token.id(), &token.secret_sha256()).is_some());

        let env = finish_bootstrap(&tmp, &identity, "127.0.0.1:4280", &boot.admin_token).expect("finish");
        assert_eq!(mode(&env), 0o600);
        let text = std::fs::read_to_string(&env).expect("env");
        assert!(text.contains("STACKCTL_ADDR=https://127.0.0.1:4280\n"), "{text}");
        assert!(text.contains(&format!("STACKCTL_TOKEN={}\n", boot.admin_token)));
        assert!(load_bootstrap(&tmp).expect("read").is_none());
        std::fs::remove_dir_all(&tmp).expect("cleanup");
    }

    #[test]
    fn shell_values_are_quoted_when_needed() {
        assert_eq!(shell_value("/var/lib/stackd/tls/ca.crt"), "/var/lib/stackd/tls/ca.crt");
        assert_eq!(shell_value("/my dir/it's"), r"'/my dir/it'\''s'");
    }
}
