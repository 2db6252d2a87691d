//! The worker: the node's task set, one runner per task.
//!
//! [`Worker::apply`] takes the assignments the dispatcher sends: a full set
//! replaces the node's tasks, a partial one adds, updates and removes. New
//! tasks get a runner (a tokio task fed through a `watch` of the task);
//! updated tasks are sent to their runner; removed tasks lose their `watch`
//! sender, which tells the runner to stop and remove the container and end.
//!
//! After the first full set of a session, [`Worker::apply`] also collects
//! garbage: every container of this node (and cluster) whose task is not in
//! the set is stopped and removed. The agent never touches containers that do
//! not bear its node label.
//!
//! Networks: each assignment carries the specs of the networks its tasks
//! attach to; the worker keeps them for the runners, which create a network
//! before the first container that needs it. A background collector removes
//! this cluster's networks that no task of the node wants any more (a task
//! wants its networks until it has stopped for good); it runs shortly after
//! a task leaves the node, its container is removed, or a task stops, and
//! after the garbage collection of a session's first full set. The engine
//! itself refuses to remove a network a running container uses, so
//! networks shared with other nodes on the same engine are safe.
//!
//! Volumes: each assignment also carries the specs of the named volumes its
//! tasks mount; a runner creates a volume (with its driver, options and
//! labels) before the first container that mounts it. Volumes are never
//! removed: they hold data.
//!
//! Runners report status changes as [`StatusReport`]s on the channel given to
//! [`Worker::new`]. [`Worker::shutdown`] aborts every runner without touching
//! containers: a restarted agent adopts them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use stackd_core::model::{StackNetwork, StackVolume, Task, TaskId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::docker::{ContainerContext, Executor};
use crate::files::{FileContent, TaskFiles};
use crate::runner::Runner;
use crate::shared::{Logins, Networks, Own};
pub use crate::shared::{RegistryLogin, StatusReport};

/// Assignments from the dispatcher, in core types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// True: `tasks` is the node's whole set; false: changes only.
    pub full: bool,
    /// Tasks added or changed.
    pub tasks: Vec<Task>,
    /// Tasks no longer assigned to the node.
    pub removed: Vec<TaskId>,
    /// Tasks the dispatcher sent but the agent could not read: whatever runs
    /// for them is left alone (never removed because of a bad message).
    pub unreadable: Vec<TaskId>,
    /// Contents of the configs and secrets the tasks refer to.
    pub objects: Vec<FileContent>,
    /// The networks the tasks of this assignment attach to (with `full`:
    /// every network of the node's tasks).
    pub networks: Vec<StackNetwork>,
    /// The named volumes the tasks of this assignment mount (with `full`:
    /// every named volume of the node's tasks).
    pub volumes: Vec<StackVolume>,
    /// Registry credentials for the images of the tasks of this assignment.
    pub logins: Vec<RegistryLogin>,
    /// Credentials no task of the node needs any more, by stack and registry.
    pub logins_removed: Vec<(String, String)>,
}

/// How long the network collector waits after it is woken, so that the
/// removals of one change are collected in one pass.
const NETWORK_GC_DELAY: Duration = Duration::from_millis(500);

/// The networks a node's tasks want: those of every task that is wanted
/// running or has not stopped yet.
pub(crate) fn wanted_networks<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> BTreeSet<String> {
    tasks
        .into_iter()
        .filter(|t| t.occupies_slot())
        .flat_map(|t| t.template.networks.iter().map(|a| a.network.clone()))
        .collect()
}

/// What applying an assignment changes, computed from the current task ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Tasks that get a runner.
    pub start: Vec<Task>,
    /// Tasks whose runner gets a new version.
    pub update: Vec<Task>,
    /// Tasks whose runner is retired (their container is removed).
    pub remove: Vec<TaskId>,
}

