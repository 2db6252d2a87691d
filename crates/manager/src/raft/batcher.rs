//! Group commit: commands proposed at the same time travel and commit
//! together.
//!
//! ```text
//!  follower: propose ─► Forwarder ─ one forwarded call per batch ─┐
//!                                                                 ▼
//!  leader:   propose ─► Batcher ─ one client_write per batch ─► one log entry
//! ```
//!
//! openraft 0.9 appends and fsyncs every `client_write` on its own, one after
//! the other, before it replicates the next: one write costs one fsync and
//! one replication round, whatever the load. The [`Batcher`] sits in front
//! of `client_write`: while [`IN_FLIGHT`] entries are being committed, new
//! proposals queue up, and the next entry ([`Command::Batch`]) takes all of
//! them (up to [`MAX_BATCH`] commands and [`MAX_BATCH_BYTES`] bytes). On a
//! follower the [`Forwarder`] does the same for the hop to the leader: the
//! commands queued for the leader go in one forwarded call (on the
//! follower's `Raft.ForwardStream`, see `forwarding.rs`).
//!
//! A client alone waits for nothing: its command goes out at once, unwrapped,
//! as before. Each command of a batch is applied on its own and gets its own
//! result (`Applied::batch`); a failed write or call fails every command of
//! its batch with the same error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError as OpenRaftError};
use stackd_core::Command;
use stackd_core::state::Applied;
use stackd_proto::v1;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::forwarding::{CallError, ForwardStreams};
use super::peers::Peers;
use super::service::forward_status;
use super::{Attempt, RaftError, RaftNode, TypeConfig};

/// Entries being committed at once by the leader; more proposals wait and
/// form the next batch.
pub(super) const IN_FLIGHT: usize = 2;
/// Forwarded calls a follower has running at once.
pub(super) const FORWARDS_IN_FLIGHT: usize = 4;
/// Most commands in one entry or one forwarded call.
pub(super) const MAX_BATCH: usize = 256;
/// Most bytes (JSON-encoded commands) in one batch, so that it stays far
/// below a Raft message's ceiling; a larger command goes alone.
pub(super) const MAX_BATCH_BYTES: usize = 1 << 20;

/// What a proposer on the leader gets back: the entry's log index and the
/// result of each of its commands.
type Outcome = Result<(u64, Vec<Applied>), RaftError>;

/// Commands of one caller waiting to be proposed on the leader.
struct Proposal {
    cmds: Vec<Command>,
    size: usize,
    reply: oneshot::Sender<Outcome>,
}

/// The proposing end of the leader's batcher. Cheap to clone; the batcher
/// stops when every clone is gone.
#[derive(Clone)]
pub(super) struct Batcher {
    lane: Lane<Proposal>,
}

impl Batcher {
    /// Starts a batcher writing into `raft`; one write waits at most `timeout` for its commit.
    pub(super) fn start(raft: openraft::Raft<TypeConfig>, timeout: Duration) -> Self {
        let send: SendFn<Proposal> = Arc::new(move |batch| Box::pin(submit(raft.clone(), batch, timeout)));
        Self { lane: Lane::start(IN_FLIGHT, |p: &Proposal| p.size, |_, _| true, send) }
    }

    /// Proposes `cmds` (committed in the same entry, each applied on its own)
    /// and waits for their outcome.
    pub(super) async fn propose(&self, cmds: Vec<Command>) -> Outcome {
        let (reply, rx) = oneshot::channel();
        let size = cmds.iter().map(encoded_len).sum();
        self.lane.push(Proposal { cmds, size, reply }).await.map_err(|()| RaftError::Fatal("raft stopped".into()))?;
        rx.await.map_err(|_| RaftError::Fatal("raft stopped before the write was committed".into()))?
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
    // A command that cannot be encoded fails later, on its own: size it as large.
    match serde_json::to_writer(&mut n, cmd) {
        Ok(()) => n.0,
        Err(_) => MAX_BATCH_BYTES,
    }
}

/// Takes what is queued now, after `first`, into one batch: items that
/// `fit` with the first, within [`MAX_BATCH`] items and [`MAX_BATCH_BYTES`].
/// An item that does not fit is handed back to start the next batch.
fn take_batch<T>(
    first: T,
    rx: &mut mpsc::UnboundedReceiver<T>,
    size: &impl Fn(&T) -> usize,
    fit: &impl Fn(&T, &T) -> bool,
) -> (Vec<T>, Option<T>) {
    let mut bytes = size(&first);
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(item) if bytes + size(&item) > MAX_BATCH_BYTES || !fit(&batch[0], &item) => {
                return (batch, Some(item));
            }
            Ok(item) => {
                bytes += size(&item);
                batch.push(item);
            }
            Err(_) => break,
        }
    }
    (batch, None)
}

