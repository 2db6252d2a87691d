//! Listings and inspection.

use anyhow::{Context, Result};
use serde::Serialize;
use stackd_core::model::{self, Service, ServiceMode, Task};
use stackd_proto::v1;

use crate::args::{Global, Output};
use crate::client::{connect, status};
use crate::output::{age, name as serde_name, print_document, print_rows};

/// A row of `stackctl ps`.
#[derive(Serialize)]
pub struct TaskRow {
    id: String,
    name: String,
    image: String,
    node: String,
    desired_state: String,
    current_state: String,
    updated_at: u64,
    error: String,
    exit_code: Option<i64>,
    container_id: String,
    slot: u64,
    revision: u64,
}

fn task_row(t: &Task, node_names: &std::collections::HashMap<String, String>, history: bool) -> TaskRow {
    let slot = if t.slot == 0 {
        t.node_id.as_deref().map(|n| model::prefix(n, 12)).unwrap_or("?").to_string()
    } else {
        t.slot.to_string()
    };
    let name = format!("{}{}.{}", if history { "\\_ " } else { "" }, t.service_name, slot);
    let node = t.node_id.as_ref().map(|n| node_names.get(n).cloned().unwrap_or_else(|| n.clone())).unwrap_or_default();
    let mut error = t.status.err.clone();
    if error.is_empty() && !t.unplaceable.is_empty() {
        error = format!("no suitable node ({})", t.unplaceable);
    }
    TaskRow {
        id: model::prefix(&t.id, 12).to_string(),
        name,
        image: t.template.image.clone(),
        node,
        desired_state: serde_name(&t.desired_state),
        current_state: t.status.state.to_string(),
        updated_at: t.status.timestamp,
        error,
        exit_code: t.status.exit_code,
        container_id: model::prefix(&t.status.container_id, 12).to_string(),
        slot: t.slot,
        revision: t.revision,
    }
}

/// `stackctl ps STACK|SERVICE`.
pub async fn ps(g: &Global, target: &str) -> Result<i32> {
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
    let resp = c
        .read(|mut c| {
            let req = req.clone();
            async move { c.list_tasks(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut tasks: Vec<Task> = resp.tasks.into_iter().map(Task::try_from).collect::<Result<_, _>>()?;
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
        rows.push(task_row(t, &resp.node_names, history));
        prev = Some(key);
    }
    print_rows(
        &rows,
        &["id", "name", "image", "node", "desired_state", "current_state", "updated_at", "error"],
        g.output,
    )?;
    Ok(0)
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
    /// `running/desired`, or for a job `completed/desired completed`.
    replicas: String,
    image: String,
    revision: u64,
    update_state: String,
    ports: String,
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
    let ports = s
        .spec
        .task
        .ports
        .iter()
        .map(|p| match p.published {
            Some(pp) => format!("{pp}->{}/{}", p.target, p.protocol.as_str()),
            None => format!("{}/{}", p.target, p.protocol.as_str()),
        })
        .collect::<Vec<_>>()
        .join(",");
    ServiceRow {
        id: model::prefix(&s.id, 12).to_string(),
        name: s.name.clone(),
        mode: s.spec.mode.name().to_string(),
        running: c.running,
        desired: c.desired,
        completed: s.spec.mode.is_job().then_some(c.completed),
        replicas: replicas(&s.spec.mode, c),
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
    print_rows(&rows, &["id", "name", "mode", "replicas", "image", "revision", "update_state", "ports"], g.output)?;
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
}

/// `stackctl service inspect SERVICE`.
pub async fn service_inspect(g: &Global, name: &str) -> Result<i32> {
    let mut c = connect(g).await?;
    let req = v1::InspectServiceRequest { service: name.to_string(), stale: g.stale };
    let resp = c
        .read(|mut c| {
            let req = req.clone();
            async move { c.inspect_service(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    let (service, c) = summary(resp.service.context("manager sent no service")?)?;
    match g.output {
        Output::Json | Output::Yaml => {
            let completed = service.spec.mode.is_job().then_some(c.completed);
            print_document(&ServiceDetail { service, running: c.running, desired: c.desired, completed }, g.output)?
        }
        Output::Table => {
            let s = &service;
            println!("ID:        {}", s.id);
            println!("Name:      {}", s.name);
            println!("Stack:     {}", s.stack);
            println!("Image:     {}", s.spec.task.image);
            println!("Mode:      {}", s.spec.mode.name());
            if s.spec.mode.is_job() {
                println!("Tasks:     {} ({} running)", replicas(&s.spec.mode, c), c.running);
            } else {
                println!("Tasks:     {}/{} running", c.running, c.desired);
            }
            println!(
                "Revision:  {} (history: {})",
                s.revision,
                s.history.iter().map(|r| r.revision.to_string()).collect::<Vec<_>>().join(", ")
            );
            println!(
                "Update:    {}{}",
                serde_name(&s.update.state),
                if s.update.message.is_empty() { String::new() } else { format!(" — {}", s.update.message) }
            );
            println!("Created:   {}", age(s.created_at));
            println!("Updated:   {}", age(s.updated_at));
            println!("Spec:\n{}", serde_json::to_string_pretty(&s.spec)?);
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
            })
        })
        .collect();
    print_rows(&rows, &["name", "services", "running", "desired", "updated_at"], g.output)?;
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
        println!("Removing service {s}");
    }
    println!("Removed stack {stack}");
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
}
