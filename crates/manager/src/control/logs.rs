//! `Logs`: the output of a service's tasks or of one task (`stackctl logs`).
//!
//! The leader relays it (`logs.rs` of the crate: the agents publish to the
//! leader, whose dispatcher holds their sessions). A follower passes the
//! request on to the leader, on a connection of its own (never the one Raft
//! replicates on), with its node certificate: the caller was checked here.

use stackd_proto::v1;
use tonic::Status;

use super::Control;
use crate::logs::{LogStream, plan};
use crate::refusal::refused;

/// `Logs`, checked: served here when this manager leads, else by the leader.
pub(super) async fn logs(ctl: &Control, r: v1::LogsRequest) -> Result<LogStream, Status> {
    if !ctl.raft.is_leading() {
        return through_leader(ctl, r).await;
    }
    let options = r.options.unwrap_or_default();
    let plan = ctl.raft.shared().read(|s| plan(s, r.target.trim(), options)).map_err(refused)?;
    Ok(ctl.dispatcher.logs().subscribe(plan))
}

async fn through_leader(ctl: &Control, r: v1::LogsRequest) -> Result<LogStream, Status> {
    let channel = match ctl.raft.leader_channel() {
        Some(Ok(channel)) => channel,
        Some(Err(e)) => return Err(Status::unavailable(format!("cannot reach the leader, which relays logs: {e}"))),
        None => {
            return Err(Status::unavailable(
                "no leader is known, and logs are relayed by the leader: try again in a moment",
            ));
        }
    };
    let mut client = v1::control_client::ControlClient::new(channel)
        .max_decoding_message_size(crate::raft::MAX_MESSAGE)
        .max_encoding_message_size(crate::raft::MAX_MESSAGE);
    let stream = client.logs(r).await?.into_inner();
    Ok(Box::pin(stream))
}
