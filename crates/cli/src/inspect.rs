//! Listings and inspection.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use serde::Serialize;
use stackd_core::model::{self, PortConfig, Service, ServiceMode, Task};
use stackd_proto::v1;

use crate::addresses::{NetworkRow, PublishedRow, network_lines, network_rows, published_lines, published_rows};
use crate::args::{Global, Output};
use crate::client::{Conn, connect, status};
use crate::output::{ERROR_WIDTH, age, name as serde_name, one_line, print_document, print_listing, print_rows};

/// A row of `stackctl ps`: data (JSON and YAML print it as it is; the
/// table draws it with [`drawn_task_rows`]).
#[derive(Clone, Serialize)]
pub struct TaskRow {
    id: String,
    /// `<service>.<slot>` (global services: `<service>.<node-id-prefix>`).
    name: String,
    /// Whether this is its slot's newest task; false for the history
    /// below it (which the table draws as `\_ name`).
    current: bool,
    image: String,
    node: String,
    desired_state: String,
    current_state: String,
    /// The container's health (`starting`, `healthy`, `unhealthy`), empty
    /// without a health check.
    health: String,
    /// What the task is doing, as the agent last said it (`starting`,
    /// `waiting: host port 8080/tcp is held by …`).
    message: String,
    updated_at: u64,
    /// The whole error, as the agent reported it (lines and all); for a
    /// task that has not started yet, why it waits (no suitable node, a
    /// host port still held).
    error: String,
    exit_code: Option<i64>,
    container_id: String,
    slot: u64,
    revision: u64,
    /// The container's address on each network stackd manages, by network.
    addresses: BTreeMap<String, Ipv4Addr>,
}

fn task_row(
    t: &Task,
    node_names: &std::collections::HashMap<String, String>,
    current: bool,
    no_trunc: bool,
) -> TaskRow {
    let slot = if t.slot == 0 {
        t.node_id.as_deref().map(|n| model::prefix(n, 12)).unwrap_or("?").to_string()
    } else {
        t.slot.to_string()
    };
    let name = format!("{}.{}", t.service_name, slot);
    let node = t.node_id.as_ref().map(|n| node_names.get(n).cloned().unwrap_or_else(|| n.clone())).unwrap_or_default();
    let mut error = t.status.err.clone();
    if error.is_empty() && !t.unplaceable.is_empty() {
        error = format!("no suitable node ({})", t.unplaceable);
    }
    if error.is_empty() && t.status.state < model::TaskState::Running && t.status.message.starts_with("waiting") {
        error = t.status.message.clone();
    }
    let id_len = if no_trunc { usize::MAX } else { 12 };
    TaskRow {
        id: model::prefix(&t.id, id_len).to_string(),
        name,
        current,
        image: t.template.image.clone(),
        node,
        desired_state: serde_name(&t.desired_state),
        current_state: t.status.state.to_string(),
        health: t.status.health.clone(),
        message: t.status.message.clone(),
        updated_at: t.status.timestamp,
        error,
        exit_code: t.status.exit_code,
        container_id: model::prefix(&t.status.container_id, id_len).to_string(),
        slot: t.slot,
        revision: t.revision,
        addresses: t.addresses.clone(),
    }
}

/// The rows of `stackctl ps` as the table shows them: history rows named
/// `\_ name` below their slot's newest task, errors on one line and, unless
/// `no_trunc`, cut to [`ERROR_WIDTH`] characters.
fn drawn_task_rows(rows: &[TaskRow], no_trunc: bool) -> Vec<TaskRow> {
    rows.iter()
        .map(|r| {
            let mut d = r.clone();
            if !r.current {
                d.name = format!("\\_ {}", r.name);
            }
            d.error = one_line(&r.error, (!no_trunc).then_some(ERROR_WIDTH));
            d
        })
        .collect()
}