/// Diffs an assignment against the ids of the current task set. Pure.
pub(crate) fn plan(current: &BTreeSet<TaskId>, assignment: &Assignment) -> Plan {
    let mut p = Plan::default();
    // The last version of each task wins if one is sent twice.
    let mut incoming: BTreeMap<&str, &Task> = BTreeMap::new();
    for t in &assignment.tasks {
        incoming.insert(&t.id, t);
    }
    for (id, task) in &incoming {
        if current.contains(*id) {
            p.update.push((*task).clone());
        } else {
            p.start.push((*task).clone());
        }
    }
    let keep = |id: &str| incoming.contains_key(id) || assignment.unreadable.iter().any(|u| u == id);
    if assignment.full {
        p.remove = current.iter().filter(|id| !keep(id)).cloned().collect();
    } else {
        let removed: BTreeSet<&TaskId> = assignment.removed.iter().filter(|id| !keep(id)).collect();
        p.remove = removed.into_iter().filter(|id| current.contains(*id)).cloned().collect();
    }
    p
}

/// The node's task set and its runners.
pub struct Worker {
    exec: Executor,
    ctx: Arc<ContainerContext>,
    files: Arc<TaskFiles>,
    reports: mpsc::UnboundedSender<StatusReport>,
    tasks: HashMap<TaskId, watch::Sender<Task>>,
    networks: Arc<Networks>,
    logins: Arc<Logins>,
    collector_started: bool,
    /// The cluster networks' data plane (`None`: networks stay local).
    dataplane: Option<crate::dataplane::DataPlane>,
    jobs: JoinSet<()>,
}

