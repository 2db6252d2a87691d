//! The leader's loop of scheduled snapshots, in the shape of every loop
//! (`reconcile.rs`): core's [`schedule::due`] decides from the state and the
//! clock; this loop claims the tick through Raft (so that exactly one
//! manager takes it, across failovers), takes the snapshot
//! ([`crate::backup::take`]), writes it to the policy's directory on this
//! manager, prunes that directory to the policy's retention, and records
//! the outcome (an event either way). A failed snapshot is retried at the
//! next tick.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use stackd_core::schedule::{self, Due, S3Target, SnapshotPolicy, SnapshotRecord};
use stackd_core::{ClusterState, Command};
use tracing::{info, warn};

use crate::backup;
use crate::raft::RaftNode;
use crate::reconcile::{Next, Pass, Reconciler, Tick};

/// The prefix and suffix of scheduled snapshot files (retention only ever
/// deletes files named so).
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".snap";

/// The loop's memory: who this manager is, where its data dir is.
pub(crate) struct Scheduled {
    data_dir: PathBuf,
    node_id: String,
    node_name: String,
}

impl Scheduled {
    pub(crate) fn new(data_dir: PathBuf, node_id: String, node_name: String) -> Self {
        Self { data_dir, node_id, node_name }
    }

    fn dir(&self, policy: &SnapshotPolicy) -> PathBuf {
        if policy.dir.is_empty() { self.data_dir.join("snapshots") } else { PathBuf::from(&policy.dir) }
    }
}

/// A file name for the snapshot of `tick`: sorts by tick.
fn file_name(tick: u64, index: u64) -> String {
    let time = stackd_core::model::rfc3339(tick).replace(':', "-");
    format!("{PREFIX}{time}-i{index}{SUFFIX}")
}

/// Writes `bytes` to `dir/name` (mode 0600, atomically), then deletes the
/// oldest scheduled snapshots beyond `retention`.
fn write_and_prune(dir: &Path, name: &str, bytes: &[u8], retention: u32) -> std::io::Result<Vec<String>> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        // A directory made here is private; one the operator chose keeps its mode.
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    crate::util::write_atomic_mode(dir, name, bytes, 0o600)?;
    let mut ours: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        .collect();
    ours.sort();
    let over = ours.len().saturating_sub(retention as usize);
    let mut removed = Vec::new();
    for old in ours.into_iter().take(over) {
        // A file that cannot go stays; the snapshot just written is kept either way.
        match std::fs::remove_file(dir.join(&old)) {
            Ok(()) => removed.push(old),
            Err(e) => warn!(file = %dir.join(&old).display(), error = %e, "cannot delete an old scheduled snapshot"),
        }
    }
    Ok(removed)
}

/// The client of `target`, with this manager's credentials.
pub(crate) fn s3_client(target: &S3Target) -> Result<crate::s3::Client, crate::s3::S3Error> {
    let file = (!target.credentials_file.is_empty()).then(|| Path::new(&target.credentials_file));
    let credentials = crate::s3::credentials(file)?;
    crate::s3::Client::new(&target.endpoint, &target.bucket, &target.region, credentials)
}

/// The key of `name` under the target's prefix.
pub(crate) fn s3_key(target: &S3Target, name: &str) -> String {
    let prefix = target.prefix.trim_start_matches('/');
    if prefix.is_empty() || prefix.ends_with('/') { format!("{prefix}{name}") } else { format!("{prefix}/{name}") }
}

/// Uploads the snapshot file `name`, then deletes the oldest scheduled
/// snapshots under the prefix beyond the target's retention; the object's
/// `s3://` URL.
async fn upload_and_prune(target: &S3Target, name: &str, bytes: Vec<u8>) -> Result<String, crate::s3::S3Error> {
    let client = s3_client(target)?;
    let key = s3_key(target, name);
    client.put(&key, bytes).await?;
    let listed = client.list(&s3_key(target, PREFIX)).await?;
    let ours: Vec<_> = listed.into_iter().filter(|o| o.key.ends_with(SUFFIX)).collect();
    let over = ours.len().saturating_sub(target.retention as usize);
    for old in ours.iter().take(over) {
        client.delete(&old.key).await?;
        info!(key = %old.key, "old scheduled snapshot deleted from the bucket");
    }
    Ok(format!("s3://{}/{key}", target.bucket))
}

