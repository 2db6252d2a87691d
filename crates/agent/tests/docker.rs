//! Integration tests against the real Docker engine: the executor and the
//! worker's task runners. Images come from `tests/images/build.sh` (built once
//! per test binary). When Docker is unreachable the tests print a notice and
//! pass, unless `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stackd_agent::docker::{ContainerContext, Created, Executor, LABEL_TASK};
use stackd_agent::files::TaskFiles;
use stackd_agent::worker::{Assignment, StatusReport, Worker};
use stackd_core::model::{DesiredState, HealthCheck, Mount, MountKind, Task, TaskState, TaskStatus, TaskTemplate};
use tokio::sync::mpsc;

mod common;
use common::{Cleanup, docker};

const WEB: &str = "stackd-test/web:1";
const BUSYBOX: &str = "stackd-test/busybox:1";
const WAIT: Duration = Duration::from_secs(60);

/// A unique lowercase id.
fn uniq(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}{:x}{:x}{:x}", std::process::id(), nanos % 0xffff_ffff, N.fetch_add(1, Ordering::Relaxed))
}

/// One test node: its context, a worker and the reports of its runners.
struct Node {
    exec: Executor,
    ctx: ContainerContext,
    worker: Worker,
    reports: mpsc::UnboundedReceiver<StatusReport>,
    backlog: Vec<StatusReport>,
}

impl Node {
    fn new(exec: &Executor, ctx: &ContainerContext) -> Node {
        let (tx, reports) = mpsc::unbounded_channel();
        let files = TaskFiles::open(std::env::temp_dir().join(format!("stackd-agent-files-{}", ctx.node_id)));
        let worker = Worker::new(exec.clone(), ctx.clone(), files, tx);
        Node { exec: exec.clone(), ctx: ctx.clone(), worker, reports, backlog: Vec::new() }
    }

