//! Group commit: proposals made on the leader at the same time become one
//! log entry ([`Command::Batch`]).
//!
//! openraft 0.9 appends and fsyncs every `client_write` on its own, one after
//! the other, before it replicates the next: one write costs one fsync on the
//! leader's critical path, whatever the load. The batcher sits in front of
//! `client_write`. While [`IN_FLIGHT`] entries are being committed, new
//! proposals queue up; the next entry takes all of them (up to
//! [`MAX_BATCH`] commands and [`MAX_BATCH_BYTES`] bytes). One client alone
//! waits for nothing: its command goes out at once, unwrapped, as before.
//!
//! Each command of a batch is applied on its own and gets its own result
//! (`Applied::batch`); a failed write fails every command of its batch with
//! the same error.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError as OpenRaftError};
use stackd_core::Command;
use stackd_core::state::Applied;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{RaftError, TypeConfig};

/// Entries being committed at once; more proposals wait and form the next batch.
pub(super) const IN_FLIGHT: usize = 2;
/// Most commands in one entry.
pub(super) const MAX_BATCH: usize = 256;
/// Most bytes (JSON-encoded commands) in one entry, so that a batch stays
/// far below a Raft message's ceiling; a larger command goes alone.
pub(super) const MAX_BATCH_BYTES: usize = 1 << 20;

/// What a proposer gets back: the entry's log index and its command's result.
pub(super) type Outcome = Result<(u64, Applied), RaftError>;

/// One command waiting to be proposed.
pub(super) struct Proposal {
    cmd: Command,
    size: usize,
    reply: oneshot::Sender<Outcome>,
}

/// The proposing end of a batcher. Cheap to clone; the batcher stops when
/// every clone is gone.
#[derive(Clone)]
pub(super) struct Batcher {
    tx: mpsc::UnboundedSender<Proposal>,
}

impl Batcher {
    /// Starts a batcher writing into `raft`; one write waits at most `timeout` for its commit.
    pub(super) fn start(raft: openraft::Raft<TypeConfig>, timeout: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx, timeout));
        Self { tx }
    }

    /// Queues `cmd`; the receiver gets its outcome.
    pub(super) fn propose(&self, cmd: Command) -> Result<oneshot::Receiver<Outcome>, RaftError> {
        let (reply, rx) = oneshot::channel();
        let size = encoded_len(&cmd);
        self.tx.send(Proposal { cmd, size, reply }).map_err(|_| RaftError::Fatal("raft stopped".into()))?;
        Ok(rx)
    }
}

/// The JSON size of `cmd`, as the log stores it, without allocating it.
fn encoded_len(cmd: &Command) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // A command that cannot be encoded fails in the log store; size it as large.
    match serde_json::to_writer(&mut n, cmd) {
        Ok(()) => n.0,
        Err(_) => MAX_BATCH_BYTES,
    }
}

/// Takes the proposals queued now, after `first`, into one batch within the
/// limits; a proposal that does not fit is handed back for the next one.
fn take_batch(first: Proposal, rx: &mut mpsc::UnboundedReceiver<Proposal>) -> (Vec<Proposal>, Option<Proposal>) {
    let mut bytes = first.size;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) if bytes + p.size > MAX_BATCH_BYTES => return (batch, Some(p)),
            Ok(p) => {
                bytes += p.size;
                batch.push(p);
            }
            Err(_) => break,
        }
    }
    (batch, None)
}

async fn run(raft: openraft::Raft<TypeConfig>, mut rx: mpsc::UnboundedReceiver<Proposal>, timeout: Duration) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let (batch, rest) = take_batch(first, &mut rx);
        carried = rest;
        let raft = raft.clone();
        tokio::spawn(async move {
            submit(&raft, batch, timeout).await;
            drop(slot);
        });
    }
}

