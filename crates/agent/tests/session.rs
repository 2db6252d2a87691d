//! The agent end to end: `stackd_agent::run` against a fake dispatcher (a
//! tonic server in this test) and the real Docker engine. Skipped with a
//! notice when Docker is unreachable, unless `CI=true`. Also: failover to the
//! leader a refusing manager names, and the manager list kept on disk.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stackd_agent::docker::ContainerContext;
use stackd_agent::{AgentConfig, AgentOptions, MANAGERS_FILE, run, run_with};
use stackd_core::model::{DesiredState, Task, TaskState, TaskStatus, TaskTemplate};
use stackd_proto::v1;
use stackd_proto::v1::dispatcher_server::{Dispatcher, DispatcherServer};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

mod common;
use common::{Cleanup, docker};

const WAIT: Duration = Duration::from_secs(30);

/// What the fake dispatcher saw.
#[derive(Debug)]
enum Seen {
    /// A session was opened; the sender feeds its stream (drop it to end the session).
    Session(Box<v1::SessionRequest>, mpsc::Sender<Result<v1::SessionMessage, Status>>),
    Heartbeat(v1::HeartbeatRequest),
    Update(v1::UpdateTaskStatusRequest),
}

struct Fake {
    seen: mpsc::UnboundedSender<Seen>,
    /// UpdateTaskStatus calls still to refuse.
    refuse_updates: Mutex<u32>,
}

#[tonic::async_trait]
impl Dispatcher for Fake {
    type SessionStream = ReceiverStream<Result<v1::SessionMessage, Status>>;