/// `stackctl ps STACK|SERVICE`.
pub async fn ps(g: &Global, target: &str, no_trunc: bool) -> Result<i32> {
    let mut c = connect(g).await?;
    // A name with a known service wins; otherwise it is a stack.
    let probe = v1::InspectServiceRequest { service: target.to_string(), stale: g.stale };
    let is_service = c
        .read(|mut c| {
            let req = probe.clone();
            async move { c.inspect_service(req).await }
        })
        .await
        .is_ok();
    let req = if is_service {
        v1::ListTasksRequest { service: target.to_string(), stale: g.stale, ..Default::default() }
    } else {
        v1::ListTasksRequest { stack: target.to_string(), stale: g.stale, ..Default::default() }
    };
    let (tasks, node_names) = fetch_tasks(&mut c, req).await?;
    if tasks.is_empty() && !is_service {
        let stacks = c
            .read(|mut c| async move { c.list_stacks(v1::ListStacksRequest { stale: g.stale }).await })
            .await
            .map_err(status)?
            .into_inner();
        if !stacks.stacks.iter().any(|s| s.stack.as_ref().is_some_and(|st| st.name == target)) {
            anyhow::bail!("no stack or service named {target:?}");
        }
    }
    print_tasks(g, tasks, &node_names, no_trunc)?;
    Ok(0)
}

/// Tasks as `ps` and `node ps` show them: by service and slot, newest first
/// within a slot, its history below it.
pub(crate) fn print_tasks(
    g: &Global,
    mut tasks: Vec<Task>,
    node_names: &std::collections::HashMap<String, String>,
    no_trunc: bool,
) -> Result<()> {
    // Newest first within a slot; history below it.
    tasks.sort_by(|a, b| {
        (&a.service_name, a.slot, &a.node_id, std::cmp::Reverse(a.created_at)).cmp(&(
            &b.service_name,
            b.slot,
            &b.node_id,
            std::cmp::Reverse(b.created_at),
        ))
    });
    let mut rows = Vec::with_capacity(tasks.len());
    let mut prev: Option<(String, u64, Option<String>)> = None;
    for t in &tasks {
        let key = (t.service_name.clone(), t.slot, t.node_id.clone());
        let history = prev.as_ref() == Some(&key);
        rows.push(task_row(t, node_names, !history, no_trunc));
        prev = Some(key);
    }
    print_listing(
        &rows,
        || drawn_task_rows(&rows, no_trunc),
        &["id", "name", "image", "node", "desired_state", "current_state", "updated_at", "error"],
        g.output,
    )
}

/// A row of `stackctl service ls`.
#[derive(Serialize)]
pub struct ServiceRow {
    id: String,
    name: String,
    mode: String,
    running: u64,
    desired: u64,
    /// A job's completions at its current revision; absent for services.
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<u64>,
    /// `running/desired`, or for a job `completed/desired completed`; for
    /// an autoscaled service followed by ` (auto 2→5)`, its last change.
    replicas: String,
    /// The autoscaling policy, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    autoscale: Option<stackd_core::autoscale::Policy>,
    image: String,
    revision: u64,
    update_state: String,
    /// The published and exposed ports, as the stack file's long syntax has them.
    ports: Vec<PortConfig>,
}

/// A row of `stackctl service ls` as the table shows it.
#[derive(Serialize)]
struct DrawnServiceRow<'a> {
    #[serde(flatten)]
    row: &'a ServiceRow,
    /// `8080->80/tcp,9000/udp`, shadowing the structured ports.
    ports: String,
}

/// `8080->80/tcp`, or `80/tcp` when not published.
fn port_text(p: &PortConfig) -> String {
    match p.published {
        Some(pp) => format!("{pp}->{}/{}", p.target, p.protocol.as_str()),
        None => format!("{}/{}", p.target, p.protocol.as_str()),
    }
}

fn drawn_service_rows(rows: &[ServiceRow]) -> Vec<DrawnServiceRow<'_>> {
    rows.iter()
        .map(|row| DrawnServiceRow { row, ports: row.ports.iter().map(port_text).collect::<Vec<_>>().join(",") })
        .collect()
}

/// How many tasks of a service run, are wanted and (for jobs) completed, as the manager counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tasks of the current spec that run.
    pub running: u64,
    /// Tasks wanted; for a job, completions wanted.
    pub desired: u64,
    /// A job's completions at its current revision.
    pub completed: u64,
}

/// `3/3`, or for a job `2/3 completed`.
pub fn replicas(mode: &ServiceMode, c: Counts) -> String {
    if mode.is_job() {
        format!("{}/{} completed", c.completed, c.desired)
    } else {
        format!("{}/{}", c.running, c.desired)
    }
}

