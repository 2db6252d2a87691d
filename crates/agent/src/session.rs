//! The dispatcher session: the agent's link to the managers.
//!
//! The loop moves through [`SessionState`]: **Connecting** opens a
//! `Dispatcher.Session` stream on one manager and waits for its first
//! message (which names the session); **Connected** feeds assignments to the
//! [`Worker`], heartbeats every `heartbeat_period_ms`, and sends the runners'
//! status reports in batches; when the stream ends or any call fails,
//! **Backoff** waits (100 ms, doubling up to 2 s) and the next manager of the
//! list is tried.
//!
//! Only the leader serves sessions: another manager refuses with
//! `unavailable` and, when it knows the leader, its address in the
//! `x-stackd-leader` metadata. The loop then goes to that address next
//! (added to the list if unknown) after a short pause, the backoff reset.
//! Session messages name the cluster's managers; the list is merged and
//! saved (see [`Managers`]). Losing a session never touches the containers:
//! the worker keeps running them, and the next session's full task set is
//! the leader's (applied after the session's own registration, so it
//! reflects every earlier commit).
//!
//! Status reports are kept until a manager acknowledged them: per task only
//! the newest is kept, and what could not be sent is sent again on the next
//! session. The loop ends, without a word to the manager, when the agent's
//! shutdown future resolves.
//!
//! Usage reports (usage.rs, every few seconds) go to the manager of the
//! open session, the leader, on the session's own connection (`ReportUsage`
//! with the session's node and session ids), from a task of their own so
//! that the session never waits for one: at most one in flight (a newer
//! report meanwhile is dropped), a failure logged at debug and dropped, the
//! next period's report replacing it. Without a session nothing is sent; a
//! new session sends the reports made after it opened.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stackd_core::model::{ImagePin, StackNetwork, StackVolume, Task, TaskId, TaskStatus};
use stackd_core::registry::RegistryCredential;
use stackd_proto::v1;
use stackd_proto::v1::dispatcher_client::DispatcherClient;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tonic::Code;
use tonic::codec::Streaming;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::files::FileContent;
use crate::logs::{LogContext, LogPublisher};
use crate::managers::Managers;
use crate::worker::{Assignment, RegistryLogin, StatusReport, Worker};

/// First backoff after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest backoff.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Heartbeat period until the manager says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(1000);
/// How long reports are collected before they are sent.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Most reports per request (and the count that triggers an immediate send).
const BATCH_MAX: usize = 64;
/// Time allowed to connect and receive the session's first message.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one unary call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session could not be opened or ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A manager's address is not `host:port` or `https://host:port`.
    #[error("invalid manager address {endpoint:?}: {source}")]
    InvalidEndpoint {
        /// The address as configured.
        endpoint: String,
        /// What is wrong with it.
        #[source]
        source: stackd_tls::ConnectError,
    },
    /// The TCP connection or the TLS handshake failed.
    #[error("{source}")]
    Connect {
        /// The address.
        endpoint: String,
        /// What failed.
        #[source]
        source: stackd_tls::ConnectError,
    },
    /// A call was refused or failed.
    #[error("{call} failed: {status}")]
    Rpc {
        /// The call (`Session`, `Heartbeat`, `UpdateTaskStatus`).
        call: &'static str,
        /// The gRPC status.
        status: tonic::Status,
    },
    /// The manager belongs to the cluster before a restore.
    #[error(
        "manager {manager} belongs to the cluster before a restore (restore generation {theirs}, this node has \
         seen {ours}): refused, trying the others"
    )]
    OldGeneration {
        /// The manager.
        manager: String,
        /// Its generation.
        theirs: u64,
        /// The highest this node has seen.
        ours: u64,
    },
    /// A call or the session's first message took too long.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The manager ended the session stream.
    #[error("the manager ended the session")]
    Ended,
}

/// Where the session is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Opening a session on the current manager.
    Connecting,
    /// A session is open.
    Connected {
        /// Its id, as the dispatcher named it.
        session_id: String,
    },
    /// Waiting before the next attempt.
    Backoff {
        /// When to try again.
        until: Instant,
    },
}

/// Checks a manager address (`host:port` or `https://host:port`; TLS only).
/// Must run within a tokio runtime.
pub(crate) fn check_endpoint(addr: &str, tls: &Arc<rustls::ClientConfig>) -> Result<(), SessionError> {
    crate::managers::check_endpoint(addr, tls)
        .map_err(|source| SessionError::InvalidEndpoint { endpoint: addr.to_string(), source })
}

