//! Log subscriptions: the output of this node's containers, published to
//! the leader for `stackctl logs`.
//!
//! ```text
//!  session message: LogSubscription ──► LogPublisher::apply ──► one job per subscription:
//!    a connection of its own to the manager (never the session's, whose
//!    heartbeats must not wait behind logs) ──PublishLogs──►
//!      first message: node + subscription
//!      then batches of lines (≤ BATCH_LINES lines, ≤ BATCH_BYTES, ≤ BATCH_WAIT old),
//!      one reader per container the subscription selects
//!      then `done` (not following, or a followed task's container stopped)
//! ```
//!
//! Every buffer is bounded: when the manager or its client reads slowly,
//! the readers wait, and the engine keeps the log on disk meanwhile. A
//! followed service picks up the containers of its new tasks (looked for
//! every [`RELIST`]), read from their start. A subscription's job ends when
//! the manager says `close`, or when its call fails (the client went away,
//! the manager stopped leading).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use stackd_proto::v1;
use stackd_proto::v1::dispatcher_client::DispatcherClient;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout_at};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use crate::docker::{ContainerContext, Executor, ManagedContainer};

/// Requests waiting to be sent to the manager.
const BUFFER: usize = 32;
/// Lines in one request, at most.
const BATCH_LINES: usize = 512;
/// Bytes of lines in one request, about at most.
const BATCH_BYTES: usize = 256 * 1024;
/// How long a line waits for others before it is sent.
const BATCH_WAIT: Duration = Duration::from_millis(20);
/// How often a followed subscription looks for new containers.
const RELIST: Duration = Duration::from_secs(1);

/// Aborts its job when dropped (a closed subscription).
struct Job(tokio::task::JoinHandle<()>);

impl Drop for Job {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a subscription's job needs of the agent.
#[derive(Clone)]
pub(crate) struct LogContext {
    pub node_id: String,
    pub exec: Executor,
    pub ctx: Arc<ContainerContext>,
    pub tls: Arc<rustls::ClientConfig>,
}

/// The subscriptions this node serves.
pub(crate) struct LogPublisher {
    context: LogContext,
    jobs: HashMap<String, Job>,
}

impl LogPublisher {
    pub(crate) fn new(context: LogContext) -> Self {
        Self { context, jobs: HashMap::new() }
    }

    /// Stops every job: a new session begins, and the leader sends again
    /// what it still wants (a job that was half done is told incomplete).
    pub(crate) fn clear(&mut self) {
        self.jobs.clear();
    }