fn service_row(s: &Service, c: Counts) -> ServiceRow {
    let ports = s.spec.task.ports.clone();
    ServiceRow {
        id: model::prefix(&s.id, 12).to_string(),
        name: s.name.clone(),
        mode: s.spec.mode.name().to_string(),
        running: c.running,
        desired: c.desired,
        completed: s.spec.mode.is_job().then_some(c.completed),
        replicas: replicas(&s.spec.mode, c) + &crate::autoscale::replicas_tail(s),
        autoscale: s.spec.autoscale,
        image: s.spec.task.image.clone(),
        revision: s.revision,
        update_state: serde_name(&s.update.state),
        ports,
    }
}

/// Converts a service summary from the wire.
pub fn summary(s: v1::ServiceSummary) -> Result<(Service, Counts)> {
    let svc = Service::try_from(s.service.context("manager sent a summary without a service")?)?;
    Ok((svc, Counts { running: s.running, desired: s.desired, completed: s.completed }))
}

/// The tasks `req` selects (with the names of their nodes by id), one
/// `ListTasks` on the next manager that answers.
pub(crate) async fn fetch_tasks(
    c: &mut Conn,
    req: v1::ListTasksRequest,
) -> Result<(Vec<Task>, std::collections::HashMap<String, String>)> {
    let resp = c
        .read(|mut c| {
            let req = req.clone();
            async move { c.list_tasks(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    let tasks = resp.tasks.into_iter().map(Task::try_from).collect::<Result<_, _>>()?;
    Ok((tasks, resp.node_names))
}

/// `stackctl service ls [STACK]`.
pub async fn service_ls(g: &Global, stack: Option<&str>) -> Result<i32> {
    let mut c = connect(g).await?;
    let req = v1::ListServicesRequest { stack: stack.unwrap_or_default().to_string(), stale: g.stale };
    let resp = c
        .read(|mut c| {
            let req = req.clone();
            async move { c.list_services(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut rows = Vec::new();
    for s in resp.services {
        let (svc, counts) = summary(s)?;
        rows.push(service_row(&svc, counts));
    }
    print_listing(
        &rows,
        || drawn_service_rows(&rows),
        &["id", "name", "mode", "replicas", "image", "revision", "update_state", "ports"],
        g.output,
    )?;
    Ok(0)
}

/// What `service inspect --output json` prints.
#[derive(Serialize)]
struct ServiceDetail {
    #[serde(flatten)]
    service: Service,
    running: u64,
    desired: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<u64>,
    /// Each network it joins: its virtual address there and its endpoints.
    networks: Vec<NetworkRow>,
    /// Its published ports and where they are served.
    published: Vec<PublishedRow>,
}

/// The manager's answer to `InspectService` for `name` (full name or id).
pub(crate) async fn fetch_service(c: &mut Conn, name: &str, stale: bool) -> Result<v1::InspectServiceResponse> {
    let req = v1::InspectServiceRequest { service: name.to_string(), stale };
    Ok(c.read(|mut c| {
        let req = req.clone();
        async move { c.inspect_service(req).await }
    })
    .await
    .map_err(status)?
    .into_inner())
}

/// `stackctl service inspect SERVICE`.
pub async fn service_inspect(g: &Global, name: &str) -> Result<i32> {
    let mut c = connect(g).await?;
    let resp = fetch_service(&mut c, name, g.stale).await?;
    let (service, c) = summary(resp.service.context("manager sent no service")?)?;
    let networks = network_rows(&service.name, resp.networks);
    let published = published_rows(resp.published)?;
    match g.output {
        Output::Json | Output::Yaml => {
            let completed = service.spec.mode.is_job().then_some(c.completed);
            let detail =
                ServiceDetail { service, running: c.running, desired: c.desired, completed, networks, published };
            print_document(&detail, g.output)?
        }
        Output::Table => {
            let s = &service;
            out!("ID:        {}", s.id);
            out!("Name:      {}", s.name);
            out!("Stack:     {}", s.stack);
            out!("Image:     {}", s.spec.task.image);
            match &s.image {
                stackd_core::model::ImagePin::Digest { reference } => out!("Runs:      {reference}"),
                stackd_core::model::ImagePin::Pending => out!("Runs:      (resolving the tag to a digest)"),
                stackd_core::model::ImagePin::Tag { reason } => out!("Runs:      the tag ({reason})"),
            }
            out!("Mode:      {}", s.spec.mode.name());
            if s.spec.mode.is_job() {
                out!("Tasks:     {} ({} running)", replicas(&s.spec.mode, c), c.running);
            } else {
                out!("Tasks:     {}/{} running", c.running, c.desired);
            }
            out!(
                "Revision:  {} (history: {})",
                s.revision,
                s.history.iter().map(|r| r.revision.to_string()).collect::<Vec<_>>().join(", ")
            );
            out!(
                "Update:    {}{}",
                serde_name(&s.update.state),
                if s.update.message.is_empty() { String::new() } else { format!(" — {}", s.update.message) }
            );
            out!("Created:   {}", age(s.created_at));
            out!("Updated:   {}", age(s.updated_at));
            for l in crate::autoscale::inspect_lines(s, age) {
                out!("{l}");
            }
            out!("Endpoint:  {}", s.spec.endpoint_mode.as_str());
            for l in network_lines(s.spec.endpoint_mode, &networks).iter().chain(&published_lines(&published)) {
                out!("{l}");
            }
            out!("Spec:\n{}", serde_json::to_string_pretty(&s.spec)?);
        }
    }
    Ok(0)
}

/// A row of `stackctl stack ls`.
#[derive(Serialize)]
struct StackRow {
    name: String,
    services: u64,
    running: u64,
    desired: u64,
    updated_at: u64,
    /// The registries the stack holds credentials for (`--with-registry-auth`),
    /// comma-separated: names only, never the credentials.
    registries: String,
}

/// `stackctl stack ls`.
pub async fn stack_ls(g: &Global) -> Result<i32> {
    let mut c = connect(g).await?;
    let resp = c
        .read(|mut c| async move { c.list_stacks(v1::ListStacksRequest { stale: g.stale }).await })
        .await
        .map_err(status)?
        .into_inner();
    let rows: Vec<StackRow> = resp
        .stacks
        .into_iter()
        .filter_map(|s| {
            let st = s.stack?;
            Some(StackRow {
                name: st.name,
                services: s.services,
                running: s.tasks_running,
                desired: s.tasks_desired,
                updated_at: st.updated_at,
                registries: st.registries.join(","),
            })
        })
        .collect();
    print_rows(&rows, &["name", "services", "running", "desired", "updated_at", "registries"], g.output)?;
    Ok(0)
}

/// `stackctl stack rm STACK`.
pub async fn stack_rm(g: &Global, stack: &str) -> Result<i32> {
    let mut c = connect(g).await?;
    let resp = c
        .write(|mut c| async move { c.remove_stack(v1::RemoveStackRequest { name: stack.to_string() }).await })
        .await
        .map_err(status)?
        .into_inner();
    for s in &resp.removed_services {
        out!("Removing service {s}");
    }
    out!("Removed stack {stack}");
    Ok(0)
}

/// A row of `stackctl node ls`.
#[derive(Serialize)]
struct NodeRow {
    id: String,
    name: String,
    addr: String,
    role: String,
    availability: String,
    state: String,
    engine_version: String,
    /// Managers only: whether it leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<bool>,
    /// Managers only: whether the leader hears from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    reachable: Option<bool>,
}

/// `stackctl node ls`.
pub async fn node_ls(g: &Global) -> Result<i32> {
    let mut c = connect(g).await?;
    let resp = c
        .read(|mut c| async move { c.list_nodes(v1::ListNodesRequest { stale: g.stale }).await })
        .await
        .map_err(status)?
        .into_inner();
    let mut rows = Vec::new();
    for n in resp.nodes {
        let n = model::Node::try_from(n)?;
        let raft = resp.managers.iter().find(|m| m.node_id == n.id);
        let manager = n.role == model::NodeRole::Manager;
        rows.push(NodeRow {
            leader: manager.then(|| raft.is_some_and(|m| m.leader)),
            reachable: manager.then(|| raft.is_some_and(|m| m.reachable)),
            id: n.id,
            name: n.name,
            addr: n.addr,
            role: serde_name(&n.role),
            availability: serde_name(&n.availability),
            state: serde_name(&n.state),
            engine_version: n.engine_version,
        });
    }
    print_rows(
        &rows,
        &["id", "name", "addr", "role", "availability", "state", "leader", "reachable", "engine_version"],
        g.output,
    )?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_column_counts_running_tasks_or_a_jobs_completions() {
        let c = Counts { running: 1, desired: 3, completed: 2 };
        assert_eq!(replicas(&ServiceMode::Replicated { replicas: 3 }, c), "1/3");
        assert_eq!(replicas(&ServiceMode::Global, c), "1/3");
        assert_eq!(replicas(&ServiceMode::ReplicatedJob { replicas: 3, max_concurrent: 0 }, c), "2/3 completed");
        assert_eq!(replicas(&ServiceMode::GlobalJob, c), "2/3 completed");
    }

    fn failed_task(created_at: u64, err: &str) -> Task {
        let mut t = Task {
            id: format!("task{created_at:020}"),
            service_id: "svc".into(),
            service_name: "shop_web".into(),
            stack: "shop".into(),
            slot: 1,
            node_id: Some("node-1".into()),
            revision: 1,
            template: model::TaskTemplate::default(),
            desired_state: model::DesiredState::Shutdown,
            status: model::TaskStatus::default(),
            unplaceable: String::new(),
            created_at,
            addresses: Default::default(),
            image: String::new(),
        };
        t.status.err = err.to_string();
        t
    }

    #[test]
    fn ps_json_is_data_and_the_table_draws_it() {
        let names = std::collections::HashMap::new();
        let probe = "unhealthy: wget: server returned error: HTTP/1.1 500 Internal Server Error\nline 2 of the probe's output, long enough to be cut\n";
        let rows = vec![
            task_row(&failed_task(2, ""), &names, true, false),
            task_row(&failed_task(1, probe), &names, false, false),
        ];
        let json = serde_json::to_value(&rows).expect("json");
        assert_eq!(json[0]["name"], "shop_web.1");
        assert_eq!(json[0]["current"], true);
        assert_eq!(json[1]["name"], "shop_web.1", "no tree glyph in JSON");
        assert_eq!(json[1]["current"], false);
        assert_eq!(json[1]["error"], probe, "JSON has the whole error");

        let drawn = serde_json::to_value(drawn_task_rows(&rows, false)).expect("json");
        assert_eq!(drawn[0]["name"], "shop_web.1");
        assert_eq!(drawn[1]["name"], "\\_ shop_web.1");
        let cut = drawn[1]["error"].as_str().expect("error");
        assert!(!cut.contains('\n') && cut.ends_with('…') && cut.chars().count() == ERROR_WIDTH, "{cut}");
        let whole = serde_json::to_value(drawn_task_rows(&rows, true)).expect("json");
        let whole = whole[1]["error"].as_str().expect("error");
        assert!(!whole.contains('\n') && whole.ends_with("long enough to be cut"), "{whole}");
    }

    #[test]
    fn ps_json_has_the_tasks_addresses() {
        let names = std::collections::HashMap::new();
        let mut t = failed_task(1, "");
        t.addresses.insert("shop_back".into(), Ipv4Addr::new(10, 192, 0, 2));
        let json = serde_json::to_value(vec![task_row(&t, &names, true, false)]).expect("json");
        assert_eq!(json[0]["addresses"], serde_json::json!({"shop_back": "10.192.0.2"}));
        let bare = serde_json::to_value(vec![task_row(&failed_task(2, ""), &names, true, false)]).expect("json");
        assert_eq!(bare[0]["addresses"], serde_json::json!({}));
    }

    #[test]
    fn no_trunc_shows_whole_ids() {
        let names = std::collections::HashMap::new();
        let t = failed_task(1, "");
        assert_eq!(task_row(&t, &names, true, false).id.len(), 12);
        assert_eq!(task_row(&t, &names, true, true).id, t.id);
    }

    #[test]
    fn service_ls_json_has_structured_ports_and_the_table_a_text() {
        let file = stackd_core::loader::SourceFile {
            name: "stack.yml".into(),
            text: "services:\n  web:\n    image: web:1\n    ports: [\"8080:80\", \"53/udp\"]\n".into(),
        };
        let loaded = stackd_core::loader::load("shop", &[file], &Default::default()).expect("stack loads");
        let spec = loaded.spec.services["web"].clone();
        let svc = Service::new("svc1".into(), "shop", spec, 0);
        let rows = vec![service_row(&svc, Counts::default())];
        let json = serde_json::to_value(&rows).expect("json");
        assert_eq!(json[0]["ports"][0]["published"], 8080);
        assert_eq!(json[0]["ports"][0]["target"], 80);
        assert_eq!(json[0]["ports"][1]["protocol"], "udp");
        let drawn = serde_json::to_value(drawn_service_rows(&rows)).expect("json");
        assert_eq!(drawn[0]["ports"], "8080->80/tcp,53/udp");
        assert_eq!(drawn[0]["name"], "shop_web");
    }
}