impl Worker {
    /// The node was removed from the cluster: unmount the secrets tmpfs
    /// (lazily: running containers keep their copies), so that nothing of
    /// the node's secrets stays mounted and its data dir can be removed.
    pub async fn node_removed(&self) {
        let files = self.files.clone();
        match tokio::task::spawn_blocking(move || files.unmount_secrets()).await {
            Ok(Ok(true)) => info!("the node was removed from the cluster: unmounted the secrets tmpfs"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot unmount the secrets tmpfs"),
            Err(e) => warn!(error = %e, "unmounting the secrets tmpfs was interrupted"),
        }
    }

    /// The engine this worker drives (to resolve image tags).
    pub(crate) fn executor(&self) -> Executor {
        self.exec.clone()
    }

    /// What the worker shares with its runners: the network view among it.
    pub(crate) fn networks(&self) -> Arc<Networks> {
        self.networks.clone()
    }

    /// Who this node's containers belong to (their labels).
    pub(crate) fn context(&self) -> Arc<ContainerContext> {
        self.ctx.clone()
    }

    /// A worker with no tasks; runners report on `reports` and write task files to `files`.
    pub fn new(
        exec: Executor,
        ctx: ContainerContext,
        files: TaskFiles,
        reports: mpsc::UnboundedSender<StatusReport>,
        dataplane: Option<crate::dataplane::DataPlane>,
    ) -> Worker {
        Worker {
            dataplane,
            exec,
            ctx: Arc::new(ctx),
            files: Arc::new(files),
            reports,
            tasks: HashMap::new(),
            networks: Arc::new(Networks::default()),
            logins: Arc::new(Logins::default()),
            collector_started: false,
            jobs: JoinSet::new(),
        }
    }

    /// Ids of the tasks in the set.
    pub fn task_ids(&self) -> BTreeSet<TaskId> {
        self.tasks.keys().cloned().collect()
    }

    /// Applies assignments; with `collect_garbage`, also removes this node's
    /// containers of tasks outside the set (in the background).
    pub fn apply(&mut self, mut assignment: Assignment, collect_garbage: bool) {
        while self.jobs.try_join_next().is_some() {}
        self.start_background();
        self.networks.record(assignment.full, std::mem::take(&mut assignment.networks));
        self.networks.record_volumes(assignment.full, std::mem::take(&mut assignment.volumes));
        self.files.store(assignment.full, std::mem::take(&mut assignment.objects));
        self.logins.record(
            assignment.full,
            std::mem::take(&mut assignment.logins),
            &std::mem::take(&mut assignment.logins_removed),
        );
        let p = plan(&self.task_ids(), &assignment);
        debug!(
            start = p.start.len(),
            update = p.update.len(),
            remove = p.remove.len(),
            full = assignment.full,
            "assignments"
        );
        for id in &p.remove {
            // Dropping the sender tells the runner to remove the container and end.
            if self.tasks.remove(id).is_some() {
                info!(task = %id, "task left the node");
            }
        }
        for task in p.update {
            if let Some(tx) = self.tasks.get(&task.id) {
                tx.send_if_modified(|current| {
                    let changed = *current != task;
                    if changed {
                        *current = task;
                    }
                    changed
                });
            }
        }
        for task in p.start {
            info!(task = %task.id, service = %task.service_name, slot = task.slot, "task assigned");
            let id = task.id.clone();
            let (tx, rx) = watch::channel(task);
            let runner = Runner::new(
                self.exec.clone(),
                self.ctx.clone(),
                self.files.clone(),
                rx,
                self.reports.clone(),
                self.networks.clone(),
                self.logins.clone(),
            );
            self.jobs.spawn(runner.run());
            self.tasks.insert(id, tx);
        }
        let mut wanted = BTreeSet::new();
        for tx in self.tasks.values() {
            wanted.extend(wanted_networks([&*tx.borrow()]));
        }
        if self.ctx.overlay_mtu.is_some() {
            self.networks.set_own(own(self.tasks.values().map(|tx| tx.borrow().clone())));
        }
        if self.networks.want(wanted) {
            self.networks.collect_soon();
        }
        if collect_garbage {
            let mut keep = self.task_ids();
            keep.extend(assignment.unreadable);
            let (exec, ctx, files, networks) =
                (self.exec.clone(), self.ctx.clone(), self.files.clone(), self.networks.clone());
            self.jobs.spawn(async move {
                collect(exec, ctx, &keep).await;
                files.retain_blocking(keep).await;
                networks.collect_soon();
            });
        }
    }

    /// Starts the network collector and the data plane, once.
    fn start_background(&mut self) {
        if self.collector_started {
            return;
        }
        self.collector_started = true;
        let (exec, ctx, networks) = (self.exec.clone(), self.ctx.clone(), self.networks.clone());
        self.jobs.spawn(collect_networks(exec, ctx, networks));
        if let Some(dp) = self.dataplane.take() {
            self.jobs.spawn(run_dataplane(dp, self.networks.clone()));
        }
    }

    /// A new network view: the data plane follows it, and runners creating
    /// a network use it.
    pub fn set_view(&mut self, view: stackd_core::net::NodeView) {
        self.start_background();
        self.networks.set_view(view);
    }

    /// Aborts every runner and background job; containers are left as they are.
    pub async fn shutdown(&mut self) {
        self.tasks.clear();
        self.jobs.shutdown().await;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs.abort_all();
    }
}

/// Stops and removes this node's containers whose task is not in `keep`.
async fn collect(exec: Executor, ctx: Arc<ContainerContext>, keep: &BTreeSet<TaskId>) {
    let containers = match exec.list_managed(&ctx).await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "garbage collection: cannot list containers");
            return;
        }
    };
    let strays = containers.into_iter().filter(|c| !keep.contains(&c.task_id)).map(|c| {
        let exec = &exec;
        async move {
            info!(container = %c.id, task = %c.task_id, "garbage collection: removing the container of an unassigned task");
            // No grace given: the container's own stop timeout (its task's grace period) applies.
            if let Err(e) = exec.stop_and_remove(&c.id, None, None).await {
                warn!(container = %c.id, error = %e, "garbage collection: cannot remove container");
            }
        }
    });
    futures_util::future::join_all(strays).await;
}

/// How often the data plane is checked against the view without a new
/// view: a network's bridge appears with its first container, and a
/// command that failed is retried.
const DATAPLANE_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// What the DNS server needs of the node's tasks: their addresses, and
/// their `dns:` servers by stack (port 53; names that are not addresses are
/// left out: Docker takes addresses only there too).
fn own(tasks: impl Iterator<Item = Task>) -> Own {
    let tasks: Vec<Task> = tasks.collect();
    let addresses = crate::dns::own_addresses(tasks.iter().map(|t| &t.addresses));
    let mut upstreams: std::collections::BTreeMap<String, Vec<std::net::SocketAddr>> = Default::default();
    for t in &tasks {
        for server in &t.template.dns {
            if let Ok(ip) = server.parse::<std::net::IpAddr>() {
                let list = upstreams.entry(t.stack.clone()).or_default();
                let addr = std::net::SocketAddr::new(ip, 53);
                if !list.contains(&addr) {
                    list.push(addr);
                }
            }
        }
    }
    Own { addresses, upstreams }
}