/// Writes `batch` as one entry and answers each of its proposers.
async fn submit(raft: &openraft::Raft<TypeConfig>, batch: Vec<Proposal>, timeout: Duration) {
    let (mut cmds, replies): (Vec<Command>, Vec<oneshot::Sender<Outcome>>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let single = cmds.len() == 1;
    let cmd = match cmds.pop() {
        Some(cmd) if single => cmd,
        Some(last) => {
            cmds.push(last);
            Command::Batch { commands: cmds }
        }
        None => return,
    };
    // A proposer that gave up waiting is no error: its write goes on.
    match write(raft, cmd, timeout).await {
        Ok((index, applied)) if single => {
            for r in replies {
                let _ = r.send(Ok((index, applied.clone())));
            }
        }
        Ok((index, applied)) => {
            let mut results = applied.batch.into_iter();
            for r in replies {
                let one = results.next().ok_or_else(|| {
                    RaftError::Fatal(format!("the batch at index {index} has fewer results than commands"))
                });
                let _ = r.send(one.map(|a| (index, a)));
            }
        }
        Err(e) => {
            for r in replies {
                let _ = r.send(Err(e.clone()));
            }
        }
    }
}

/// `client_write` of one entry, bounded by `timeout`.
async fn write(raft: &openraft::Raft<TypeConfig>, cmd: Command, timeout: Duration) -> Outcome {
    // `client_write` never returns on a leader that lost its majority: always bound it.
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Err(_) => Err(RaftError::Timeout(format!(
            "the write was not committed within {timeout:?} (a majority of the managers may be unreachable); \
             it may still be committed"
        ))),
        Ok(Ok(resp)) => Ok((resp.log_id.index, resp.data)),
        Ok(Err(OpenRaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(RaftError::NotLeader { leader: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) })
        }
        Ok(Err(OpenRaftError::APIError(e))) => Err(RaftError::NoQuorum(e.to_string())),
        Ok(Err(OpenRaftError::Fatal(e))) => Err(RaftError::Fatal(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stackd_core::model::{Blob, DataKind};

    fn object(name: &str, len: usize) -> Command {
        Command::CreateObject {
            kind: DataKind::Config,
            name: name.into(),
            data: Blob(vec![b'x'; len]),
            labels: Default::default(),
            at: 1,
        }
    }

    fn queue(cmds: Vec<Command>) -> (mpsc::UnboundedReceiver<Proposal>, Vec<oneshot::Receiver<Outcome>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let batcher = Batcher { tx };
        let replies = cmds.into_iter().map(|c| batcher.propose(c).expect("queued")).collect();
        (rx, replies)
    }

    #[test]
    fn encoded_len_is_the_json_length() {
        let cmd = object("a", 100);
        assert_eq!(encoded_len(&cmd), serde_json::to_vec(&cmd).expect("json").len());
    }

    #[test]
    fn a_batch_takes_what_is_queued_within_its_limits() {
        // Everything queued, in order.
        let (mut rx, _r) = queue((0..5).map(|i| object(&format!("c{i}"), 10)).collect());
        let first = rx.try_recv().expect("first");
        let (batch, rest) = take_batch(first, &mut rx);
        let names: Vec<_> = batch
            .iter()
            .map(|p| match &p.cmd {
                Command::CreateObject { name, .. } => name.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
        assert!(rest.is_none());

        // At most MAX_BATCH commands; the rest stays queued.
        let (mut rx, _r) = queue((0..MAX_BATCH + 3).map(|i| object(&format!("c{i}"), 1)).collect());
        let first = rx.try_recv().expect("first");
        let (batch, rest) = take_batch(first, &mut rx);
        assert_eq!(batch.len(), MAX_BATCH);
        assert!(rest.is_none());
        assert!(rx.try_recv().is_ok(), "the next batch starts with what did not fit");

        // A command that would pass the byte limit is carried to the next batch.
        let big = MAX_BATCH_BYTES / 3;
        let (mut rx, _r) = queue(vec![object("a", big), object("b", big), object("c", big), object("d", 1)]);
        let first = rx.try_recv().expect("first");
        let (batch, rest) = take_batch(first, &mut rx);
        assert_eq!(batch.len(), 2, "a third base64-encoded third does not fit");
        let rest = rest.expect("carried");
        assert!(matches!(&rest.cmd, Command::CreateObject { name, .. } if name == "c"));
        let (batch, rest) = take_batch(rest, &mut rx);
        assert_eq!(batch.len(), 2);
        assert!(rest.is_none());
    }
}