    async fn session(&self, request: Request<v1::SessionRequest>) -> Result<Response<Self::SessionStream>, Status> {
        // The agent must present its node certificate, as the dispatcher requires.
        if request.peer_certs().is_none_or(|certs| certs.is_empty()) {
            return Err(Status::unauthenticated("no client certificate"));
        }
        let (tx, rx) = mpsc::channel(16);
        let _ = self.seen.send(Seen::Session(Box::new(request.into_inner()), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let _ = self.seen.send(Seen::Heartbeat(request.into_inner()));
        Ok(Response::new(v1::HeartbeatResponse { period_ms: 200 }))
    }

    async fn report_image(
        &self,
        _: Request<v1::ReportImageRequest>,
    ) -> Result<Response<v1::ReportImageResponse>, Status> {
        Ok(Response::new(v1::ReportImageResponse {}))
    }

    async fn report_usage(
        &self,
        _: Request<v1::ReportUsageRequest>,
    ) -> Result<Response<v1::ReportUsageResponse>, Status> {
        Ok(Response::new(v1::ReportUsageResponse {}))
    }

    async fn publish_logs(
        &self,
        _: Request<tonic::Streaming<v1::PublishLogsRequest>>,
    ) -> Result<Response<v1::PublishLogsResponse>, Status> {
        Ok(Response::new(v1::PublishLogsResponse {}))
    }

    async fn update_task_status(
        &self,
        request: Request<v1::UpdateTaskStatusRequest>,
    ) -> Result<Response<v1::UpdateTaskStatusResponse>, Status> {
        {
            let mut refuse = self.refuse_updates.lock().map_err(|_| Status::internal("poisoned"))?;
            if *refuse > 0 {
                *refuse -= 1;
                return Err(Status::unavailable("not now"));
            }
        }
        let _ = self.seen.send(Seen::Update(request.into_inner()));
        Ok(Response::new(v1::UpdateTaskStatusResponse {}))
    }
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, seen.recv()).await.expect("the agent went quiet").expect("fake dispatcher gone")
}

/// The next session opened, skipping other calls.
async fn next_session(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
) -> (v1::SessionRequest, mpsc::Sender<Result<v1::SessionMessage, Status>>) {
    loop {
        if let Seen::Session(req, tx) = next(seen).await {
            return (*req, tx);
        }
    }
}

fn assign(session_id: &str, tasks: &[Task]) -> Result<v1::SessionMessage, Status> {
    Ok(v1::SessionMessage {
        session_id: session_id.into(),
        heartbeat_period_ms: 200,
        assignments: Some(v1::Assignments {
            full: true,
            tasks: tasks.iter().map(v1::Task::from).collect(),
            removed: vec![],
            objects: vec![],
            networks: vec![],
            volumes: vec![],
            registry_auth: vec![],
            registry_auth_removed: vec![],
        }),
        managers: vec![],
        network_view: None,
        resolve_images: vec![],
        restore_generation: 0,
        log_subscriptions: vec![],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_its_tasks_and_survives_a_lost_session() {
    let Some(exec) = docker().await else { return };
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let node_id = format!("sess{:x}{:x}", std::process::id(), stamp % 0xffff_ffff);
    let _cleanup = Cleanup(node_id.clone());

    // The fake dispatcher; its first UpdateTaskStatus call is refused.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let fake = Fake { seen: seen_tx, refuse_updates: Mutex::new(1) };
    // Over TLS, as a manager serves it; the agent presents its node certificate.
    let pki = stackd_tls::testing::TestPki::new();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DispatcherServer::new(fake))
            .serve_with_incoming(stackd_tls::tls_incoming(listener, pki.server_config("manager1"))),
    );

    let config = AgentConfig {
        node_id: node_id.clone(),
        name: "n1".into(),
        addr: "127.0.0.1:9999".into(),
        cluster_id: "stackd-test".into(),
        // A dead manager first: the agent must move on to the next one.
        managers: vec!["127.0.0.1:1".into(), addr.to_string()],
        tls: pki.client_config(Some((&node_id, stackd_tls::Role::Manager))),
        docker_socket: None,
        files_dir: std::env::temp_dir().join(format!("stackd-agent-files-{node_id}")),
        generic_resources: [("gpu".to_string(), 2)].into(),
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(run(config, async move {
        let _ = stop_rx.await;
    }));

    let task = Task {
        id: format!("task{node_id}"),
        service_id: "svc".into(),
        service_name: format!("{node_id}_web"),
        stack: node_id.clone(),
        slot: 1,
        node_id: Some(node_id.clone()),
        revision: 1,
        template: TaskTemplate {
            image: "stackd-test/web:1".into(),
            stop_grace_period_ms: 1_000,
            ..TaskTemplate::default()
        },
        desired_state: DesiredState::Running,
        status: TaskStatus { state: TaskState::Assigned, ..TaskStatus::default() },
        unplaceable: String::new(),
        created_at: 0,
        addresses: Default::default(),
        image: String::new(),
    };

    // Session 1: the node describes itself and receives its task.
    let (req, tx1) = next_session(&mut seen).await;
    let d = req.description.expect("a node description");
    assert_eq!((d.node_id.as_str(), d.name.as_str(), d.addr.as_str()), (node_id.as_str(), "n1", "127.0.0.1:9999"));
    assert!(!d.engine_version.is_empty());
    let engine = d.engine.expect("the engine's description");
    assert!(!engine.os.is_empty() && !engine.arch.is_empty(), "{engine:?}");
    assert!(d.resources.is_some_and(|r| r.nano_cpus > 0 && r.memory_bytes > 0));
    assert_eq!(d.role, i32::from(v1::NodeRole::Manager));
    tx1.send(assign("s1", std::slice::from_ref(&task))).await.expect("send");

    // Heartbeats name the session. The first status report is refused: the
    // session is dropped and a new one opened.
    let (_req, tx2) = loop {
        match next(&mut seen).await {
            Seen::Heartbeat(h) => assert_eq!((h.node_id.as_str(), h.session_id.as_str()), (node_id.as_str(), "s1")),
            Seen::Update(u) => panic!("the refused update was not resent: {u:?}"),
            Seen::Session(req, tx) => break (*req, tx),
        }
    };
    drop(tx1);
    tx2.send(assign("s2", std::slice::from_ref(&task))).await.expect("send");

    // The reports are sent again, newest per task, until the task runs.
    let running = loop {
        match next(&mut seen).await {
            Seen::Update(u) => {
                assert_eq!((u.node_id.as_str(), u.session_id.as_str()), (node_id.as_str(), "s2"));
                let mut ids: Vec<&str> = u.updates.iter().map(|r| r.task_id.as_str()).collect();
                ids.dedup();
                assert_eq!(ids.len(), u.updates.len(), "one report per task per batch");
                let last = u.updates.into_iter().last().and_then(|r| r.status).expect("a status");
                let status = TaskStatus::try_from(last).expect("valid status");
                if status.state == TaskState::Running {
                    break status;
                }
            }
            Seen::Heartbeat(h) => assert_eq!(h.session_id, "s2"),
            Seen::Session(..) => panic!("unexpected new session"),
        }
    };
    assert!(!running.container_id.is_empty());
    assert!(running.timestamp > 0);

    // Shutdown: `run` returns Ok and the container keeps running.
    stop_tx.send(()).expect("agent alive");
    let result = tokio::time::timeout(WAIT, agent).await.expect("the agent stops").expect("no panic");
    assert!(result.is_ok(), "{result:?}");
    let info = exec.inspect(&running.container_id).await.expect("inspect").expect("container kept");
    assert!(info.running, "stopping the agent must not stop containers");
    let ctx = ContainerContext { cluster_id: "stackd-test".into(), node_id, overlay_mtu: None };
    assert_eq!(exec.list_managed(&ctx).await.expect("list").len(), 1);
    drop(tx2);
}

/// A manager that is not the leader: refuses everything, naming the leader.
struct Follower {
    leader: String,
    refused: mpsc::UnboundedSender<std::time::Instant>,
}

impl Follower {
    fn refusal(&self) -> Status {
        let _ = self.refused.send(std::time::Instant::now());
        let mut status = Status::unavailable("not the leader");
        status.metadata_mut().insert(stackd_proto::metadata::LEADER, self.leader.parse().expect("ascii"));
        status
    }
}

#[tonic::async_trait]
impl Dispatcher for Follower {
    type SessionStream = ReceiverStream<Result<v1::SessionMessage, Status>>;

    async fn session(&self, _: Request<v1::SessionRequest>) -> Result<Response<Self::SessionStream>, Status> {
        Err(self.refusal())
    }

    async fn heartbeat(&self, _: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        Err(self.refusal())
    }

    async fn update_task_status(
        &self,
        _: Request<v1::UpdateTaskStatusRequest>,
    ) -> Result<Response<v1::UpdateTaskStatusResponse>, Status> {
        Err(self.refusal())
    }

    async fn report_image(
        &self,
        _: Request<v1::ReportImageRequest>,
    ) -> Result<Response<v1::ReportImageResponse>, Status> {
        Err(self.refusal())
    }

    async fn report_usage(
        &self,
        _: Request<v1::ReportUsageRequest>,
    ) -> Result<Response<v1::ReportUsageResponse>, Status> {
        Err(self.refusal())
    }

    async fn publish_logs(
        &self,
        _: Request<tonic::Streaming<v1::PublishLogsRequest>>,
    ) -> Result<Response<v1::PublishLogsResponse>, Status> {
        Err(self.refusal())
    }
}

/// Serves `service` over TLS on a fresh port; returns the address.
async fn serve<S: Dispatcher>(service: S, pki: &stackd_tls::testing::TestPki, name: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DispatcherServer::new(service))
            .serve_with_incoming(stackd_tls::tls_incoming(listener, pki.server_config(name))),
    );
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_the_leader_hint_and_keeps_the_managers_it_learns() {
    if docker().await.is_none() {
        return;
    }
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let node_id = format!("fail{:x}{:x}", std::process::id(), stamp % 0xffff_ffff);
    let _cleanup = Cleanup(node_id.clone());
    let pki = stackd_tls::testing::TestPki::new();

    // The leader, which the agent is not told about; a follower naming it.
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let leader = serve(Fake { seen: seen_tx, refuse_updates: Mutex::new(0) }, &pki, "manager1").await;
    let (refused_tx, mut refused) = mpsc::unbounded_channel();
    let follower = serve(Follower { leader: leader.clone(), refused: refused_tx }, &pki, "manager2").await;

    let state = tempfile::tempdir().expect("tempdir");
    let config = AgentConfig {
        node_id: node_id.clone(),
        name: "n1".into(),
        addr: "127.0.0.1:9999".into(),
        cluster_id: "stackd-test".into(),
        managers: vec![follower.clone()],
        tls: pki.client_config(Some((&node_id, stackd_tls::Role::Manager))),
        docker_socket: None,
        files_dir: std::env::temp_dir().join(format!("stackd-agent-files-{node_id}")),
        generic_resources: Default::default(),
    };
    let options = AgentOptions {
        state_dir: Some(state.path().to_path_buf()),
        shared_engine: true,
        vxlan_port: None,
        status: None,
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(run_with(config, options, async move {
        let _ = stop_rx.await;
    }));

    // Refused by the follower, the agent goes straight to the leader (no long backoff).
    let refused_at = tokio::time::timeout(WAIT, refused.recv()).await.expect("the follower was asked").expect("open");
    let (_req, tx) = next_session(&mut seen).await;
    let hop = refused_at.elapsed();
    assert!(hop < Duration::from_secs(1), "the leader was reached {hop:?} after the refusal");

    // The leader names the managers: the list is saved, the configured one kept.
    let mut msg = assign("s1", &[]).expect("a message");
    msg.managers = vec![leader.clone(), "127.0.0.1:7".into()];
    tx.send(Ok(msg)).await.expect("send");
    let file = state.path().join(MANAGERS_FILE);
    let want = vec![follower.clone(), leader.clone(), "127.0.0.1:7".to_string()];
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let saved: Option<Vec<String>> = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if saved.as_ref() == Some(&want) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "managers.json is {saved:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The session is served: heartbeats go to the leader.
    loop {
        if let Seen::Heartbeat(h) = next(&mut seen).await {
            assert_eq!(h.session_id, "s1");
            break;
        }
    }

    stop_tx.send(()).expect("agent alive");
    let result = tokio::time::timeout(WAIT, agent).await.expect("the agent stops").expect("no panic");
    assert!(result.is_ok(), "{result:?}");
    drop(tx);
}