/// Keeps the kernel's VXLAN devices and entries, and the node's DNS
/// server, in line with the view.
async fn run_dataplane(mut dp: crate::dataplane::DataPlane, networks: Arc<Networks>) {
    let mut dns = crate::dns::DnsServer::new(crate::dns::DnsConfig::default());
    let mut upstreams_set: std::collections::BTreeMap<String, Vec<std::net::SocketAddr>> = Default::default();
    loop {
        let view = networks.view();
        match dp.sync(&view).await {
            Ok(0) => {}
            Ok(n) => debug!(commands = n, "data plane updated"),
            Err(e) => warn!(error = %e, "data plane: not all of the view could be applied; retrying"),
        }
        networks.set_proxied(dp.proxy_connections());
        let own = networks.own();
        for (stack, servers) in &own.upstreams {
            if upstreams_set.get(stack) != Some(servers) {
                dns.set_stack_upstreams(stack, servers);
            }
        }
        for stack in upstreams_set.keys().filter(|s| !own.upstreams.contains_key(*s)) {
            dns.set_stack_upstreams(stack, &[]);
        }
        upstreams_set = own.upstreams.clone();
        // A listener whose bridge does not exist yet fails: retried with the next pass.
        if let Err(e) = dns.update(&view, &own.addresses) {
            debug!(error = %e, "DNS: not every listener is up yet");
        }
        let _ = tokio::time::timeout(DATAPLANE_PERIOD, networks.view_changed()).await;
    }
}

/// The network collector: on each wake-up, after a short delay, removes
/// this cluster's networks that no task of the node wants.
async fn collect_networks(exec: Executor, ctx: Arc<ContainerContext>, networks: Arc<Networks>) {
    loop {
        networks.collection_asked().await;
        tokio::time::sleep(NETWORK_GC_DELAY).await;
        let wanted = networks.wanted();
        match exec.remove_unused_networks(&ctx, &wanted).await {
            Ok(removed) => {
                for name in removed {
                    info!(network = %name, "garbage collection: removed a network no task uses");
                }
            }
            Err(e) => warn!(error = %e, "garbage collection: cannot list networks"),
        }
    }
}

#[cfg(test)]
mod tests {
    use stackd_core::model::{DesiredState, NetworkAttachment, NetworkSpec, TaskState, TaskStatus, TaskTemplate};

    use super::*;

    fn task(id: &str, rev: u64) -> Task {
        Task {
            id: id.into(),
            service_id: "s".into(),
            service_name: "st_web".into(),
            stack: "st".into(),
            slot: 1,
            node_id: Some("n".into()),
            revision: rev,
            template: TaskTemplate::default(),
            desired_state: DesiredState::Running,
            status: TaskStatus::default(),
            unplaceable: String::new(),
            created_at: 0,
            addresses: Default::default(),
            image: String::new(),
        }
    }

