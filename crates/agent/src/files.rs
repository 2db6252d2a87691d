//! The files of a task's configs and secrets, on this node.
//!
//! The dispatcher sends the contents a node's tasks refer to with the
//! assignments; [`TaskFiles`] keeps them in memory and, before a container
//! is created, writes each of its files with the owner and mode the stack
//! asks for: configs under `ROOT/configs/<task-id>/`, secrets under
//! `ROOT/secrets/<task-id>/`. The container gets each file as a read-only
//! bind mount at its target. `ROOT/secrets` is a tmpfs that the agent
//! mounts when the first task with secrets comes (mode 0700, so secrets
//! never touch a disk); a task with secrets is rejected when it cannot be
//! mounted, rather than writing a secret to disk. Files are removed with
//! their task's container.
//!
//! The tmpfs stays mounted when the agent stops: the containers it adopts
//! at its next start keep using their secret files. It is unmounted when
//! the node leaves the cluster ([`TaskFiles::unmount_secrets`]); an operator
//! who removes a data dir unmounts it first (docs/operations.md).
//!
//! Contents are never logged: only names and digests are.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use stackd_core::model::{Blob, DataKind, FileRef, Mount, MountKind, Task, TaskId};
use tracing::{info, warn};

/// Why a task's files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The blocking file work could not finish (the runtime is shutting down).
    #[error("writing the task's files was interrupted: {0}")]
    Interrupted(String),
    /// The dispatcher did not send the content (the object was removed meanwhile).
    #[error(
        "the content of {kind} {name} is not available on this node: it was removed from the cluster; deploy the stack again"
    )]
    Missing {
        /// Config or secret.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// Secrets need a tmpfs, and there is none.
    #[error("secrets need a tmpfs at {0}, and it could not be mounted: run stackd as root (see the node's log)")]
    NoTmpfs(PathBuf),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// One content, as the dispatcher sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileContent {
    /// Config or secret.
    pub kind: DataKind,
    /// Object name.
    pub name: String,
    /// Digest the tasks refer to (empty: an external object).
    pub digest: String,
    /// The content.
    pub data: Blob,
}

type Key = (DataKind, String, String);

/// Task files on this node; see the module documentation.
#[derive(Debug)]
pub struct TaskFiles {
    root: PathBuf,
    /// Serialises the check-and-mount of `ROOT/secrets`.
    mounting: Mutex<()>,
    contents: Mutex<HashMap<Key, Blob>>,
    /// Tasks whose files this process wrote and has not removed: garbage
    /// collection, which works from an older task set, leaves them alone.
    live: Mutex<BTreeSet<TaskId>>,
}

impl TaskFiles {
    /// Task files under `root` (created when first needed).
    pub fn open(root: PathBuf) -> TaskFiles {
        TaskFiles {
            root,
            mounting: Mutex::new(()),
            contents: Mutex::new(HashMap::new()),
            live: Mutex::new(BTreeSet::new()),
        }
    }

    /// Whether `ROOT/secrets` is a tmpfs, mounting one if not (checked each
    /// time: a failure is retried with the next task).
    fn secrets_tmpfs(&self) -> bool {
        let _one_at_a_time = self.mounting.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.root.join("secrets");
        prepare_tmpfs(&dir).unwrap_or_else(|e| {
            warn!(dir = %dir.display(), error = %e, "cannot prepare the secrets folder");
            false
        })
    }

    /// Unmounts the secrets tmpfs, if one is mounted (the node left the
    /// cluster): lazily, so the containers still running keep their copies
    /// until they end, while the data dir can be removed. Returns whether
    /// one was mounted. A task with secrets that comes later mounts a new one.
    ///
    /// # Errors
    ///
    /// The unmount failed.
    pub fn unmount_secrets(&self) -> io::Result<bool> {
        let _one_at_a_time = self.mounting.lock().unwrap_or_else(|p| p.into_inner());
        unmount_tmpfs(&self.root.join("secrets"))
    }

    /// Takes the contents sent with an assignment; a full assignment
    /// replaces what was kept.
    pub fn store(&self, full: bool, contents: Vec<FileContent>) {
        let mut map = self.contents.lock().unwrap_or_else(|p| p.into_inner());
        if full {
            map.clear();
        }
        for c in contents {
            map.insert((c.kind, c.name, c.digest), c.data);
        }
    }