/// What sends a batch; it answers each item itself.
type SendFn<T> = Arc<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A queue whose items go out in batches, at most `in_flight` batches at
/// once. An item that finds the lane idle (nothing queued, nothing in
/// flight) goes out at once on its caller's task: one client alone pays no
/// task hop.
struct Lane<T> {
    tx: mpsc::UnboundedSender<T>,
    /// Items queued and not yet taken into a batch.
    queued: Arc<AtomicUsize>,
    slots: Arc<Semaphore>,
    in_flight: usize,
    send: SendFn<T>,
}

impl<T> Clone for Lane<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
            slots: self.slots.clone(),
            in_flight: self.in_flight,
            send: self.send.clone(),
        }
    }
}

impl<T: Send + 'static> Lane<T> {
    /// Starts the batching task; it ends when every clone of the lane is gone.
    fn start(
        in_flight: usize,
        size: impl Fn(&T) -> usize + Send + 'static,
        fit: impl Fn(&T, &T) -> bool + Send + 'static,
        send: SendFn<T>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Lane { tx, queued: Arc::default(), slots: Arc::new(Semaphore::new(in_flight)), in_flight, send };
        tokio::spawn(run(rx, lane.queued.clone(), lane.slots.clone(), size, fit, lane.send.clone()));
        lane
    }

    /// Sends `item` now if the lane is idle, else queues it. `Err` when the
    /// lane's task is gone.
    async fn push(&self, item: T) -> Result<(), ()> {
        // Only when nothing at all is in flight: under load, items that
        // arrive while a batch goes must wait for the next one, or batches
        // would shrink to one item each.
        if self.queued.load(Ordering::SeqCst) == 0
            && self.slots.available_permits() == self.in_flight
            && let Ok(slot) = self.slots.clone().try_acquire_owned()
        {
            (self.send)(vec![item]).await;
            drop(slot);
            return Ok(());
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.tx.send(item).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

/// Takes batches from `rx` and hands each to `send`, holding one of `slots`
/// while it runs; ends when every sender is gone.
async fn run<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
    queued: Arc<AtomicUsize>,
    slots: Arc<Semaphore>,
    size: impl Fn(&T) -> usize,
    fit: impl Fn(&T, &T) -> bool,
    send: SendFn<T>,
) {
    let mut carried = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let (batch, rest) = take_batch(first, &mut rx, &size, &fit);
        carried = rest;
        queued.fetch_sub(batch.len(), Ordering::SeqCst);
        let sending = send(batch);
        tokio::spawn(async move {
            sending.await;
            drop(slot);
        });
    }
}

/// One command, or a batch of them.
fn as_one(mut cmds: Vec<Command>) -> Option<Command> {
    match cmds.len() {
        0 => None,
        1 => cmds.pop(),
        _ => Some(Command::Batch { commands: cmds }),
    }
}

/// Splits the result of an entry made of `counts[i]` commands per caller.
fn split(index: u64, mut results: Vec<Applied>, counts: &[usize]) -> Vec<Outcome> {
    let total: usize = counts.iter().sum();
    if results.len() != total {
        let e =
            RaftError::Fatal(format!("the entry at index {index} has {} results for {total} commands", results.len()));
        return counts.iter().map(|_| Err(e.clone())).collect();
    }
    let mut out = Vec::with_capacity(counts.len());
    for &n in counts.iter().rev() {
        out.push(Ok((index, results.split_off(results.len() - n))));
    }
    out.reverse();
    out
}