/// The next backoff after `current`.
pub(crate) fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
}

/// Whether the manager refused the session because the node is no longer a
/// member of the cluster (`stackctl node rm`).
fn node_removed(e: &SessionError) -> bool {
    let SessionError::Rpc { status, .. } = e else { return false };
    status.code() == Code::PermissionDenied && status.message().contains("is not a member of the cluster")
}

/// The leader's address a refusal names, if any.
fn leader_hint(e: &SessionError) -> Option<String> {
    let SessionError::Rpc { status, .. } = e else { return None };
    if status.code() != Code::Unavailable {
        return None;
    }
    let hint = status.metadata().get(stackd_proto::metadata::LEADER)?.to_str().ok()?.trim();
    (!hint.is_empty()).then(|| hint.to_string())
}

/// A period in milliseconds from the manager, if it set one.
fn period(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Converts wire assignments; tasks that do not convert are listed as
/// unreadable; networks and volumes that do not convert are dropped (a task
/// that needs one is rejected for want of its definition).
pub(crate) fn assignment(a: v1::Assignments) -> Assignment {
    let mut out = Assignment { full: a.full, removed: a.removed, ..Assignment::default() };
    for wire in a.networks {
        let key = wire.key.clone();
        match StackNetwork::try_from(wire) {
            Ok(n) => out.networks.push(n),
            Err(e) => warn!(network = %key, error = %e, "ignoring a network the dispatcher sent"),
        }
    }
    for wire in a.volumes {
        let key = wire.key.clone();
        match StackVolume::try_from(wire) {
            Ok(v) => out.volumes.push(v),
            Err(e) => warn!(volume = %key, error = %e, "ignoring a volume the dispatcher sent"),
        }
    }
    for o in a.objects {
        match v1::DataKind::try_from(o.kind) {
            Ok(kind) => out.objects.push(FileContent {
                kind: kind.into(),
                name: o.name,
                digest: o.digest,
                data: stackd_core::model::Blob(o.data),
            }),
            Err(_) => warn!(name = %o.name, kind = o.kind, "ignoring an object of an unknown kind"),
        }
    }
    out.logins_removed = a.registry_auth_removed.into_iter().map(|w| (w.stack, w.registry)).collect();
    for wire in a.registry_auth {
        let (stack, registry) = (wire.stack.clone(), wire.registry.clone());
        match <(String, RegistryCredential)>::try_from(wire) {
            Ok((registry, credential)) => out.logins.push(RegistryLogin { stack, registry, credential }),
            Err(e) => warn!(%stack, %registry, error = %e, "ignoring registry credentials the dispatcher sent"),
        }
    }
    for wire in a.tasks {
        let id = wire.id.clone();
        match Task::try_from(wire) {
            Ok(task) => out.tasks.push(task),
            Err(e) => {
                warn!(task = %id, error = %e, "ignoring a task the dispatcher sent");
                out.unreadable.push(id);
            }
        }
    }
    out
}

/// An open session.
struct Link {
    client: DispatcherClient<Channel>,
    stream: Streaming<v1::SessionMessage>,
}

/// The session loop's state.
pub(crate) struct Session {
    node_id: String,
    description: v1::NodeDescription,
    managers: Managers,
    tls: Arc<rustls::ClientConfig>,
    state: SessionState,
    backoff: Duration,
    heartbeat: Duration,
    worker: Worker,
    reports: mpsc::UnboundedReceiver<StatusReport>,
    pending: BTreeMap<TaskId, TaskStatus>,
    /// True until the first full set of the current session was applied.
    gc_pending: bool,
    /// A manager said the node is no longer a member of the cluster (the
    /// secrets tmpfs was unmounted then).
    removed: bool,
    /// Image tags the managers asked to resolve, by (service id, revision):
    /// `None` while the engine is asked, then what it said.
    images: BTreeMap<(String, u64), Option<ImagePin>>,
    /// Resolutions to report to the managers.
    to_report: Vec<((String, u64), ImagePin)>,
    resolved_tx: mpsc::UnboundedSender<((String, u64), ImagePin)>,
    resolved: mpsc::UnboundedReceiver<((String, u64), ImagePin)>,
    /// Whether a session is open, for the node's `/readyz`.
    status: Arc<crate::AgentStatus>,
    /// The log subscriptions this node serves (logs.rs).
    logs: LogPublisher,
    /// The latest usage report (usage.rs), sent to the leader as it comes.
    usage: crate::usage::Reports,
}

impl Session {
    /// A session loop for the node described by `description`.
    pub(crate) fn new(
        description: v1::NodeDescription,
        managers: Managers,
        tls: Arc<rustls::ClientConfig>,
        worker: Worker,
        reports: mpsc::UnboundedReceiver<StatusReport>,
        status: Arc<crate::AgentStatus>,
        usage: crate::usage::Reports,
    ) -> Session {
        let (resolved_tx, resolved) = mpsc::unbounded_channel();
        let logs = LogPublisher::new(LogContext {
            node_id: description.node_id.clone(),
            exec: worker.executor(),
            ctx: worker.context(),
            tls: tls.clone(),
        });
        Session {
            node_id: description.node_id.clone(),
            description,
            managers,
            tls,
            state: SessionState::Connecting,
            backoff: BACKOFF_MIN,
            heartbeat: DEFAULT_HEARTBEAT,
            worker,
            reports,
            pending: BTreeMap::new(),
            gc_pending: true,
            removed: false,
            images: BTreeMap::new(),
            to_report: Vec::new(),
            resolved_tx,
            resolved,
            status,
            logs,
            usage,
        }
    }

    /// Runs until `shutdown` resolves, then aborts the runners (containers stay).
    pub(crate) async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut link: Option<Link> = None;
        loop {
            let state = std::mem::replace(&mut self.state, SessionState::Connecting);
            self.status.set_session(matches!(state, SessionState::Connected { .. }));
            let step = async {
                match state {
                    SessionState::Connecting => match self.open().await {
                        Ok((l, session_id)) => {
                            link = Some(l);
                            self.backoff = BACKOFF_MIN;
                            SessionState::Connected { session_id }
                        }
                        Err(e) => {
                            warn!(manager = %self.manager(), error = %e, "cannot open a dispatcher session");
                            if node_removed(&e) && !self.removed {
                                self.removed = true;
                                self.worker.node_removed().await;
                            }
                            self.retry(&e)
                        }
                    },
                    SessionState::Connected { session_id } => {
                        let result = match link.take() {
                            Some(l) => self.connected(l, session_id).await,
                            None => Err(SessionError::Ended),
                        };
                        let e = result.err().unwrap_or(SessionError::Ended);
                        warn!(manager = %self.manager(), error = %e, "dispatcher session lost");
                        self.retry(&e)
                    }
                    SessionState::Backoff { until } => {
                        // Meanwhile, newer reports replace older ones.
                        loop {
                            tokio::select! {
                                () = sleep_until(until) => break,
                                Some(r) = self.reports.recv() => { self.pending.insert(r.task_id, r.status); }
                            }
                        }
                        SessionState::Connecting
                    }
                }
            };
            let next = tokio::select! {
                () = &mut shutdown => None,
                next = step => Some(next),
            };
            match next {
                Some(next) => self.state = next,
                None => break,
            }
        }
        info!(node = %self.node_id, "agent stopping: leaving containers as they are");
        self.worker.shutdown().await;
    }

    fn manager(&self) -> String {
        self.managers.current().to_string()
    }

    /// After `error`: the leader it names after a short pause, else backoff
    /// and the next manager of the list.
    fn retry(&mut self, error: &SessionError) -> SessionState {
        if let Some(leader) = leader_hint(error)
            && self.managers.go_to(&leader)
        {
            info!(%leader, "the manager named the leader: going there");
            // A pause all the same: two managers that name each other (an
            // election under way) are not hammered.
            self.backoff = BACKOFF_MIN;
            return SessionState::Backoff { until: Instant::now() + BACKOFF_MIN };
        }
        let until = Instant::now() + self.backoff;
        self.backoff = next_backoff(self.backoff);
        self.managers.advance();
        SessionState::Backoff { until }
    }

    /// Opens a session: connect, call Session, wait for the first message.
    async fn open(&mut self) -> Result<(Link, String), SessionError> {
        let manager = self.manager();
        if manager.is_empty() {
            return Err(SessionError::Ended);
        }
        debug!(%manager, "opening a dispatcher session");
        let request = v1::SessionRequest { description: Some(self.description.clone()) };
        let opened = timeout(OPEN_TIMEOUT, async {
            let channel = stackd_tls::channel(&manager, self.tls.clone())
                .await
                .map_err(|source| SessionError::Connect { endpoint: manager.clone(), source })?;
            let mut client = DispatcherClient::new(channel);
            let mut stream = client
                .session(request)
                .await
                .map_err(|status| SessionError::Rpc { call: "Session", status })?
                .into_inner();
            let first = stream.message().await.map_err(|status| SessionError::Rpc { call: "Session", status })?;
            Ok::<_, SessionError>((client, stream, first))
        })
        .await
        .map_err(|_| SessionError::Timeout("opening the session"))??;
        let (client, stream, first) = opened;
        let first = first.ok_or(SessionError::Ended)?;
        // Nothing of a manager of an older restore generation is applied.
        self.managers.admit(first.restore_generation).map_err(|ours| SessionError::OldGeneration {
            manager: manager.clone(),
            theirs: first.restore_generation,
            ours,
        })?;
        let session_id = first.session_id.clone();
        info!(%manager, session = %session_id, "dispatcher session open");
        self.gc_pending = true;
        self.logs.clear();
        self.on_message(first);
        Ok((Link { client, stream }, session_id))
    }

    /// Applies a session message: heartbeat period, managers, assignments.
    fn on_message(&mut self, msg: v1::SessionMessage) {
        if let Some(p) = period(msg.heartbeat_period_ms) {
            self.heartbeat = p;
        }
        if self.managers.merge(&msg.managers) {
            info!(managers = ?self.managers.list(), "the cluster's managers changed");
        }
        if let Some(view) = msg.network_view {
            match stackd_core::net::NodeView::try_from(view) {
                Ok(view) => self.worker.set_view(view),
                Err(e) => warn!(error = %e, "an unreadable network view: keeping the last one"),
            }
        }
        self.resolve_images(&msg.resolve_images);
        if !msg.log_subscriptions.is_empty() {
            let manager = self.manager();
            self.logs.apply(msg.log_subscriptions, &manager);
        }
        if let Some(a) = msg.assignments {
            let a = assignment(a);
            let collect = a.full && std::mem::take(&mut self.gc_pending);
            debug!(full = a.full, tasks = a.tasks.len(), removed = a.removed.len(), "assignments received");
            self.worker.apply(a, collect);
        }
    }

    /// Asks the engine what each image tag the managers list means (once per
    /// service revision); an answer the managers still wait for (a report
    /// lost with a session) is reported again.
    fn resolve_images(&mut self, asked: &[v1::ImageToResolve]) {
        let keys: BTreeSet<(String, u64)> = asked.iter().map(|r| (r.service_id.clone(), r.revision)).collect();
        // Answered (by any node) or gone: forgotten.
        self.images.retain(|k, _| keys.contains(k));
        for r in asked {
            let key = (r.service_id.clone(), r.revision);
            match self.images.get(&key) {
                Some(Some(pin)) => self.to_report.push((key, pin.clone())),
                Some(None) => {}
                None => {
                    self.images.insert(key.clone(), None);
                    let (exec, image, tx) = (self.worker.executor(), r.image.clone(), self.resolved_tx.clone());
                    // The stack's credentials for the image's registry, if any (kept for this call only).
                    let login = r.login.clone().and_then(|l| <(String, RegistryCredential)>::try_from(l).ok());
                    tokio::spawn(async move {
                        let pin = exec.resolve_image(&image, login.as_ref().map(|(_, c)| c)).await;
                        debug!(image = %image, pin = ?pin, "image tag resolved");
                        let _ = tx.send((key, pin));
                    });
                }
            }
        }
    }

    /// Reports the image resolutions waiting to be sent; one the manager
    /// cannot take is dropped, a failed call keeps the rest for later.
    async fn report_images(&mut self, client: &mut DispatcherClient<Channel>, session_id: &str) {
        for ((service_id, revision), pin) in std::mem::take(&mut self.to_report) {
            let req = v1::ReportImageRequest {
                node_id: self.node_id.clone(),
                session_id: session_id.to_string(),
                service_id,
                revision,
                pin: Some((&pin).into()),
            };
            match timeout(CALL_TIMEOUT, client.report_image(req)).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => warn!(%status, "the manager refused an image report"),
                Err(_) => warn!("reporting an image resolution timed out"),
            }
        }
    }

    /// Sends a usage report to the session's manager from a task of its
    /// own (see the module doc); `None` in `inflight` or a finished one: free.
    fn report_usage(
        &self,
        client: &DispatcherClient<Channel>,
        session_id: &str,
        inflight: &mut Option<crate::AbortOnDrop>,
    ) {
        let Some(report) = self.usage.borrow().clone() else { return };
        if inflight.as_ref().is_some_and(|t| !t.0.is_finished()) {
            debug!("the last usage report is still being sent: dropping this one");
            return;
        }
        let req = v1::ReportUsageRequest {
            node_id: self.node_id.clone(),
            session_id: session_id.to_string(),
            tasks: report.tasks.clone(),
            connections: report.connections.clone(),
        };
        let mut client = client.clone();
        *inflight = Some(crate::AbortOnDrop(tokio::spawn(async move {
            match timeout(CALL_TIMEOUT, client.report_usage(req)).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => debug!(%status, "the manager did not take a usage report; dropped"),
                Err(_) => debug!("sending a usage report timed out; dropped"),
            }
        })));
    }

    /// Serves an open session until it ends or a call fails.
    async fn connected(&mut self, link: Link, mut session_id: String) -> Result<(), SessionError> {
        let Link { mut client, mut stream } = link;
        let mut next_heartbeat = Instant::now() + self.heartbeat;
        let mut flush_at = (!self.pending.is_empty()).then(Instant::now);
        // Reports made before this session are not sent: the next one is.
        self.usage.borrow_and_update();
        let mut usage_inflight: Option<crate::AbortOnDrop> = None;
        loop {
            tokio::select! {
                Ok(()) = self.usage.changed() => {
                    self.usage.borrow_and_update();
                    self.report_usage(&client, &session_id, &mut usage_inflight);
                }
                msg = stream.message() => {
                    let msg = msg.map_err(|status| SessionError::Rpc { call: "Session", status })?.ok_or(SessionError::Ended)?;
                    if !msg.session_id.is_empty() && msg.session_id != session_id {
                        info!(session = %msg.session_id, "dispatcher renamed the session");
                        session_id = msg.session_id.clone();
                    }
                    self.on_message(msg);
                    self.report_images(&mut client, &session_id).await;
                }
                Some((key, pin)) = self.resolved.recv() => {
                    // Still asked for: report it (and keep it, should the report be lost).
                    if let Some(slot) = self.images.get_mut(&key) {
                        *slot = Some(pin.clone());
                        self.to_report.push((key, pin));
                        self.report_images(&mut client, &session_id).await;
                    }
                }
                () = sleep_until(next_heartbeat) => {
                    let req = v1::HeartbeatRequest { node_id: self.node_id.clone(), session_id: session_id.clone() };
                    let resp = timeout(CALL_TIMEOUT, client.heartbeat(req))
                        .await
                        .map_err(|_| SessionError::Timeout("Heartbeat"))?
                        .map_err(|status| SessionError::Rpc { call: "Heartbeat", status })?;
                    if let Some(p) = period(resp.into_inner().period_ms) {
                        self.heartbeat = p;
                    }
                    next_heartbeat = Instant::now() + self.heartbeat;
                }
                Some(r) = self.reports.recv() => {
                    self.pending.insert(r.task_id, r.status);
                    if self.pending.len() >= BATCH_MAX {
                        flush_at = Some(Instant::now());
                    } else if flush_at.is_none() {
                        flush_at = Some(Instant::now() + BATCH_WINDOW);
                    }
                }
                () = sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                    self.flush(&mut client, &session_id).await?;
                    flush_at = None;
                }
            }
        }
    }

    /// Sends every pending report, [`BATCH_MAX`] per request. Sent reports are
    /// forgotten; on failure the rest stays pending for the next session.
    async fn flush(&mut self, client: &mut DispatcherClient<Channel>, session_id: &str) -> Result<(), SessionError> {
        while !self.pending.is_empty() {
            let batch: Vec<(TaskId, TaskStatus)> =
                self.pending.iter().take(BATCH_MAX).map(|(k, v)| (k.clone(), v.clone())).collect();
            let req = v1::UpdateTaskStatusRequest {
                node_id: self.node_id.clone(),
                session_id: session_id.to_string(),
                updates: batch
                    .iter()
                    .map(|(id, status)| v1::TaskStatusReport { task_id: id.clone(), status: Some(status.into()) })
                    .collect(),
            };
            let result = timeout(CALL_TIMEOUT, client.update_task_status(req)).await;
            match result {
                Err(_) => return Err(SessionError::Timeout("UpdateTaskStatus")),
                Ok(Ok(_)) => debug!(count = batch.len(), "task status reported"),
                // A batch the manager can never accept is dropped rather than resent forever.
                Ok(Err(status)) if status.code() == Code::InvalidArgument => {
                    warn!(count = batch.len(), %status, "the manager refused task status reports; dropping them");
                }
                Ok(Err(status)) => return Err(SessionError::Rpc { call: "UpdateTaskStatus", status }),
            }
            for (id, sent) in batch {
                if self.pending.get(&id) == Some(&sent) {
                    self.pending.remove(&id);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_for_a_removed_node_is_told_apart() {
        let refused =
            |code, message: &str| SessionError::Rpc { call: "Session", status: tonic::Status::new(code, message) };
        assert!(node_removed(&refused(
            Code::PermissionDenied,
            "node 6a04d1e93bc25f70 is not a member of the cluster (it was removed, or never joined): join it again"
        )));
        assert!(!node_removed(&refused(Code::PermissionDenied, "certificate of another node")));
        assert!(!node_removed(&refused(Code::Unavailable, "is not a member of the cluster")));
        assert!(!node_removed(&SessionError::Ended));
    }

    #[test]
    fn backoff_doubles_up_to_two_seconds() {
        let mut b = BACKOFF_MIN;
        let mut seen = vec![b];
        for _ in 0..6 {
            b = next_backoff(b);
            seen.push(b);
        }
        let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[tokio::test]
    async fn endpoints_are_validated() {
        let tls = stackd_tls::testing::TestPki::new().client_config(None);
        assert!(check_endpoint("127.0.0.1:7946", &tls).is_ok());
        assert!(check_endpoint("https://127.0.0.1:7946", &tls).is_ok());
        assert!(matches!(check_endpoint("not a uri", &tls), Err(SessionError::InvalidEndpoint { .. })));
        assert!(matches!(check_endpoint("http://127.0.0.1:7946", &tls), Err(SessionError::InvalidEndpoint { .. })));
    }

    #[test]
    fn unreadable_tasks_are_listed() {
        let good = v1::Task {
            id: "t1".into(),
            template: Some(v1::TaskTemplate::default()),
            status: Some(v1::TaskStatus::default()),
            ..Default::default()
        };
        let bad = v1::Task { id: "t2".into(), template: None, ..Default::default() };
        let network = v1::StackNetwork {
            stack: "shop".into(),
            key: "back".into(),
            spec: Some(v1::NetworkSpec { name: "shop_back".into(), ..Default::default() }),
        };
        let broken = v1::StackNetwork { key: "front".into(), spec: None, ..network.clone() };
        let a = assignment(v1::Assignments {
            full: true,
            tasks: vec![good, bad],
            removed: vec!["t3".into()],
            objects: vec![],
            networks: vec![network, broken],
            volumes: vec![
                v1::StackVolume {
                    stack: "shop".into(),
                    key: "data".into(),
                    spec: Some(v1::VolumeSpec { name: "shop_data".into(), ..Default::default() }),
                },
                v1::StackVolume { stack: "shop".into(), key: "bad".into(), spec: None },
            ],
            registry_auth: vec![
                v1::RegistryCredential {
                    registry: "reg.example.com:5000".into(),
                    username: "u".into(),
                    password: "p".into(),
                    identity_token: String::new(),
                    stack: "shop".into(),
                },
                v1::RegistryCredential { registry: String::new(), stack: "shop".into(), ..Default::default() },
            ],
            registry_auth_removed: vec![v1::RegistryCredential {
                registry: "old.example.com".into(),
                stack: "gone".into(),
                ..Default::default()
            }],
        });
        assert_eq!(a.logins_removed, [("gone".to_string(), "old.example.com".to_string())]);
        assert_eq!(a.logins.len(), 1, "the one without a registry is dropped");
        assert_eq!((a.logins[0].stack.as_str(), a.logins[0].registry.as_str()), ("shop", "reg.example.com:5000"));
        assert_eq!(a.logins[0].credential.username, "u");
        assert_eq!(a.volumes.len(), 1);
        assert_eq!((a.volumes[0].key.as_str(), a.volumes[0].spec.name.as_str()), ("data", "shop_data"));
        assert_eq!(a.networks.len(), 1);
        assert_eq!((a.networks[0].key.as_str(), a.networks[0].spec.name.as_str()), ("back", "shop_back"));
        assert!(a.full);
        assert_eq!(a.tasks.len(), 1);
        assert_eq!(a.tasks[0].id, "t1");
        assert_eq!(a.unreadable, vec!["t2".to_string()]);
        assert_eq!(a.removed, vec!["t3".to_string()]);
    }
}
