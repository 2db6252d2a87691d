//! `SaveSnapshot` and `SetRecoveryKey`: cluster snapshot files, encrypted to
//! the recovery key whose public half the state keeps (see
//! [`crate::backup`]); `ListSnapshots` and `SetSnapshotPolicy`: scheduled
//! snapshots (see `scheduled.rs`).

use std::pin::Pin;

use stackd_core::schedule::{self, S3Target, SnapshotPolicy};
use stackd_core::{Command, Refusal};
use stackd_proto::v1;
use stackd_tls::age::Recipient;
use tokio_stream::Stream;
use tonic::Status;

use super::Control;
use crate::backup::{self, SnapshotFileError};
use crate::now_ms;
use crate::refusal::refused;

/// The pieces `SaveSnapshot` streams.
pub(super) type SnapshotStream = Pin<Box<dyn Stream<Item = Result<v1::SnapshotPiece, Status>> + Send>>;

/// Bytes per piece: well under the gRPC message limit.
const PIECE: usize = 1 << 20;

fn status(e: SnapshotFileError) -> Status {
    match e {
        SnapshotFileError::NoRecipient | SnapshotFileError::Uninitialised => {
            refused(Refusal::failed_precondition(e.to_string()))
        }
        other => Status::internal(other.to_string()),
    }
}

/// `SaveSnapshot`: the state after a read barrier (everything committed
/// before the request is in it), encrypted, in pieces.
pub(super) async fn save(ctl: &Control, r: v1::SaveSnapshotRequest) -> Result<SnapshotStream, Status> {
    if !r.stale {
        ctl.raft.read_barrier().await?;
    }
    let started = std::time::Instant::now();
    let (header, file) = backup::take(ctl.raft.shared(), now_ms()).await.map_err(status)?;
    tracing::info!(
        index = header.index,
        term = header.term,
        bytes = file.len(),
        ms = started.elapsed().as_millis() as u64,
        "cluster snapshot taken for a client"
    );
    let total = file.len() as u64;
    // Pieces are cut as the client reads them: one copy of the file, not two.
    let count = file.len().div_ceil(PIECE).max(1);
    let pieces = (0..count).map(move |i| {
        let first = i == 0;
        let data = file[i * PIECE..file.len().min((i + 1) * PIECE)].to_vec();
        Ok(v1::SnapshotPiece {
            data,
            total: if first { total } else { 0 },
            index: if first { header.index } else { 0 },
            term: if first { header.term } else { 0 },
        })
    });
    Ok(Box::pin(tokio_stream::iter(pieces)))
}

/// `SetRecoveryKey`: a new recipient for later snapshots.
pub(super) async fn set_recovery_key(
    ctl: &Control,
    r: v1::SetRecoveryKeyRequest,
) -> Result<v1::SetRecoveryKeyResponse, Status> {
    let recipient = Recipient::parse(r.recipient.trim()).map_err(|e| refused(Refusal::invalid(e.to_string())))?;
    let previous = ctl.read(false, |s| s.security.recovery_recipient.clone()).await?;
    ctl.propose(Command::SetRecoveryRecipient { recipient: recipient.to_string(), at: now_ms() }).await?;
    tracing::info!(%recipient, "recovery key replaced: later snapshots are encrypted to it");
    Ok(v1::SetRecoveryKeyResponse { previous })
}

fn wire_policy(p: &SnapshotPolicy, is_default: bool) -> v1::SnapshotPolicy {
    v1::SnapshotPolicy {
        schedule: p.schedule.clone(),
        retention: p.retention,
        dir: p.dir.clone(),
        is_default,
        s3: p.s3.as_ref().map(|t| v1::S3Target {
            endpoint: t.endpoint.clone(),
            bucket: t.bucket.clone(),
            prefix: t.prefix.clone(),
            region: t.region.clone(),
            retention: t.retention,
            credentials_file: t.credentials_file.clone(),
        }),
    }
}

/// How long `ListSnapshots` waits for the bucket's listing.
const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The scheduled snapshots in the target, or why they could not be listed.
async fn remote(target: &S3Target) -> Result<Vec<v1::RemoteSnapshot>, String> {
    let client = crate::scheduled::s3_client(target).map_err(|e| e.to_string())?;
    let listing = tokio::time::timeout(LIST_TIMEOUT, client.list(&crate::scheduled::s3_key(target, "snapshot-")))
        .await
        .map_err(|_| format!("the listing took more than {LIST_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    Ok(listing
        .into_iter()
        .map(|o| v1::RemoteSnapshot { key: o.key, bytes: o.size, last_modified: o.last_modified })
        .collect())
}

/// `ListSnapshots`: the policy, the last snapshots taken, the next tick.
pub(super) async fn list(ctl: &Control, r: v1::ListSnapshotsRequest) -> Result<v1::ListSnapshotsResponse, Status> {
    let snapshots = ctl.read(r.stale, |s| s.snapshots.clone()).await?;
    let policy = snapshots.policy();
    let (listed, remote_error) = match &policy.s3 {
        None => (None, String::new()),
        Some(t) => match remote(t).await {
            Ok(l) => (Some(l), String::new()),
            Err(e) => (None, e),
        },
    };
    let after = snapshots.claimed.max(now_ms());
    let next_tick = if policy.schedule.is_empty() {
        0
    } else {
        schedule::next_tick(&policy.schedule, after).ok().flatten().unwrap_or(0)
    };
    Ok(v1::ListSnapshotsResponse {
        policy: Some(wire_policy(&policy, snapshots.policy.is_none())),
        taken: snapshots
            .taken
            .iter()
            .map(|t| v1::SnapshotRecord {
                tick: t.tick,
                node: t.node.clone(),
                node_name: t.node_name.clone(),
                file: t.file.clone(),
                bytes: t.bytes,
                index: t.index,
                error: t.error.clone(),
                remote: t.remote.clone(),
                remote_error: t.remote_error.clone(),
            })
            .collect(),
        next_tick,
        remote: listed.unwrap_or_default(),
        remote_error,
    })
}

/// `SetSnapshotPolicy`: checked here (the same check `apply` makes), so a
/// bad pattern is an invalid argument that changes nothing.
pub(super) async fn set_policy(
    ctl: &Control,
    r: v1::SetSnapshotPolicyRequest,
) -> Result<v1::SetSnapshotPolicyResponse, Status> {
    let policy = match r.policy {
        None => None,
        Some(p) if p.is_default => None,
        Some(p) => Some(SnapshotPolicy {
            schedule: p.schedule.trim().to_string(),
            retention: p.retention,
            dir: p.dir,
            s3: p.s3.map(|t| S3Target {
                endpoint: t.endpoint,
                bucket: t.bucket,
                prefix: t.prefix,
                region: t.region,
                retention: t.retention,
                credentials_file: t.credentials_file,
            }),
        }),
    };
    if let Some(Err(why)) = policy.as_ref().map(SnapshotPolicy::check) {
        return Err(refused(Refusal::invalid(why)));
    }
    ctl.propose(Command::SetSnapshotPolicy { policy, at: now_ms() }).await?;
    Ok(v1::SetSnapshotPolicyResponse {})
}
