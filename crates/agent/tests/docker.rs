//! Integration tests against the real Docker engine: the executor and the
//! worker's task runners. Images come from `tests/images/build.sh` (built once
//! per test binary). When Docker is unreachable the tests print a notice and
//! pass, unless `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stackd_agent::docker::{ContainerContext, Created, DockerError, Executor, LABEL_TASK};
use stackd_agent::files::TaskFiles;
use stackd_agent::worker::{Assignment, StatusReport, Worker};
use stackd_core::model::{
    DesiredState, HealthCheck, Mount, MountKind, NetworkAttachment, NetworkSpec, PullPolicy, StackNetwork, StackVolume,
    Task, TaskState, TaskStatus, TaskTemplate, VolumeSpec,
};
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
        let worker = Worker::new(exec.clone(), ctx.clone(), files, tx, None);
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
    (
        ContainerContext { cluster_id: "stackd-test".into(), node_id: node_id.clone(), overlay_mtu: None },
        Cleanup(node_id),
    )
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
        addresses: Default::default(),
        image: String::new(),
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
    exec.ensure_image(WEB, PullPolicy::Missing, "docker.io", None).await.expect("image present");
    // The pull policies: `never` takes the node's copy and refuses a missing
    // image; `always` pulls, and no registry has this locally built image.
    exec.ensure_image(WEB, PullPolicy::Never, "docker.io", None).await.expect("present: never pulls");
    let missing = "stackd-test/not-on-this-node:1";
    let err = exec.ensure_image(missing, PullPolicy::Never, "docker.io", None).await.expect_err("never, missing");
    assert!(matches!(err, DockerError::NotPresent { .. }), "{err}");
    let err = exec.ensure_image(WEB, PullPolicy::Always, "docker.io", None).await.expect_err("always, no registry");
    assert!(matches!(err, DockerError::PullFailed { .. }) && err.to_string().contains("pull_policy always"), "{err}");
    let Created::New(id) = exec.create(&t, &ctx, None).await.expect("create") else {
        panic!("expected a new container")
    };
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
    assert_eq!(exec.create(&t, &ctx, None).await.expect("create again"), Created::Existing(id.clone()));
    // Another task with a clashing name is refused.
    let other = Task { id: format!("{}x", &t.id), ..t.clone() };
    let err = exec.create(&other, &ctx, None).await.expect_err("name conflict");
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
    let Created::New(stray_id) = exec.create(&stray, &ctx, None).await.expect("create") else { panic!() };
    let foreign = task(&other_ctx, busybox("sleep 300"));
    let Created::New(foreign_id) = exec.create(&foreign, &other_ctx, None).await.expect("create") else { panic!() };

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

// ---------------------------------------------------------------- networks

/// A context of its own cluster: network garbage collection works per
/// cluster, and other tests share the default one.
fn cluster_context() -> (ContainerContext, Cleanup) {
    let (ctx, cleanup) = context();
    (ContainerContext { cluster_id: uniq("cluster"), ..ctx }, cleanup)
}

/// Removes networks by name when dropped (after the containers of `node`).
struct NetworkCleanup {
    node: String,
    networks: Vec<String>,
}

impl Drop for NetworkCleanup {
    fn drop(&mut self) {
        drop(Cleanup(self.node.clone()));
        for n in &self.networks {
            let _ = std::process::Command::new("docker").args(["network", "rm", n]).output();
        }
    }
}

fn stack_network(stack: &str, key: &str, spec: NetworkSpec) -> StackNetwork {
    StackNetwork { stack: stack.into(), key: key.into(), spec }
}

fn attach(network: &str, aliases: &[&str]) -> NetworkAttachment {
    NetworkAttachment { network: network.into(), aliases: aliases.iter().map(|a| a.to_string()).collect() }
}

/// `docker inspect` of a container or network, as JSON.
fn docker_inspect(what: &str, id: &str) -> serde_json::Value {
    let out = std::process::Command::new("docker").args([what, "inspect", id]).output().expect("docker inspect");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v[0].clone()
}

