//! `stackctl deploy --dry-run`: compares the loaded stack with the services
//! running in the cluster and prints what a deploy would change. Sends
//! nothing.

use anyhow::Result;
use serde::Serialize;
use stackd_core::diff::{self, NetworksDiff, ServiceDiff};
use stackd_core::model::{ServiceSpec, Stack, StackSpec};
use stackd_core::state::kept_networks;
use stackd_proto::v1;

use crate::args::{Global, Output};
use crate::client::status;
use crate::inspect::summary;
use crate::output::print_document;

/// What a deploy would do.
#[derive(Debug, Default, Serialize)]
struct Plan {
    create: Vec<String>,
    update: Vec<Update>,
    remove: Vec<String>,
    unchanged: Vec<String>,
    /// Services of the stack the files no longer declare, kept without --prune.
    kept: Vec<String>,
    /// Networks the deploy adds, changes or drops.
    networks: NetworksDiff,
}

#[derive(Debug, Serialize)]
struct Update {
    service: String,
    #[serde(flatten)]
    diff: ServiceDiff,
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}

/// Prints the changes deploying `spec` would make.
pub async fn show(g: &Global, c: &mut crate::client::Client, spec: &StackSpec, prune: bool) -> Result<i32> {
    let current = c
        .list_services(v1::ListServicesRequest { stack: spec.name.clone(), stale: g.stale })
        .await
        .map_err(status)?
        .into_inner()
        .services;
    let mut existing = std::collections::BTreeMap::new();
    for s in current {
        let (svc, _) = summary(s)?;
        existing.insert(svc.spec.name.clone(), svc);
    }
    let stacks = c.list_stacks(v1::ListStacksRequest { stale: g.stale }).await.map_err(status)?.into_inner().stacks;
    let current = stacks.into_iter().filter_map(|s| s.stack).find(|s| s.name == spec.name);
    let networks = match current {
        Some(s) => Stack::try_from(s)?.networks,
        None => Default::default(),
    };
    // What the deploy will leave: without --prune, the networks of services it keeps stay.
    let after = kept_networks(Some(&networks), existing.values().map(|s| &s.spec), spec, prune);
    let mut plan = Plan { networks: diff::networks(&networks, &after), ..Plan::default() };
    for (name, new) in &spec.services {
        let full = format!("{}_{name}", spec.name);
        match existing.get(name) {
            None => plan.create.push(full),
            // Read APIs leave secrets' digests out: compare without them.
            // What the deploy makes of it: the force counter and an
            // autoscaled count kept (as the manager applies it).
            Some(old) => match diff::service(&old.spec, &{
                let d = new.as_deployed_over(&old.spec);
                ServiceSpec { task: d.task.redacted(), ..d }
            }) {
                None => plan.unchanged.push(full),
                Some(d) => plan.update.push(Update { service: full, diff: d }),
            },
        }
    }
    for (name, svc) in &existing {
        if !spec.services.contains_key(name) {
            if prune { plan.remove.push(svc.name.clone()) } else { plan.kept.push(svc.name.clone()) }
        }
    }
    match g.output {
        Output::Json | Output::Yaml => print_document(&plan, g.output)?,
        Output::Table => {
            for s in &plan.create {
                out!("+ create {s}");
            }
            for u in &plan.update {
                let how = if u.diff.reruns_job {
                    "the job runs again"
                } else if u.diff.replaces_tasks {
                    "rolling update: tasks are replaced"
                } else {
                    "tasks are kept"
                };
                out!("~ update {} ({how})", u.service);
                for ch in &u.diff.changes {
                    out!("    {}: {} → {}", ch.path, compact(&ch.from), compact(&ch.to));
                }
            }
            for s in &plan.remove {
                out!("- remove {s}");
            }
            let engine_name = |key: &str| spec.networks.get(key).or_else(|| networks.get(key)).map_or("", |n| &n.name);
            for k in &plan.networks.create {
                out!("+ network {k} ({})", engine_name(k));
            }
            for u in &plan.networks.update {
                out!(
                    "~ network {} (applies to networks created from now on; existing ones keep their settings)",
                    u.network
                );
                for ch in &u.changes {
                    out!("    {}: {} → {}", ch.path, compact(&ch.from), compact(&ch.to));
                }
            }
            for k in &plan.networks.remove {
                out!("- network {k} ({}): removed on each node once no task uses it", engine_name(k));
            }
            for s in &plan.unchanged {
                out!("= unchanged {s}");
            }
            for s in &plan.kept {
                out!("  {s} is not in the files; it is kept (--prune removes it)");
            }
            if !spec.secrets.is_empty() {
                out!(
                    "Secret contents are not compared (the cluster never shows them): a changed secret replaces its services' tasks when deployed."
                );
            }
            out!("Dry run: nothing was sent.");
        }
    }
    Ok(crate::EXIT_OK)
}
