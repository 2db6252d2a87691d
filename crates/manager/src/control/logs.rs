//! `Logs`: the output of a service's tasks or of one task (`stackctl logs`).
//!
//! The leader relays it (`logs.rs` of the crate: the agents publish to the
//! leader, whose dispatcher holds their sessions). A follower passes the
//! request on to the leader, on a connection of its own (never the one Raft
//! replicates on), with its node certificate: the caller was checked here.

use stackd_proto::v1;
use tokio_stream::StreamExt;
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
    let stream = client.logs(r).await.map_err(leader_gone)?.into_inner();
    Ok(Box::pin(stream.map(|r| r.map_err(leader_gone))))
}

/// The leader's refusals pass as they are; the connection to it breaking
/// (it died, or stepped down) becomes `unavailable`, which tells the client
/// to go on through another manager (a transport error's cause does not
/// cross the wire).
fn leader_gone(status: Status) -> Status {
    use tonic::Code;
    let transport = std::error::Error::source(&status).is_some();
    match status.code() {
        Code::Unknown | Code::Internal | Code::Cancelled if transport => {
            Status::unavailable(format!("the leader relaying the logs went away: {}", status.message()))
        }
        _ => status,
    }
}