    /// Starts the new subscriptions of a session message (publishing to
    /// `manager`, which sent them) and stops the closed ones.
    pub(crate) fn apply(&mut self, subscriptions: Vec<v1::LogSubscription>, manager: &str) {
        self.jobs.retain(|_, job| !job.0.is_finished());
        for sub in subscriptions {
            if sub.close {
                if self.jobs.remove(&sub.id).is_some() {
                    debug!(subscription = %sub.id, "log subscription closed");
                }
                continue;
            }
            if sub.id.is_empty() || self.jobs.contains_key(&sub.id) {
                continue;
            }
            debug!(subscription = %sub.id, service = %sub.service, tasks = ?sub.task_ids, "log subscription");
            let id = sub.id.clone();
            let job = tokio::spawn(publish(self.context.clone(), manager.to_string(), sub));
            self.jobs.insert(id, Job(job));
        }
    }
}

/// Whether `c` is one of the containers `sub` asks for.
pub(crate) fn selects(sub: &v1::LogSubscription, c: &ManagedContainer) -> bool {
    if sub.service.is_empty() { sub.task_ids.contains(&c.task_id) } else { c.service == sub.service }
}

/// Serves one subscription: its call to the manager, fed by its readers.
async fn publish(cx: LogContext, manager: String, sub: v1::LogSubscription) {
    let channel = match stackd_tls::channel(&manager, cx.tls.clone()).await {
        Ok(c) => c,
        Err(e) => {
            warn!(%manager, error = %e, "cannot connect to publish logs");
            return;
        }
    };
    let mut client = DispatcherClient::new(channel).max_encoding_message_size(8 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(BUFFER);
    let header =
        v1::PublishLogsRequest { node_id: cx.node_id.clone(), subscription_id: sub.id.clone(), ..Default::default() };
    if tx.send(header).await.is_err() {
        return;
    }
    let id = sub.id.clone();
    let call = async move { client.publish_logs(ReceiverStream::new(rx)).await };
    let (result, ()) = tokio::join!(call, produce(cx, sub, tx));
    if let Err(status) = result {
        debug!(subscription = %id, %status, "log publishing ended");
    }
}

/// Reads the selected containers into `tx`; then says `done`, unless it
/// follows a service (that ends only when the manager's side does).
async fn produce(cx: LogContext, sub: v1::LogSubscription, tx: mpsc::Sender<v1::PublishLogsRequest>) {
    let opts = sub.options.unwrap_or_default();
    let follow_service = opts.follow && !sub.service.is_empty();
    let mut readers = JoinSet::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut first = true;
    loop {
        match list(&cx, &sub).await {
            Ok(all) => {
                let found: Vec<ManagedContainer> = all.into_iter().filter(|c| selects(&sub, c)).collect();
                if first && !opts.follow {
                    let notices = missing(&sub, &found);
                    if !notices.is_empty()
                        && tx.send(v1::PublishLogsRequest { notices, ..Default::default() }).await.is_err()
                    {
                        return;
                    }
                }
                for c in found {
                    if seen.insert(c.id.clone()) {
                        // Containers there when asked: as asked; later ones, whole.
                        let (since, tail) = if first { (opts.since, opts.tail) } else { (0, None) };
                        readers.spawn(read(cx.exec.clone(), c, opts.follow, since, tail, tx.clone()));
                    }
                }
            }
            Err(e) => {
                let text = format!("cannot list the node's containers: {e}");
                if tx
                    .send(v1::PublishLogsRequest {
                        notices: vec![v1::LogNotice { task_id: String::new(), text }],
                        ..Default::default()
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        first = false;
        // A followed task not started yet is waited for; anything else is
        // read once.
        let waiting_for_task = opts.follow && sub.service.is_empty() && seen.is_empty();
        if !follow_service && !waiting_for_task {
            break;
        }
        tokio::select! {
            () = sleep(RELIST) => {}
            () = tx.closed() => return,
        }
        while readers.try_join_next().is_some() {}
    }
    loop {
        tokio::select! {
            next = readers.join_next() => if next.is_none() { break },
            // Nobody reads any more: the readers go with the set.
            () = tx.closed() => return,
        }
    }
    let _ = tx.send(v1::PublishLogsRequest { done: true, ..Default::default() }).await;
}

/// The node's containers that may be selected: by the label of the
/// service, or of the one task asked (several tasks: all, then filtered).
async fn list(cx: &LogContext, sub: &v1::LogSubscription) -> Result<Vec<ManagedContainer>, crate::docker::DockerError> {
    use crate::docker::spec::{LABEL_SERVICE, LABEL_TASK};
    match (sub.service.as_str(), sub.task_ids.as_slice()) {
        ("", [one]) => cx.exec.list_labelled(&cx.ctx, LABEL_TASK, one).await,
        ("", _) => cx.exec.list_managed(&cx.ctx).await,
        (service, _) => cx.exec.list_labelled(&cx.ctx, LABEL_SERVICE, service).await,
    }
}

/// The notices of the tasks asked by id that have no container here.
fn missing(sub: &v1::LogSubscription, found: &[ManagedContainer]) -> Vec<v1::LogNotice> {
    sub.task_ids
        .iter()
        .filter(|id| !found.iter().any(|c| c.task_id == **id))
        .map(|id| v1::LogNotice {
            task_id: id.clone(),
            text: "its container is gone from the node (removed, with its logs), or was never created".to_string(),
        })
        .collect()
}

/// Reads one container's log into batches.
async fn read(
    exec: Executor,
    c: ManagedContainer,
    follow: bool,
    since: i64,
    tail: Option<u64>,
    tx: mpsc::Sender<v1::PublishLogsRequest>,
) {
    let mut stream = std::pin::pin!(exec.logs(&c.id, follow, since, tail));
    let mut batch = Batch::default();
    loop {
        let next = match batch.deadline {
            Some(at) => match timeout_at(at, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    if !batch.flush(&tx).await {
                        return;
                    }
                    continue;
                }
            },
            None => stream.next().await,
        };
        match next {
            Some(Ok(lines)) => {
                for l in lines {
                    batch.push(v1::LogLine {
                        task_id: c.task_id.clone(),
                        stream: l.stream,
                        timestamp: l.timestamp,
                        data: l.data,
                    });
                }
                if batch.full() && !batch.flush(&tx).await {
                    return;
                }
            }
            Some(Err(e)) => {
                batch.flush(&tx).await;
                let notice = v1::LogNotice { task_id: c.task_id.clone(), text: format!("reading its log failed: {e}") };
                let _ = tx.send(v1::PublishLogsRequest { notices: vec![notice], ..Default::default() }).await;
                return;
            }
            None => {
                batch.flush(&tx).await;
                return;
            }
        }
    }
}

/// Lines waiting to be sent together.
#[derive(Default)]
struct Batch {
    lines: Vec<v1::LogLine>,
    bytes: usize,
    /// When the oldest line must go.
    deadline: Option<Instant>,
}

impl Batch {
    fn push(&mut self, line: v1::LogLine) {
        if self.lines.is_empty() {
            self.deadline = Some(Instant::now() + BATCH_WAIT);
        }
        self.bytes += line.data.len() + line.timestamp.len() + 16;
        self.lines.push(line);
    }

    fn full(&self) -> bool {
        self.lines.len() >= BATCH_LINES || self.bytes >= BATCH_BYTES
    }

    /// Sends the lines; false when nobody reads any more.
    async fn flush(&mut self, tx: &mpsc::Sender<v1::PublishLogsRequest>) -> bool {
        self.deadline = None;
        self.bytes = 0;
        if self.lines.is_empty() {
            return true;
        }
        let lines = std::mem::take(&mut self.lines);
        tx.send(v1::PublishLogsRequest { lines, ..Default::default() }).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(task: &str, service: &str) -> ManagedContainer {
        ManagedContainer {
            id: format!("c-{task}"),
            task_id: task.into(),
            running: true,
            stack: "app".into(),
            service: service.into(),
        }
    }

    #[test]
    fn a_subscription_selects_its_service_or_its_tasks() {
        let by_service = v1::LogSubscription { service: "app_web".into(), ..Default::default() };
        assert!(selects(&by_service, &container("t1", "app_web")));
        assert!(!selects(&by_service, &container("t2", "app_db")));
        let by_task = v1::LogSubscription { task_ids: vec!["t2".into()], ..Default::default() };
        assert!(selects(&by_task, &container("t2", "app_db")));
        assert!(!selects(&by_task, &container("t1", "app_web")));
    }

    #[test]
    fn a_task_without_its_container_is_told() {
        let sub = v1::LogSubscription { task_ids: vec!["t1".into(), "t2".into()], ..Default::default() };
        let notices = missing(&sub, &[container("t1", "app_web")]);
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].task_id, "t2");
        assert!(notices[0].text.contains("gone"), "{}", notices[0].text);
    }

    #[test]
    fn a_frame_splits_into_lines_with_their_timestamps() {
        use crate::docker::{LogChunk, split_frame};
        let lines = split_frame(1, b"2026-12-07T20:00:00.123456789Z hello world\n");
        assert_eq!(
            lines,
            vec![LogChunk {
                stream: 1,
                timestamp: "2026-12-07T20:00:00.123456789Z".into(),
                data: b"hello world".to_vec()
            }]
        );
        // A terminal's frame: several lines, each stamped, `\r\n` ends.
        let lines = split_frame(1, b"2026-12-07T20:00:00Z a\r\n2026-12-07T20:00:01Z b\r\n");
        assert_eq!(lines.iter().map(|l| l.data.as_slice()).collect::<Vec<_>>(), vec![b"a".as_slice(), b"b"]);
        assert_eq!(lines[1].timestamp, "2026-12-07T20:00:01Z");
        // An empty line keeps its time; a line without one is kept whole.
        assert_eq!(split_frame(2, b"2026-12-07T20:00:00Z\n")[0].data, b"");
        assert_eq!(split_frame(2, b"2026-12-07T20:00:00Z\n")[0].timestamp, "2026-12-07T20:00:00Z");
        let plain = split_frame(2, b"no time here\n");
        assert_eq!(
            (plain[0].timestamp.as_str(), plain[0].data.as_slice(), plain[0].stream),
            ("", b"no time here".as_slice(), 2)
        );
    }

    #[test]
    fn a_batch_is_full_at_its_line_or_byte_bound() {
        let mut b = Batch::default();
        for _ in 0..BATCH_LINES - 1 {
            b.push(v1::LogLine { data: b"x".to_vec(), ..Default::default() });
        }
        assert!(!b.full());
        b.push(v1::LogLine::default());
        assert!(b.full());
        let mut b = Batch::default();
        b.push(v1::LogLine { data: vec![b'y'; BATCH_BYTES], ..Default::default() });
        assert!(b.full());
        assert!(b.deadline.is_some());
    }
}