/// The results of an applied entry of `total` commands.
fn results_of(applied: Applied, total: usize) -> Vec<Applied> {
    if total == 1 { vec![applied] } else { applied.batch }
}

/// Writes `batch` as one entry and answers each of its proposers.
async fn submit(raft: openraft::Raft<TypeConfig>, batch: Vec<Proposal>, timeout: Duration) {
    let counts: Vec<usize> = batch.iter().map(|p| p.cmds.len()).collect();
    let (cmds, replies): (Vec<Vec<Command>>, Vec<oneshot::Sender<Outcome>>) =
        batch.into_iter().map(|p| (p.cmds, p.reply)).unzip();
    let total = counts.iter().sum();
    let Some(cmd) = as_one(cmds.into_iter().flatten().collect()) else { return };
    // A proposer that gave up waiting is no error: its write goes on.
    match write(&raft, cmd, timeout).await {
        Ok((index, applied)) => {
            for (r, outcome) in replies.into_iter().zip(split(index, results_of(applied, total), &counts)) {
                let _ = r.send(outcome);
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
async fn write(
    raft: &openraft::Raft<TypeConfig>,
    cmd: Command,
    timeout: Duration,
) -> Result<(u64, Applied), RaftError> {
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

/// How a forwarded command ended.
pub(super) type Forwarded = Attempt<Result<(u64, Applied), RaftError>>;

/// A command a follower sends to the leader.
struct Outgoing {
    leader: u64,
    addr: String,
    cmd: Command,
    size: usize,
    deadline: Instant,
    reply: oneshot::Sender<Forwarded>,
}

/// The sending end of a follower's forwarder. Cheap to clone.
#[derive(Clone)]
pub(super) struct Forwarder {
    lane: Lane<Outgoing>,
}

impl Forwarder {
    /// Starts a forwarder calling leaders through `peers`; the leader waits
    /// at most `write_timeout` for a commit.
    pub(super) fn start(peers: Arc<Peers>, write_timeout: Duration) -> Self {
        let same_leader = |a: &Outgoing, b: &Outgoing| a.leader == b.leader && a.addr == b.addr;
        let streams = Arc::new(ForwardStreams::new(peers));
        let send: SendFn<Outgoing> = Arc::new(move |batch| Box::pin(forward(streams.clone(), write_timeout, batch)));
        Self { lane: Lane::start(FORWARDS_IN_FLIGHT, |o: &Outgoing| o.size, same_leader, send) }
    }

    /// Sends `cmd` to the leader `leader` at `addr`, with commands queued at
    /// the same time; gives up at `deadline`.
    pub(super) async fn forward(&self, leader: u64, addr: &str, cmd: Command, deadline: Instant) -> Forwarded {
        let (reply, rx) = oneshot::channel();
        let size = encoded_len(&cmd);
        let out = Outgoing { leader, addr: addr.to_string(), cmd, size, deadline, reply };
        if self.lane.push(out).await.is_err() {
            return Attempt::Done(Err(RaftError::Fatal("raft stopped".into())));
        }
        rx.await.unwrap_or_else(|_| Attempt::Done(Err(RaftError::Fatal("raft stopped".into()))))
    }
}

/// Sends `batch` (all to the same leader) in one forwarded call and
/// answers each of its senders.
async fn forward(streams: Arc<ForwardStreams>, write_timeout: Duration, batch: Vec<Outgoing>) {
    let Some(first) = batch.first() else { return };
    let (leader, addr) = (first.leader, first.addr.clone());
    let deadline = batch.iter().map(|o| o.deadline).min().unwrap_or_else(Instant::now);
    let (cmds, replies): (Vec<Command>, Vec<oneshot::Sender<Forwarded>>) =
        batch.into_iter().map(|o| (o.cmd, o.reply)).unzip();
    let total = cmds.len();
    let Some(cmd) = as_one(cmds) else { return };
    let remaining = deadline.saturating_duration_since(Instant::now());
    match call(&streams, write_timeout, leader, &addr, &cmd, remaining).await {
        Attempt::Done(Ok((index, applied))) => {
            let results = results_of(applied, total);
            if results.len() != total {
                let e = RaftError::Fatal(format!(
                    "the entry at index {index} has {} results for {total} commands",
                    results.len()
                ));
                for r in replies {
                    let _ = r.send(Attempt::Done(Err(e.clone())));
                }
                return;
            }
            for (r, applied) in replies.into_iter().zip(results) {
                let _ = r.send(Attempt::Done(Ok((index, applied))));
            }
        }
        Attempt::Done(Err(e)) => {
            for r in replies {
                let _ = r.send(Attempt::Done(Err(e.clone())));
            }
        }
        Attempt::Retry(e) => {
            for r in replies {
                let _ = r.send(Attempt::Retry(e.clone()));
            }
        }
    }
}

/// One forwarded call of `cmd` to the leader.
async fn call(
    streams: &ForwardStreams,
    write_timeout: Duration,
    leader: u64,
    addr: &str,
    cmd: &Command,
    remaining: Duration,
) -> Attempt<Result<(u64, Applied), RaftError>> {
    let command_json = match serde_json::to_vec(cmd) {
        Ok(j) => j,
        Err(e) => return Attempt::Done(Err(RaftError::Remote(format!("cannot encode the command: {e}")))),
    };
    // The leader waits at most `write_timeout` for the commit; give the call a little more.
    let limit = remaining.min(write_timeout + Duration::from_secs(1));
    let failed = |status| match RaftNode::leader_failure(leader, status) {
        Attempt::Retry(e) => Attempt::Retry(e),
        Attempt::Done(e) => Attempt::Done(Err(e)),
    };
    match streams.call(leader, addr, command_json, limit).await {
        Err(CallError::Channel(e)) => Attempt::Retry(RaftError::NoQuorum(e.to_string())),
        Err(CallError::Timeout(limit)) => Attempt::Done(Err(RaftError::Timeout(format!(
            "the leader (node {leader:016x}) did not confirm the write within {limit:?}; it may still be committed"
        )))),
        Err(CallError::Status(status)) => failed(status),
        Ok(v1::ForwardResult { error: Some(error), .. }) => failed(forward_status(error)),
        Ok(reply) => match serde_json::from_slice::<Applied>(&reply.applied_json) {
            Ok(applied) => Attempt::Done(Ok((reply.index, applied))),
            Err(e) => Attempt::Done(Err(RaftError::Remote(format!(
                "committed at index {}, but the result is unreadable: {e}",
                reply.index
            )))),
        },
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

    fn name(cmd: &Command) -> &str {
        match cmd {
            Command::CreateObject { name, .. } => name,
            _ => "",
        }
    }

    /// A command for destination `.0`; a batch holds one destination only.
    type Item = (u8, Command);

    /// Queues the items.
    fn queue(items: Vec<Item>) -> mpsc::UnboundedReceiver<Item> {
        let (tx, rx) = mpsc::unbounded_channel();
        for item in items {
            tx.send(item).expect("queued");
        }
        rx
    }

    fn take(first: Item, rx: &mut mpsc::UnboundedReceiver<Item>) -> (Vec<Item>, Option<Item>) {
        take_batch(first, rx, &|(_, c): &Item| encoded_len(c), &|a: &Item, b: &Item| a.0 == b.0)
    }

    /// One item on an idle lane goes at once; what queues meanwhile goes in one batch.
    #[tokio::test]
    async fn an_idle_lane_sends_at_once_and_a_busy_one_batches() {
        let sent = Arc::new(std::sync::Mutex::new(Vec::<Vec<u32>>::new()));
        let gate = Arc::new(Semaphore::new(0));
        let (s, g) = (sent.clone(), gate.clone());
        let send: SendFn<u32> = Arc::new(move |batch| {
            let (s, g) = (s.clone(), g.clone());
            Box::pin(async move {
                s.lock().expect("lock").push(batch);
                let _ = g.acquire().await.map(|p| p.forget());
            })
        });
        let lane = Lane::start(1, |_: &u32| 1, |_, _| true, send);
        let first = tokio::spawn({
            let lane = lane.clone();
            async move { lane.push(1).await }
        });
        while sent.lock().expect("lock").is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(*sent.lock().expect("lock"), vec![vec![1]], "sent on the caller's task, nothing queued");
        for i in 2..=4 {
            lane.push(i).await.expect("queued");
        }
        assert_eq!(sent.lock().expect("lock").len(), 1, "the lane is busy: the others wait");
        gate.add_permits(2);
        first.await.expect("task").expect("sent");
        while sent.lock().expect("lock").len() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*sent.lock().expect("lock"), vec![vec![1], vec![2, 3, 4]]);
    }

    #[test]
    fn encoded_len_is_the_json_length() {
        let cmd = object("a", 100);
        assert_eq!(encoded_len(&cmd), serde_json::to_vec(&cmd).expect("json").len());
    }

    #[test]
    fn a_batch_takes_what_is_queued_within_its_limits() {
        // Everything queued, in order.
        let mut rx = queue((0..5).map(|i| (0, object(&format!("c{i}"), 10))).collect());
        let first = rx.try_recv().expect("first");
        let (batch, rest) = take(first, &mut rx);
        let names: Vec<_> = batch.iter().map(|(_, c)| name(c)).collect();
        assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
        assert!(rest.is_none());

        // At most MAX_BATCH commands; the rest stays queued.
        let mut rx = queue((0..MAX_BATCH + 3).map(|i| (0, object(&format!("c{i}"), 1))).collect());
        let first = rx.try_recv().expect("first");
        let (batch, rest) = take(first, &mut rx);
        assert_eq!(batch.len(), MAX_BATCH);
        assert!(rest.is_none());
        assert!(rx.try_recv().is_ok(), "the next batch starts with what did not fit");

        // A command that would pass the byte limit is carried to the next batch.
        let big = MAX_BATCH_BYTES / 3;
        let mut rx =
            queue(vec![(0, object("a", big)), (0, object("b", big)), (0, object("c", big)), (0, object("d", 1))]);
        let first = rx.try_recv().expect("first");
        let (batch, rest) = take(first, &mut rx);
        assert_eq!(batch.len(), 2, "a third base64-encoded third does not fit");
        let rest = rest.expect("carried");
        assert_eq!(name(&rest.1), "c");
        let (batch, rest) = take(rest, &mut rx);
        assert_eq!(batch.len(), 2);
        assert!(rest.is_none());

        // Items for another destination start the next batch.
        let mut rx = queue(vec![(0, object("a", 1)), (0, object("b", 1)), (1, object("c", 1)), (0, object("d", 1))]);
        let first = rx.try_recv().expect("first");
        let (batch, rest) = take(first, &mut rx);
        assert_eq!(batch.iter().map(|(_, c)| name(c)).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(rest.map(|(g, _)| g), Some(1));
    }

    #[test]
    fn results_go_back_to_their_callers_in_order() {
        let applied = |n: &str| Applied { rejected: Some(n.into()), ..Applied::default() };
        let results = vec![applied("a"), applied("b"), applied("c"), applied("d")];
        let out = split(7, results, &[1, 2, 1]);
        let names: Vec<Vec<String>> = out
            .into_iter()
            .map(|o| {
                let (index, r) = o.expect("ok");
                assert_eq!(index, 7);
                r.into_iter().map(|a| a.rejected.unwrap_or_default()).collect()
            })
            .collect();
        assert_eq!(names, [vec!["a"], vec!["b", "c"], vec!["d"]]);
        // A result count that does not match fails every caller.
        assert!(split(7, vec![applied("a")], &[1, 1]).iter().all(|o| o.is_err()));
        assert_eq!(as_one(vec![object("x", 1)]), Some(object("x", 1)), "one command goes unwrapped");
        assert!(
            matches!(as_one(vec![object("x", 1), object("y", 1)]), Some(Command::Batch { commands }) if commands.len() == 2)
        );
    }
}