    /// Writes the task's files; returns the bind mounts that give them to its container.
    ///
    /// # Errors
    ///
    /// A content that was not sent, secrets without a tmpfs, a failed write.
    pub fn prepare(&self, task: &Task) -> Result<Vec<Mount>, FilesError> {
        let t = &task.template;
        if t.configs.is_empty() && t.secrets.is_empty() {
            return Ok(Vec::new());
        }
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(task.id.clone());
        if !t.secrets.is_empty() && !self.secrets_tmpfs() {
            return Err(FilesError::NoTmpfs(self.root.join("secrets")));
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FilesError::Io { path, source }
        };
        let mut mounts = Vec::new();
        let all =
            t.configs.iter().map(|r| (DataKind::Config, r)).chain(t.secrets.iter().map(|r| (DataKind::Secret, r)));
        for (i, (kind, r)) in all.enumerate() {
            let data = self.content(kind, r)?;
            let dir = self.task_dir(kind, &task.id);
            fs::create_dir_all(&dir).map_err(io(&dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
            let path = dir.join(i.to_string());
            write_file(&path, &data.0, r).map_err(io(&path))?;
            mounts.push(Mount::new(MountKind::Bind, path.display().to_string(), r.target.clone(), true));
        }
        info!(task = %task.id, configs = t.configs.len(), secrets = t.secrets.len(), "task files written");
        Ok(mounts)
    }

    fn content(&self, kind: DataKind, r: &FileRef) -> Result<Blob, FilesError> {
        let map = self.contents.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(kind, r.name.clone(), r.digest.clone()))
            .cloned()
            .ok_or_else(|| FilesError::Missing { kind: kind.as_str(), name: r.name.clone() })
    }

    fn task_dir(&self, kind: DataKind, task_id: &str) -> PathBuf {
        self.root
            .join(match kind {
                DataKind::Config => "configs",
                DataKind::Secret => "secrets",
            })
            .join(task_id)
    }

    /// [`prepare`](Self::prepare) on a blocking thread: file writes and the
    /// first tmpfs mount stay off the async runtime.
    ///
    /// # Errors
    ///
    /// As [`prepare`](Self::prepare).
    pub async fn prepare_blocking(self: &Arc<Self>, task: Task) -> Result<Vec<Mount>, FilesError> {
        let files = Arc::clone(self);
        tokio::task::spawn_blocking(move || files.prepare(&task))
            .await
            .map_err(|e| FilesError::Interrupted(e.to_string()))?
    }

    /// [`remove`](Self::remove) on a blocking thread.
    pub async fn remove_blocking(self: &Arc<Self>, task_id: String) {
        let files = Arc::clone(self);
        if let Err(e) = tokio::task::spawn_blocking(move || files.remove(&task_id)).await {
            warn!(error = %e, "removing task files was interrupted");
        }
    }

    /// [`retain`](Self::retain) on a blocking thread.
    pub async fn retain_blocking(self: &Arc<Self>, keep: BTreeSet<TaskId>) {
        let files = Arc::clone(self);
        if let Err(e) = tokio::task::spawn_blocking(move || files.retain(&keep)).await {
            warn!(error = %e, "removing task files was interrupted");
        }
    }

    /// Leaves a task's files to garbage collection (its container could not
    /// be removed yet).
    pub fn release(&self, task_id: &str) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(task_id);
    }

    /// Removes a task's files.
    pub fn remove(&self, task_id: &str) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(task_id);
        for kind in [DataKind::Config, DataKind::Secret] {
            let dir = self.task_dir(kind, task_id);
            if dir.exists()
                && let Err(e) = fs::remove_dir_all(&dir)
            {
                warn!(task = %task_id, error = %e, "cannot remove the task's files");
            }
        }
    }

    /// Removes the files of every task not in `keep`, except those written
    /// since (their task came with a later assignment).
    pub fn retain(&self, keep: &BTreeSet<TaskId>) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for sub in ["configs", "secrets"] {
            let Ok(entries) = fs::read_dir(self.root.join(sub)) else { continue };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) && !live.contains(&name) {
                    self.remove(&name);
                }
            }
        }
    }
}

/// Writes one file with its owner and mode (owner first, so it is never readable by others meanwhile).
fn write_file(path: &Path, data: &[u8], r: &FileRef) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, b"")?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    let uid = r.uid.parse::<u32>().ok();
    let gid = r.gid.parse::<u32>().ok();
    std::os::unix::fs::chown(&tmp, uid, gid)?;
    fs::write(&tmp, data)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(r.mode & 0o7777))?;
    fs::rename(&tmp, path)
}

/// Creates `root` and makes sure a tmpfs is mounted on it; returns whether one is.
fn prepare_tmpfs(root: &Path) -> io::Result<bool> {
    fs::create_dir_all(root)?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
    let root = root.canonicalize()?;
    if is_tmpfs(&root) {
        return Ok(true);
    }
    // At most 64 MiB of task files per node (a config or secret is at most 500 KiB).
    let data = c"mode=0700,size=64m";
    let flags =
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV | rustix::mount::MountFlags::NOEXEC;
    match rustix::mount::mount("stackd-files", &root, "tmpfs", flags, data) {
        Ok(()) => {
            info!(root = %root.display(), "mounted a tmpfs for task files");
            Ok(true)
        }
        Err(e) => {
            warn!(root = %root.display(), error = %e, "cannot mount a tmpfs for task files");
            Ok(false)
        }
    }
}

