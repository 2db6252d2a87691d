//! `SetAutolock` and `GetUnlockKey`: the cluster's unlock key (autolock),
//! which every manager's raft data key is wrapped by (see `keys.rs`).

use stackd_core::model::Blob;
use stackd_core::{Command, Refusal};
use stackd_proto::v1;
use stackd_tls::seal::UnlockKey;
use tonic::Status;

use super::Control;
use crate::now_ms;
use crate::refusal::refused;

/// The public id of the key a state holds (empty: autolock is off).
pub(super) fn key_id(key: &Blob) -> String {
    std::str::from_utf8(&key.0).ok().and_then(|t| t.parse::<UnlockKey>().ok()).map(|k| k.id()).unwrap_or_default()
}

fn response(key: &Blob, changed: bool) -> v1::UnlockKeyResponse {
    v1::UnlockKeyResponse { key: String::from_utf8_lossy(&key.0).into_owned(), key_id: key_id(key), changed }
}

/// Proposes a new unlock key in place of `previous` (autolock on, or a rotation).
async fn new_key(ctl: &Control, previous: Blob) -> Result<Blob, Status> {
    let key = UnlockKey::generate().map_err(|e| Status::internal(e.to_string()))?;
    let blob = Blob(key.to_secret_string().into_bytes());
    ctl.propose(Command::SetUnlockKey { key: blob.clone(), previous, at: now_ms() }).await?;
    tracing::info!(key_id = %key.id(), "autolock: a new unlock key; every manager now needs it to start");
    Ok(blob)
}

/// `SetAutolock`: on (a new key, unless it is on already) or off.
pub(super) async fn set(ctl: &Control, r: v1::SetAutolockRequest) -> Result<v1::UnlockKeyResponse, Status> {
    let current = ctl.read(false, |s| s.security.unlock_key.clone()).await?;
    match (r.enabled, current.0.is_empty()) {
        (true, false) | (false, true) => Ok(response(&current, false)),
        (true, true) => Ok(response(&new_key(ctl, current).await?, true)),
        (false, false) => {
            ctl.propose(Command::SetUnlockKey { key: Blob::default(), previous: current, at: now_ms() }).await?;
            tracing::info!("autolock is off: managers start without a key");
            Ok(response(&Blob::default(), true))
        }
    }
}

/// `GetUnlockKey`: the key, replaced by a new one first with `rotate`.
pub(super) async fn get(ctl: &Control, r: v1::GetUnlockKeyRequest) -> Result<v1::UnlockKeyResponse, Status> {
    let current = ctl.read(false, |s| s.security.unlock_key.clone()).await?;
    if current.0.is_empty() {
        return Err(refused(Refusal::failed_precondition(
            "autolock is off: there is no unlock key (`stackctl cluster autolock on` turns it on)",
        )));
    }
    if r.rotate {
        return Ok(response(&new_key(ctl, current).await?, true));
    }
    Ok(response(&current, false))
}