    fn ids(list: &[&str]) -> BTreeSet<TaskId> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn task_ids(tasks: &[Task]) -> Vec<&str> {
        tasks.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn full_set_replaces() {
        let a = Assignment { full: true, tasks: vec![task("b", 1), task("c", 1)], ..Default::default() };
        let p = plan(&ids(&["a", "b"]), &a);
        assert_eq!(task_ids(&p.start), vec!["c"]);
        assert_eq!(task_ids(&p.update), vec!["b"]);
        assert_eq!(p.remove, vec!["a".to_string()]);
    }

    #[test]
    fn empty_full_set_removes_everything() {
        let p = plan(&ids(&["a", "b"]), &Assignment { full: true, ..Default::default() });
        assert!(p.start.is_empty() && p.update.is_empty());
        assert_eq!(p.remove, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn partial_set_adds_updates_and_removes() {
        let a = Assignment {
            full: false,
            tasks: vec![task("a", 2), task("d", 1)],
            removed: vec!["b".into(), "zz".into(), "b".into()],
            ..Default::default()
        };
        let p = plan(&ids(&["a", "b", "c"]), &a);
        assert_eq!(task_ids(&p.start), vec!["d"]);
        assert_eq!(task_ids(&p.update), vec!["a"]);
        assert_eq!(p.remove, vec!["b".to_string()], "unknown ids are ignored, duplicates once, others kept");
    }

    #[test]
    fn a_task_sent_twice_counts_once_with_its_last_version() {
        let a = Assignment { full: false, tasks: vec![task("a", 1), task("a", 2)], ..Default::default() };
        let p = plan(&ids(&[]), &a);
        assert_eq!(p.start.len(), 1);
        assert_eq!(p.start[0].revision, 2);
    }

    #[test]
    fn a_task_both_sent_and_removed_stays() {
        let a = Assignment { full: false, tasks: vec![task("a", 2)], removed: vec!["a".into()], ..Default::default() };
        let p = plan(&ids(&["a"]), &a);
        assert!(p.remove.is_empty());
        assert_eq!(task_ids(&p.update), vec!["a"]);
    }

    fn on(mut t: Task, networks: &[&str]) -> Task {
        t.template.networks =
            networks.iter().map(|n| NetworkAttachment { network: n.to_string(), aliases: vec![] }).collect();
        t
    }

    #[test]
    fn live_tasks_want_their_networks() {
        let running = on(task("a", 1), &["shop_back", "shop_front"]);
        let mut stopping = on(task("b", 1), &["shop_db"]);
        stopping.desired_state = DesiredState::Shutdown;
        stopping.status.state = TaskState::Running;
        let mut stopped = on(task("c", 1), &["shop_old"]);
        stopped.desired_state = DesiredState::Shutdown;
        stopped.status.state = TaskState::Shutdown;
        let wanted = wanted_networks([&running, &stopping, &stopped]);
        let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
        assert_eq!(names, ["shop_back", "shop_db", "shop_front"]);
    }

    #[test]
    fn volume_specs_are_kept_per_stack_and_replaced_by_a_full_set() {
        let vol = |stack: &str, name: &str| StackVolume {
            stack: stack.into(),
            key: "data".into(),
            spec: stackd_core::model::VolumeSpec { name: name.into(), ..Default::default() },
        };
        let n = Networks::default();
        n.record_volumes(true, vec![vol("shop", "shop_data"), vol("blog", "shared")]);
        n.record_volumes(false, vec![vol("shop", "shared")]);
        assert!(n.volume("shop", "shop_data").is_some());
        assert_eq!(n.volume("blog", "shared").map(|s| s.stack), Some("blog".to_string()));
        assert_eq!(n.volume("shop", "shared").map(|s| s.stack), Some("shop".to_string()));
        n.record_volumes(true, vec![vol("blog", "shared")]);
        assert_eq!(n.volume("shop", "shop_data"), None);
    }

    #[test]
    fn network_specs_are_kept_per_stack_and_replaced_by_a_full_set() {
        let net = |stack: &str, name: &str| StackNetwork {
            stack: stack.into(),
            key: "back".into(),
            spec: NetworkSpec { name: name.into(), ..NetworkSpec::default() },
        };
        let n = Networks::default();
        n.record(true, vec![net("shop", "shop_back"), net("blog", "shared")]);
        n.record(false, vec![net("shop", "shared")]);
        assert!(n.get("shop", "shop_back").is_some());
        assert_eq!(n.get("blog", "shared").map(|s| s.stack), Some("blog".to_string()));
        assert_eq!(n.get("shop", "shared").map(|s| s.stack), Some("shop".to_string()));
        assert_eq!(n.get("blog", "shop_back"), None);
        n.record(true, vec![net("blog", "shared")]);
        assert_eq!(n.get("shop", "shop_back"), None);
        // Dropping a wanted network asks for a collection; adding one does not.
        assert!(!n.want(BTreeSet::from(["a".to_string()])));
        assert!(!n.want(BTreeSet::from(["a".to_string(), "b".to_string()])));
        assert!(n.want(BTreeSet::from(["b".to_string()])));
    }

    #[test]
    fn unreadable_tasks_are_never_removed() {
        let a = Assignment { full: true, unreadable: vec!["a".into()], ..Default::default() };
        let p = plan(&ids(&["a", "b"]), &a);
        assert_eq!(p.remove, vec!["b".to_string()]);
    }
}