/// Unmounts the tmpfs on `root` (detached: it goes once nothing uses it);
/// returns whether one was mounted there.
fn unmount_tmpfs(root: &Path) -> io::Result<bool> {
    let Ok(root) = root.canonicalize() else { return Ok(false) };
    if !is_tmpfs(&root) {
        return Ok(false);
    }
    rustix::mount::unmount(&root, rustix::mount::UnmountFlags::DETACH)?;
    info!(root = %root.display(), "unmounted the tmpfs of task files");
    Ok(true)
}

/// Whether `path` is the mount point of a tmpfs, per `/proc/self/mountinfo`.
fn is_tmpfs(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.display().to_string();
    info.lines().any(|line| {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else { return false };
        let mount_point = left.split(' ').nth(4).map(unescape);
        mount_point.as_deref() == Some(want.as_str()) && right.split(' ').next() == Some("tmpfs")
    })
}

/// Mount points escape space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_with_config(id: &str) -> Task {
        use stackd_core::model::{DesiredState, TaskStatus, TaskTemplate};
        let config = FileRef {
            source: "site".into(),
            name: "app_site".into(),
            target: "/etc/site.conf".into(),
            uid: String::new(),
            gid: String::new(),
            mode: 0o444,
            digest: "d1".into(),
        };
        Task {
            id: id.into(),
            service_id: "s".into(),
            service_name: "app_web".into(),
            stack: "app".into(),
            slot: 1,
            node_id: Some("n".into()),
            revision: 1,
            template: TaskTemplate { configs: vec![config], ..TaskTemplate::default() },
            desired_state: DesiredState::Running,
            status: TaskStatus::default(),
            unplaceable: String::new(),
            created_at: 0,
            addresses: Default::default(),
            image: String::new(),
        }
    }

    #[test]
    fn files_of_live_tasks_survive_collection_from_an_older_set() {
        let root = std::env::temp_dir().join(format!("stackd-files-test-{}", std::process::id()));
        let files = TaskFiles::open(root.clone());
        let content = |name: &str| FileContent {
            kind: DataKind::Config,
            name: name.into(),
            digest: "d1".into(),
            data: Blob(b"listen 80".to_vec()),
        };
        files.store(true, vec![content("app_site")]);
        let mounts = files.prepare(&task_with_config("t1")).expect("written");
        assert_eq!(mounts.len(), 1);
        assert_eq!(fs::read(&mounts[0].source).expect("file"), b"listen 80");
        assert!(mounts[0].read_only);
        // Garbage collection from a task set taken before t1 came: t1's files stay.
        files.retain(&BTreeSet::new());
        assert!(Path::new(&mounts[0].source).exists());
        // Released (its container could not be removed): the next collection removes them.
        files.release("t1");
        files.retain(&BTreeSet::new());
        assert!(!Path::new(&mounts[0].source).exists());
        // A content that was not sent is an error that says what to do.
        files.store(true, Vec::new());
        let err = files.prepare(&task_with_config("t2")).expect_err("no content");
        assert!(err.to_string().contains("deploy the stack again"), "{err}");
        let _ = fs::remove_dir_all(root);
    }

    /// Issue 12, defect 8: the secrets tmpfs can be unmounted (when the node
    /// leaves the cluster), after which the data dir can be removed.
    #[test]
    fn the_secrets_tmpfs_is_unmounted_on_request_and_the_dir_can_go() {
        let root = std::env::temp_dir().join(format!("stackd-files-umount-{}", std::process::id()));
        let files = TaskFiles::open(root.clone());
        if !files.secrets_tmpfs() {
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
            let _ = fs::remove_dir_all(&root);
            return;
        }
        let secrets = root.join("secrets").canonicalize().expect("secrets dir");
        fs::write(secrets.join("s"), b"pw").expect("write a secret");
        assert!(is_tmpfs(&secrets));
        assert!(files.unmount_secrets().expect("unmount"), "it was mounted");
        assert!(!is_tmpfs(&secrets));
        assert!(!files.unmount_secrets().expect("nothing to unmount"));
        fs::remove_dir_all(&root).expect("the data dir can be removed");
        assert!(!files.unmount_secrets().expect("no dir at all"));
    }

    #[test]
    fn mountinfo_fields_unescape() {
        assert_eq!(unescape("/srv/my\\040files"), "/srv/my files");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn the_root_is_not_a_tmpfs_by_accident() {
        // `/` is never a tmpfs mount point on the machines the tests run on.
        assert!(!is_tmpfs(Path::new("/proc/self")));
    }
}