/// Runs `sh -c script` in a container; its output, or its error.
fn docker_exec(container: &str, script: &str) -> Result<String, String> {
    let out =
        std::process::Command::new("docker").args(["exec", container, "sh", "-c", script]).output().expect("exec");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

#[tokio::test]
async fn networks_are_created_joined_with_aliases_and_collected() {
    let Some(exec) = docker().await else { return };
    let (ctx, _) = cluster_context();
    let mut node = Node::new(&exec, &ctx);
    let mut api = task(&ctx, web());
    let stack = api.stack.clone();
    let (back, front) = (format!("{stack}_back"), format!("{stack}_front"));
    let _cleanup = NetworkCleanup { node: ctx.node_id.clone(), networks: vec![back.clone(), front.clone()] };
    api.template.networks = vec![attach(&back, &["api", "api-v1"]), attach(&front, &[])];
    let mut client = task(&ctx, busybox("sleep 300"));
    client.stack = stack.clone();
    client.service_name = format!("{stack}_client");
    client.template.networks = vec![attach(&back, &[])];
    let networks = vec![
        stack_network(
            &stack,
            "back",
            NetworkSpec {
                name: back.clone(),
                internal: true,
                labels: BTreeMap::from([("team".into(), "a".into())]),
                ..NetworkSpec::default()
            },
        ),
        stack_network(&stack, "front", NetworkSpec { name: front.clone(), ..NetworkSpec::default() }),
    ];
    node.worker.apply(
        Assignment { full: true, tasks: vec![api.clone(), client.clone()], networks, ..Default::default() },
        false,
    );
    let api_c = node.until(&api.id, |s| s.state == TaskState::Running).await.pop().expect("report").container_id;
    let client_c = node.until(&client.id, |s| s.state == TaskState::Running).await.pop().expect("report").container_id;

    // The networks, with stackd's labels and the stack's settings.
    let net = docker_inspect("network", &back);
    assert_eq!(net["Driver"], "bridge");
    assert_eq!(net["Internal"], true);
    assert_eq!(net["Labels"]["io.stackd.cluster"], ctx.cluster_id.as_str());
    assert_eq!(net["Labels"]["io.stackd.stack"], stack.as_str());
    assert_eq!(net["Labels"]["io.stackd.network"], "back");
    assert_eq!(net["Labels"]["team"], "a");
    // The api container is on both networks, with the service name as alias on each.
    let c = docker_inspect("container", &api_c);
    let on = &c["NetworkSettings"]["Networks"];
    let aliases = |n: &str| on[n]["Aliases"].as_array().cloned().unwrap_or_default();
    for a in ["web", "api", "api-v1"] {
        assert!(aliases(&back).contains(&a.into()), "{a} missing: {on:#}");
    }
    assert!(aliases(&front).contains(&"web".into()), "{on:#}");
    assert!(on.get("bridge").is_none(), "not on Docker's default bridge: {on:#}");
    // The client finds it by service name and by alias.
    for host in ["web", "api"] {
        let page = docker_exec(&client_c, &format!("timeout 10 wget -q -O- http://{host}:8080/"));
        assert_eq!(page.as_deref().map(str::trim), Ok("web 1"), "{host}");
    }

    // The tasks leave: their containers go, then the networks.
    node.worker.apply(
        Assignment { full: false, removed: vec![api.id.clone(), client.id.clone()], ..Assignment::default() },
        false,
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = exec.cluster_networks(&ctx).await.expect("list networks");
        if left.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "networks not collected: {left:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_missing_external_network_rejects_the_task() {
    let Some(exec) = docker().await else { return };
    let (ctx, _cleanup) = cluster_context();
    let mut node = Node::new(&exec, &ctx);
    let mut t = task(&ctx, web());
    let name = uniq("nowhere");
    t.template.networks = vec![attach(&name, &[])];
    let networks = vec![stack_network(
        &t.stack,
        "infra",
        NetworkSpec { name: name.clone(), external: true, ..Default::default() },
    )];
    node.worker.apply(Assignment { full: true, tasks: vec![t.clone()], networks, ..Default::default() }, false);
    let seen = node.until(&t.id, |s| s.state.is_terminal()).await;
    assert_eq!(states(&seen), vec![TaskState::Preparing, TaskState::Rejected]);
    assert_eq!(seen[1].message, "network unavailable");
    assert!(
        seen[1].err.starts_with(&format!("external network {name} does not exist on this node")),
        "{}",
        seen[1].err
    );
    assert!(exec.list_managed(&ctx).await.expect("list").is_empty(), "no container for a rejected task");
    assert!(exec.networks_named(&name).await.expect("list").is_empty(), "an external network is never created");
}

#[tokio::test]
async fn a_network_stackd_did_not_create_is_left_alone() {
    let Some(exec) = docker().await else { return };
    let (ctx, _) = cluster_context();
    let mut node = Node::new(&exec, &ctx);
    let mut t = task(&ctx, web());
    let name = format!("{}_back", t.stack);
    let _cleanup = NetworkCleanup { node: ctx.node_id.clone(), networks: vec![name.clone()] };
    let made = std::process::Command::new("docker").args(["network", "create", &name]).output().expect("docker");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    t.template.networks = vec![attach(&name, &[])];
    let networks = vec![stack_network(&t.stack, "back", NetworkSpec { name: name.clone(), ..Default::default() })];
    node.worker.apply(Assignment { full: true, tasks: vec![t.clone()], networks, ..Default::default() }, true);
    let seen = node.until(&t.id, |s| s.state.is_terminal()).await;
    assert_eq!(seen.last().map(|s| s.state), Some(TaskState::Rejected));
    let err = &seen[seen.len() - 1].err;
    assert!(err.starts_with(&format!("network {name} exists but was not created by stackd")), "{err}");
    // Garbage collection never removes it either.
    node.worker.apply(Assignment { full: true, ..Default::default() }, true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(exec.networks_named(&name).await.expect("list").len(), 1);
}

#[tokio::test]
async fn concurrent_creates_of_one_network_leave_one() {
    let Some(exec) = docker().await else { return };
    let (ctx, _cleanup) = cluster_context();
    // Two agents on one engine: two executors, two locks.
    let other = Executor::connect(None).await.expect("second connection");
    for i in 0..5 {
        let name = uniq(&format!("race{i}"));
        let _cleanup = NetworkCleanup { node: ctx.node_id.clone(), networks: vec![name.clone()] };
        let net = stack_network("race", "default", NetworkSpec { name: name.clone(), ..Default::default() });
        let (a, b) = tokio::join!(exec.ensure_network(&ctx, &net, None), other.ensure_network(&ctx, &net, None));
        a.expect("first agent");
        b.expect("second agent");
        let found = exec.networks_named(&name).await.expect("list");
        assert_eq!(found.len(), 1, "round {i}: {found:#?}");
        // Making sure again is a no-op.
        exec.ensure_network(&ctx, &net, None).await.expect("again");
        assert_eq!(exec.networks_named(&name).await.expect("list").len(), 1);
    }
}

/// Removes volumes by name when dropped (after the containers of `node`).
struct VolumeCleanup {
    node: String,
    volumes: Vec<String>,
}

impl Drop for VolumeCleanup {
    fn drop(&mut self) {
        drop(Cleanup(self.node.clone()));
        for v in &self.volumes {
            let _ = std::process::Command::new("docker").args(["volume", "rm", "-f", v]).output();
        }
    }
}

fn stack_volume(stack: &str, key: &str, spec: VolumeSpec) -> StackVolume {
    StackVolume { stack: stack.into(), key: key.into(), spec }
}

fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Issue 12, defect 4: a stack volume whose driver_opts bind it onto a host
/// directory (as a mounted GlusterFS path or NFS export would be) is created
/// with them before the task's container, so the data lands in that
/// directory, not on an empty local volume.
#[tokio::test]
async fn a_volume_is_created_with_its_driver_options_and_labels_before_the_task() {
    let Some(exec) = docker().await else { return };
    let (ctx, _) = cluster_context();
    let mut node = Node::new(&exec, &ctx);
    let dir = std::env::temp_dir().join(uniq("stackd-vol-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut t = task(&ctx, busybox("echo written-by-task > /data/proof && sleep 300"));
    let name = format!("{}_data", t.stack);
    let _cleanup = VolumeCleanup { node: ctx.node_id.clone(), volumes: vec![name.clone()] };
    t.template.mounts = vec![Mount::new(MountKind::Volume, name.clone(), "/data", false)];
    let device = dir.display().to_string();
    let spec = VolumeSpec {
        name: name.clone(),
        driver: Some("local".into()),
        driver_opts: opts(&[("type", "none"), ("o", "bind"), ("device", &device)]),
        labels: opts(&[("backup", "daily")]),
        ..VolumeSpec::default()
    };
    let volumes = vec![stack_volume(&t.stack, "data", spec)];
    node.worker.apply(Assignment { full: true, tasks: vec![t.clone()], volumes, ..Default::default() }, false);
    node.until(&t.id, |s| s.state == TaskState::Running).await;

    let v = docker_inspect("volume", &name);
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Options"], serde_json::json!({"type": "none", "o": "bind", "device": device}), "{v:#}");
    assert_eq!(v["Labels"]["backup"], "daily");
    assert_eq!(v["Labels"]["io.stackd.volume"], "data");
    assert_eq!(v["Labels"]["io.stackd.stack"], t.stack.as_str());
    assert_eq!(v["Labels"]["io.stackd.cluster"], ctx.cluster_id.as_str());
    // The task's data is in the directory the options name.
    let deadline = tokio::time::Instant::now() + WAIT;
    let proof = dir.join("proof");
    while !proof.exists() {
        assert!(tokio::time::Instant::now() < deadline, "the task's file is not in {}", dir.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read_to_string(&proof).map(|s| s.trim().to_string()).ok().as_deref(), Some("written-by-task"));
    node.worker.apply(Assignment { full: false, removed: vec![t.id.clone()], ..Assignment::default() }, false);
    let _ = std::fs::remove_dir_all(&dir);
}

/// This kernel has no NFS client: creating a local volume with NFS options
/// succeeds (mounting would fail), so only the recorded options are checked.
#[tokio::test]
async fn an_nfs_volume_records_its_options() {
    let Some(exec) = docker().await else { return };
    let (ctx, _) = cluster_context();
    let name = uniq("stackd-nfs-");
    let _cleanup = VolumeCleanup { node: ctx.node_id.clone(), volumes: vec![name.clone()] };
    let nfs = opts(&[("type", "nfs"), ("o", "addr=10.0.0.5,rw,nfsvers=4"), ("device", ":/export/shop")]);
    let spec = VolumeSpec { name: name.clone(), driver_opts: nfs.clone(), ..VolumeSpec::default() };
    exec.ensure_volume(&ctx, &stack_volume("shop", "data", spec.clone())).await.expect("created");
    let v = docker_inspect("volume", &name);
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Options"], serde_json::to_value(&nfs).expect("json"), "{v:#}");
    // Again: the same options are fine.
    exec.ensure_volume(&ctx, &stack_volume("shop", "data", spec)).await.expect("the same volume");
}

/// A volume that exists with other options (here: a plain local volume where
/// the stack wants a bind onto shared storage) rejects the task, saying what
/// the volume has and what the stack wants; the engine's own create would
/// silently keep the old options.
#[tokio::test]
async fn a_volume_with_other_options_rejects_the_task() {
    let Some(exec) = docker().await else { return };
    let (ctx, _) = cluster_context();
    let mut node = Node::new(&exec, &ctx);
    let mut t = task(&ctx, busybox("sleep 300"));
    let name = format!("{}_data", t.stack);
    let _cleanup = VolumeCleanup { node: ctx.node_id.clone(), volumes: vec![name.clone()] };
    let made = std::process::Command::new("docker").args(["volume", "create", &name]).output().expect("docker");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    t.template.mounts = vec![Mount::new(MountKind::Volume, name.clone(), "/data", false)];
    let spec = VolumeSpec {
        name: name.clone(),
        driver_opts: opts(&[("type", "none"), ("o", "bind"), ("device", "/srv/gluster/shop")]),
        ..VolumeSpec::default()
    };
    let volumes = vec![stack_volume(&t.stack, "data", spec)];
    node.worker.apply(Assignment { full: true, tasks: vec![t.clone()], volumes, ..Default::default() }, false);
    let seen = node.until(&t.id, |s| s.state.is_terminal()).await;
    assert_eq!(states(&seen), vec![TaskState::Preparing, TaskState::Rejected]);
    assert_eq!(seen[1].message, "volume unavailable");
    let err = &seen[1].err;
    assert!(err.starts_with(&format!("volume {name} exists on this node with driver local, no options, but the stack wants driver local, options {{device=/srv/gluster/shop, o=bind, type=none}}")), "{err}");
    assert!(exec.list_managed(&ctx).await.expect("list").is_empty(), "no container for a rejected task");
    // The volume was left as it was.
    assert_eq!(docker_inspect("volume", &name)["Options"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_missing_external_volume_or_plugin_rejects_the_task() {
    let Some(exec) = docker().await else { return };
    let (ctx, _) = cluster_context();
    let mut node = Node::new(&exec, &ctx);
    let (mut ext, mut plug) = (task(&ctx, busybox("sleep 300")), task(&ctx, busybox("sleep 300")));
    let (ext_name, plug_name) = (uniq("nowhere"), format!("{}_data", plug.stack));
    let _cleanup = VolumeCleanup { node: ctx.node_id.clone(), volumes: vec![ext_name.clone(), plug_name.clone()] };
    ext.template.mounts = vec![Mount::new(MountKind::Volume, ext_name.clone(), "/data", false)];
    plug.template.mounts = vec![Mount::new(MountKind::Volume, plug_name.clone(), "/data", false)];
    let volumes = vec![
        stack_volume(
            &ext.stack,
            "shared",
            VolumeSpec { name: ext_name.clone(), external: true, ..VolumeSpec::default() },
        ),
        stack_volume(
            &plug.stack,
            "data",
            VolumeSpec {
                name: plug_name.clone(),
                driver: Some("stackd-test/no-such-plugin".into()),
                ..VolumeSpec::default()
            },
        ),
    ];
    node.worker
        .apply(Assignment { full: true, tasks: vec![ext.clone(), plug.clone()], volumes, ..Default::default() }, false);
    let seen = node.until(&ext.id, |s| s.state.is_terminal()).await;
    assert_eq!(seen.last().map(|s| s.state), Some(TaskState::Rejected));
    let err = &seen.last().expect("report").err;
    assert!(err.starts_with(&format!("external volume {ext_name} does not exist on this node")), "{err}");
    assert!(exec.inspect_volume(&ext_name).await.expect("inspect").is_none(), "an external volume is never created");
    let seen = node.until(&plug.id, |s| s.state.is_terminal()).await;
    assert_eq!(seen.last().map(|s| s.state), Some(TaskState::Rejected));
    let err = &seen.last().expect("report").err;
    assert!(
        err.starts_with(&format!(
            "volume {plug_name}: the volume driver stackd-test/no-such-plugin is not installed on this node"
        )),
        "{err}"
    );
}