impl Reconciler for Scheduled {
    type Action = u64;
    const DEBOUNCE: Duration = Duration::from_millis(200);
    const IDLE: Duration = Duration::from_secs(30);

    fn decide(&mut self, _raft: &RaftNode, state: &ClusterState, tick: &Tick) -> Pass<u64> {
        // The wall-clock time this manager took the lead.
        let leading_since = tick.now.saturating_sub(tick.mono.saturating_sub(tick.leading_since));
        match schedule::due(&state.snapshots, leading_since, tick.now) {
            Due::Take(t) => Pass { actions: vec![t], wake_in: None },
            Due::Until(t) => Pass { actions: vec![], wake_in: Some(Duration::from_millis(t - tick.now)) },
            Due::Off => Pass { actions: vec![], wake_in: None },
        }
    }

    async fn act(&mut self, raft: &RaftNode, ticks: Vec<u64>, tick: &Tick) -> Next {
        let Some(&t) = ticks.first() else { return Next::Wait };
        let claim = Command::ClaimSnapshot { tick: t, node: self.node_id.clone(), at: tick.now };
        match raft.propose(claim).await {
            Ok((_, applied)) if applied.refusal().is_some() => return Next::Again,
            Ok(_) => {}
            Err(e) => {
                // The claim may have committed although its answer was lost.
                let ours = raft.shared().read(|s| s.snapshots.claimed == t && s.snapshots.claimed_by == self.node_id);
                if !ours {
                    warn!(error = %e, "could not claim the scheduled snapshot; retrying");
                    return Next::Retry(Duration::from_secs(1));
                }
            }
        }
        let policy = raft.shared().read(|s| s.snapshots.policy());
        let dir = self.dir(&policy);
        let mut record = SnapshotRecord {
            tick: t,
            node: self.node_id.clone(),
            node_name: self.node_name.clone(),
            file: String::new(),
            bytes: 0,
            index: 0,
            error: String::new(),
            remote: String::new(),
            remote_error: String::new(),
        };
        let mut upload = None;
        match backup::take(raft.shared(), crate::now_ms()).await {
            Ok((header, bytes)) => {
                let name = file_name(t, header.index);
                let (d, n, retention) = (dir.clone(), name.clone(), policy.retention);
                let len = bytes.len() as u64;
                let bytes = Arc::new(bytes);
                let file = bytes.clone();
                let written = tokio::task::spawn_blocking(move || write_and_prune(&d, &n, &file, retention)).await;
                upload = policy.s3.as_ref().map(|t| (t.clone(), name.clone(), bytes));
                match written {
                    Ok(Ok(removed)) => {
                        record.file = dir.join(&name).display().to_string();
                        record.bytes = len;
                        record.index = header.index;
                        info!(file = %record.file, bytes = len, index = header.index, removed = ?removed, "scheduled snapshot taken");
                    }
                    Ok(Err(e)) => record.error = format!("writing {}: {e}", dir.join(&name).display()),
                    Err(e) => record.error = format!("writing {}: {e}", dir.join(&name).display()),
                }
            }
            Err(e) => record.error = e.to_string(),
        }
        if let Some((target, name, bytes)) = upload.filter(|_| record.error.is_empty()) {
            match upload_and_prune(&target, &name, Arc::try_unwrap(bytes).unwrap_or_else(|b| (*b).clone())).await {
                Ok(url) => record.remote = url,
                Err(e) => record.remote_error = e.to_string(),
            }
        }
        if !record.error.is_empty() {
            warn!(error = %record.error, "scheduled snapshot failed; the next tick tries again");
        }
        if !record.remote_error.is_empty() {
            warn!(error = %record.remote_error, "uploading the scheduled snapshot failed; the next tick tries again");
        }
        match raft.propose(Command::RecordSnapshot { record, at: crate::now_ms() }).await {
            Ok(_) => Next::Again,
            Err(e) => {
                warn!(error = %e, "could not record the scheduled snapshot");
                Next::Again
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_the_newest_of_our_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("keep-me.txt"), b"x").expect("write");
        for (i, tick) in [1_000u64, 2_000, 3_000, 4_000].iter().enumerate() {
            let removed = write_and_prune(dir.path(), &file_name(*tick, i as u64), b"data", 2).expect("write");
            assert!(removed.len() <= 1);
        }
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        left.sort();
        assert_eq!(left, vec!["keep-me.txt".to_string(), file_name(3_000, 2), file_name(4_000, 3)]);
    }
}