    /// Reports of `task_id` until one satisfies `done`; all of them, in order.
    /// Reports of other tasks are kept for later calls.
    async fn until(&mut self, task_id: &str, done: impl Fn(&TaskStatus) -> bool) -> Vec<TaskStatus> {
        let mut seen = Vec::new();
        let mut backlog = std::mem::take(&mut self.backlog).into_iter();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = match backlog.next() {
                Some(r) => r,
                None => tokio::time::timeout_at(deadline, self.reports.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no matching report for {task_id} in {WAIT:?}; got {seen:#?}"))
                    .unwrap_or_else(|| panic!("report channel closed; got {seen:#?}")),
            };
            if r.task_id != task_id {
                self.backlog.push(r);
                continue;
            }
            let stop = done(&r.status);
            seen.push(r.status);
            if stop {
                self.backlog.extend(backlog);
                return seen;
            }
        }
    }

    /// No report at all for `quiet`.
    async fn assert_quiet(&mut self, quiet: Duration) {
        assert!(self.backlog.is_empty(), "unexpected reports {:#?}", self.backlog);
        if let Ok(Some(r)) = tokio::time::timeout(quiet, self.reports.recv()).await {
            panic!("unexpected report {r:#?}");
        }
    }
}

fn context() -> (ContainerContext, Cleanup) {
    let node_id = uniq("node");
    (ContainerContext { cluster_id: "stackd-test".into(), node_id: node_id.clone() }, Cleanup(node_id))
}

fn task(ctx: &ContainerContext, template: TaskTemplate) -> Task {
    let stack = uniq("t");
    Task {
        id: uniq("task"),
        service_id: uniq("svc"),
        service_name: format!("{stack}_web"),
        stack,
        slot: 1,
        node_id: Some(ctx.node_id.clone()),
        revision: 3,
        template: TaskTemplate { stop_grace_period_ms: 2_000, ..template },
        desired_state: DesiredState::Running,
        status: TaskStatus { state: TaskState::Assigned, ..TaskStatus::default() },
        unplaceable: String::new(),
        created_at: 0,
    }
}

fn web() -> TaskTemplate {
    TaskTemplate { image: WEB.into(), ..TaskTemplate::default() }
}

fn busybox(script: &str) -> TaskTemplate {
    TaskTemplate {
        image: BUSYBOX.into(),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        init: Some(true),
        ..TaskTemplate::default()
    }
}

fn full(tasks: Vec<Task>) -> Assignment {
    Assignment { full: true, tasks, ..Assignment::default() }
}

fn states(list: &[TaskStatus]) -> Vec<TaskState> {
    list.iter().map(|s| s.state).collect()
}

#[tokio::test]
async fn creates_and_starts_a_container_with_labels_and_name() {
    let Some(exec) = docker().await else { return };
    let (ctx, _cleanup) = context();
    let template = TaskTemplate {
        env: vec!["GREETING=hello".into()],
        labels: BTreeMap::from([("team".into(), "web".into())]),
        mounts: vec![Mount {
            kind: MountKind::Tmpfs,
            source: String::new(),
            target: "/scratch".into(),
            read_only: false,
            tmpfs_size_bytes: 0,
            tmpfs_mode: 0,
        }],
        ..web()
    };
    let t = task(&ctx, template);
    exec.ensure_image(WEB).await.expect("image present");
    let Created::New(id) = exec.create(&t, &ctx).await.expect("create") else { panic!("expected a new container") };
    exec.start(&id).await.expect("start");

    let info = exec.inspect(&id).await.expect("inspect").expect("container exists");
    assert!(info.running, "{info:#?}");
    assert_eq!(info.name, t.container_name());
    let label = |k: &str| info.labels.get(k).map(String::as_str);
    assert_eq!(label("io.stackd.cluster"), Some("stackd-test"));
    assert_eq!(label("io.stackd.node"), Some(ctx.node_id.as_str()));
    assert_eq!(label("io.stackd.stack"), Some(t.stack.as_str()));
    assert_eq!(label("io.stackd.service"), Some(t.service_name.as_str()));
    assert_eq!(label("io.stackd.task"), Some(t.id.as_str()));
    assert_eq!(label("io.stackd.slot"), Some("1"));
    assert_eq!(label("io.stackd.revision"), Some("3"));
    assert_eq!(label("team"), Some("web"));

    let managed = exec.list_managed(&ctx).await.expect("list");
    assert_eq!(managed.len(), 1);
    assert_eq!(
        (managed[0].id.as_str(), managed[0].task_id.as_str(), managed[0].running),
        (id.as_str(), t.id.as_str(), true)
    );

    // Creating it again adopts the container that has its name.
    assert_eq!(exec.create(&t, &ctx).await.expect("create again"), Created::Existing(id.clone()));
    // Another task with a clashing name is refused.
    let other = Task { id: format!("{}x", &t.id), ..t.clone() };
    let err = exec.create(&other, &ctx).await.expect_err("name conflict");
    assert!(err.to_string().contains("already in use"), "{err}");

    exec.stop(&id, Some(Duration::from_secs(2)), None).await.expect("stop");
    let info = exec.inspect(&id).await.expect("inspect").expect("container exists");
    assert!(!info.running);
    assert!(info.exit_code.is_some());
    exec.remove(&id).await.expect("remove");
    assert_eq!(exec.inspect(&id).await.expect("inspect"), None);
    exec.remove(&id).await.expect("removing a missing container is fine");
}

#[tokio::test]
async fn a_task_runs_and_reports_running() {
    let Some(exec) = docker().await else { return };
    let (ctx, _cleanup) = context();
    let mut node = Node::new(&exec, &ctx);
    let t = task(&ctx, web());
    node.worker.apply(full(vec![t.clone()]), true);
    let seen = node.until(&t.id, |s| s.state >= TaskState::Running).await;
    assert_eq!(states(&seen), vec![TaskState::Preparing, TaskState::Starting, TaskState::Running]);
    let running = seen.last().expect("a report");
    assert!(!running.container_id.is_empty());
    assert!(running.timestamp > 1_600_000_000_000, "Unix ms timestamp");
    assert!(seen.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    let info = exec.inspect(&running.container_id).await.expect("inspect").expect("exists");
    assert!(info.running);
    assert_eq!(info.labels.get(LABEL_TASK), Some(&t.id));
}

#[tokio::test]
async fn a_non_zero_exit_reports_failed_with_the_exit_code() {
    let Some(exec) = docker().await else { return };
    let (ctx, _cleanup) = context();
    let mut node = Node::new(&exec, &ctx);
    let t = task(&ctx, busybox("exit 3"));
    node.worker.apply(full(vec![t.clone()]), false);
    let seen = node.until(&t.id, |s| s.state.is_terminal()).await;
    let last = seen.last().expect("a report");
    assert_eq!(last.state, TaskState::Failed, "{seen:#?}");
    assert_eq!(last.exit_code, Some(3));
    assert_eq!(last.err, "exit code 3");
    assert!(!last.container_id.is_empty());
    // The container stays (as history) and is never restarted.
    let info = exec.inspect(&last.container_id).await.expect("inspect").expect("kept");
    assert!(!info.running);
    assert_eq!(info.exit_code, Some(3));
    node.assert_quiet(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_exit_zero_reports_complete() {
    let Some(exec) = docker().await else { return };
    let (ctx, _cleanup) = context();
    let mut node = Node::new(&exec, &ctx);
    let t = task(&ctx, busybox("true"));
    node.worker.apply(full(vec![t.clone()]), false);
    let seen = node.until(&t.id, |s| s.state.is_terminal()).await;
    let last = seen.last().expect("a report");
    assert_eq!((last.state, last.exit_code, last.err.as_str()), (TaskState::Complete, Some(0), ""));
}

#[tokio::test]
async fn a_missing_image_is_rejected() {
    let Some(exec) = docker().await else { return };
    let (ctx, _cleanup) = context();
    let mut node = Node::new(&exec, &ctx);
    let image = "stackd-test/does-not-exist:1";
    let t = task(&ctx, TaskTemplate { image: image.into(), ..TaskTemplate::default() });
    node.worker.apply(full(vec![t.clone()]), false);
    let seen = node.until(&t.id, |s| s.state.is_terminal()).await;
    assert_eq!(states(&seen), vec![TaskState::Preparing, TaskState::Rejected]);
    let err = &seen[1].err;
    assert!(err.starts_with(&format!("image {image} not found locally and pull failed: ")), "{err}");
    assert!(exec.list_managed(&ctx).await.expect("list").is_empty());
}

#[tokio::test]
async fn a_restarted_agent_adopts_the_running_container() {
    let Some(exec) = docker().await else { return };
    let (ctx, _cleanup) = context();
    let mut first = Node::new(&exec, &ctx);
    let t = task(&ctx, web());
    first.worker.apply(full(vec![t.clone()]), true);
    let running = first.until(&t.id, |s| s.state == TaskState::Running).await.pop().expect("a report");
    let id = running.container_id.clone();
    // The agent stops: runners are aborted, containers stay.
    first.worker.shutdown().await;
    assert!(exec.inspect(&id).await.expect("inspect").expect("still there").running);

    // A second executor instance finds it by its task label.
    let exec2 = Executor::connect(None).await.expect("second connection");
    let found = exec2.find_task(&ctx, &t.id).await.expect("find").expect("found");
    assert_eq!((found.id.as_str(), found.running), (id.as_str(), true));

    // A new agent whose manager already knows the task runs adopts it silently.
    let known = Task { status: running.clone(), ..t.clone() };
    let mut second = Node::new(&exec2, &ctx);
    second.worker.apply(full(vec![known]), true);
    second.assert_quiet(Duration::from_secs(2)).await;
    second.worker.shutdown().await;

    // One that does not know it yet reports it running, with the same container.
    let mut third = Node::new(&exec2, &ctx);
    third.worker.apply(full(vec![t.clone()]), true);
    let seen = third.until(&t.id, |s| s.state == TaskState::Running).await;
    assert_eq!(states(&seen), vec![TaskState::Running], "no Preparing: nothing is recreated");
    assert_eq!(seen[0].container_id, id);
    let managed = exec2.list_managed(&ctx).await.expect("list");
    assert_eq!(managed.len(), 1, "{managed:#?}");
    assert_eq!(managed[0].id, id);
    assert!(managed[0].running);
    drop(third.exec);
}

#[tokio::test]
async fn shutdown_stops_and_removal_removes() {
    let Some(exec) = docker().await else { return };
    let (ctx, _cleanup) = context();
    let mut node = Node::new(&exec, &ctx);
    let t = task(&ctx, busybox("sleep 300"));
    node.worker.apply(full(vec![t.clone()]), false);
    let running = node.until(&t.id, |s| s.state == TaskState::Running).await.pop().expect("a report");

    let stopping = Task { desired_state: DesiredState::Shutdown, status: running.clone(), ..t.clone() };
    node.worker.apply(Assignment { full: false, tasks: vec![stopping], ..Assignment::default() }, false);
    let seen = node.until(&t.id, |s| s.state.is_terminal()).await;
    let last = seen.last().expect("a report");
    assert_eq!(last.state, TaskState::Shutdown, "{seen:#?}");
    assert!(last.exit_code.is_some());
    assert_eq!(last.container_id, running.container_id);
    let info = exec.inspect(&running.container_id).await.expect("inspect").expect("kept as history");
    assert!(!info.running);

    node.worker.apply(Assignment { full: false, removed: vec![t.id.clone()], ..Assignment::default() }, false);
    let deadline = tokio::time::Instant::now() + WAIT;
    while exec.inspect(&running.container_id).await.expect("inspect").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "container not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(node.ctx);
}

#[tokio::test]
async fn garbage_collection_removes_only_this_nodes_unassigned_containers() {
    let Some(exec) = docker().await else { return };
    let (ctx, _cleanup) = context();
    let (other_ctx, _other_cleanup) = context();
    // A stray container of this node, and one of another node.
    let stray = task(&ctx, busybox("sleep 300"));
    let Created::New(stray_id) = exec.create(&stray, &ctx).await.expect("create") else { panic!() };
    let foreign = task(&other_ctx, busybox("sleep 300"));
    let Created::New(foreign_id) = exec.create(&foreign, &other_ctx).await.expect("create") else { panic!() };

    let mut node = Node::new(&exec, &ctx);
    let kept = task(&ctx, web());
    node.worker.apply(full(vec![kept.clone()]), true);
    node.until(&kept.id, |s| s.state == TaskState::Running).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while exec.inspect(&stray_id).await.expect("inspect").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "stray container not collected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exec.inspect(&foreign_id).await.expect("inspect").is_some(), "another node's container is not ours");
    let managed = exec.list_managed(&ctx).await.expect("list");
    assert_eq!(managed.iter().map(|c| c.task_id.as_str()).collect::<Vec<_>>(), vec![kept.id.as_str()]);
}

#[tokio::test]
async fn health_is_reported_and_unhealthy_fails() {
    let Some(exec) = docker().await else { return };
    let (ctx, _cleanup) = context();
    let mut node = Node::new(&exec, &ctx);
    let check = |cmd: &str| HealthCheck {
        test: vec!["CMD-SHELL".into(), cmd.into()],
        interval_ms: 300,
        timeout_ms: 1_000,
        retries: 1,
        start_period_ms: 0,
        start_interval_ms: 0,
    };
    let healthy = task(&ctx, TaskTemplate { healthcheck: Some(check("wget -q -O- http://127.0.0.1:8080/")), ..web() });
    let sick = task(&ctx, TaskTemplate { healthcheck: Some(check("echo probe says no; exit 1")), ..web() });
    node.worker.apply(full(vec![healthy.clone(), sick.clone()]), false);

    let seen = node.until(&sick.id, |s| s.state.is_terminal()).await;
    let last = seen.last().expect("a report");
    assert_eq!(last.state, TaskState::Failed, "{seen:#?}");
    assert_eq!(last.health, "unhealthy");
    assert_eq!(last.err, "unhealthy: probe says no");
    // It is stopped (Swarm's behaviour), not restarted.
    let deadline = tokio::time::Instant::now() + WAIT;
    while exec.inspect(&last.container_id).await.expect("inspect").is_some_and(|c| c.running) {
        assert!(tokio::time::Instant::now() < deadline, "unhealthy container not stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let seen = node.until(&healthy.id, |s| s.health == "healthy").await;
    let last = seen.last().expect("a report");
    assert_eq!(last.state, TaskState::Running);
}
