//! Configs and secrets created on their own (`stackctl config|secret`):
//! create, list, remove. A stack's own objects come and go with its deploys.

use stackd_core::model::{Blob, DataKind, digest};
use stackd_core::{Command, Refusal, validate};
use stackd_proto::v1;
use tonic::Status;

use super::Control;
use crate::now_ms;
use crate::refusal::refused;

/// A wire config/secret kind.
fn data_kind(kind: i32) -> Result<DataKind, Status> {
    v1::DataKind::try_from(kind)
        .map(DataKind::from)
        .map_err(|_| refused(Refusal::invalid(format!("unknown object kind {kind}"))))
}

/// `CreateObject`: checked here (the same check `apply` makes), so that a
/// bad request never reaches the log.
pub(super) async fn create(ctl: &Control, r: v1::CreateObjectRequest) -> Result<v1::CreateObjectResponse, Status> {
    let kind = data_kind(r.kind)?;
    validate::object(kind, &r.name, r.data.len()).map_err(|why| refused(Refusal::invalid(why)))?;
    let data = Blob(r.data);
    let digest = if kind == DataKind::Secret { String::new() } else { digest(&data.0) };
    let labels = r.labels.into_iter().collect();
    ctl.propose(Command::CreateObject { kind, name: r.name, data, labels, at: now_ms() }).await?;
    Ok(v1::CreateObjectResponse { digest })
}

/// `ListObjects` of one kind, with the services that use each.
pub(super) async fn list(ctl: &Control, r: v1::ListObjectsRequest) -> Result<v1::ListObjectsResponse, Status> {
    let kind = data_kind(r.kind)?;
    let objects = ctl
        .read(r.stale, |s| {
            s.objects(kind)
                .values()
                .map(|o| v1::ObjectInfo {
                    name: o.name.clone(),
                    stack: o.stack.clone(),
                    // A secret's digest would let a reader test guesses of its content.
                    digest: if kind == DataKind::Secret { String::new() } else { o.current.clone() },
                    size: o.content("").map_or(0, |b| b.0.len() as u64),
                    labels: o.labels.clone().into_iter().collect(),
                    created_at: o.created_at,
                    updated_at: o.updated_at,
                    used_by: s.users_of(kind, &o.name),
                })
                .collect()
        })
        .await?;
    Ok(v1::ListObjectsResponse { objects })
}

/// `RemoveObject`: `apply` refuses one a stack owns or a service uses.
pub(super) async fn remove(ctl: &Control, r: v1::RemoveObjectRequest) -> Result<v1::RemoveObjectResponse, Status> {
    let kind = data_kind(r.kind)?;
    ctl.propose(Command::RemoveObject { kind, name: r.name, at: now_ms() }).await?;
    Ok(v1::RemoveObjectResponse {})
}
