//! Field-level differences between two service specs, for
//! `stackctl deploy --dry-run`: what a deploy would change, and whether the
//! change replaces the service's tasks (its task template changed) or not
//! (replicas, policies and labels only); and the networks a deploy adds,
//! changes or drops. A job runs again after any change of its spec (a new
//! revision needs new completions).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::model::{NetworkSpec, ServiceSpec};

/// One changed field.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// Dotted path of the field, e.g. `task.image` or `mode.replicas`.
    pub path: String,
    /// The value now (`null` when the field is new).
    pub from: Value,
    /// The value after the deploy (`null` when the field goes away).
    pub to: Value,
}

/// What a deploy would do to one existing service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceDiff {
    /// The changed fields, in path order.
    pub changes: Vec<Change>,
    /// Whether the tasks are replaced (a rolling update), rather than kept.
    pub replaces_tasks: bool,
    /// Whether the service is a job after the deploy, which then runs again
    /// (every change of a job's spec does that).
    pub reruns_job: bool,
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<Change>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                walk(&p, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        _ if a == b => {}
        _ => out.push(Change { path: path.to_string(), from: a.clone(), to: b.clone() }),
    }
}

/// The differences from `old` to `new`; `None` when they are equal.
pub fn service(old: &ServiceSpec, new: &ServiceSpec) -> Option<ServiceDiff> {
    if old == new {
        return None;
    }
    let (a, b) = (serde_json::to_value(old).unwrap_or(Value::Null), serde_json::to_value(new).unwrap_or(Value::Null));
    let mut changes = Vec::new();
    walk("", &a, &b, &mut changes);
    Some(ServiceDiff { changes, replaces_tasks: old.task != new.task, reruns_job: new.mode.is_job() })
}

/// One network whose spec a deploy changes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkUpdate {
    /// Its key in the stack.
    pub network: String,
    /// The changed fields (`driver`, `labels.team`, …), in path order.
    pub changes: Vec<Change>,
}

/// What a deploy would do to the stack's networks. Networks are created on
/// a node when a task there needs them: a changed spec applies to networks
/// created from then on, not to those that exist.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NetworksDiff {
    /// Keys of the networks the deploy adds.
    pub create: Vec<String>,
    /// Networks whose spec changes.
    pub update: Vec<NetworkUpdate>,
    /// Keys of the networks the deploy drops.
    pub remove: Vec<String>,
}

impl NetworksDiff {
    /// Whether the deploy changes no network.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.remove.is_empty()
    }
}

/// The differences from the networks `old` to `new`, by key.
pub fn networks(old: &BTreeMap<String, NetworkSpec>, new: &BTreeMap<String, NetworkSpec>) -> NetworksDiff {
    let mut out = NetworksDiff::default();
    for (key, n) in new {
        match old.get(key) {
            None => out.create.push(key.clone()),
            Some(o) if o == n => {}
            Some(o) => {
                let (a, b) =
                    (serde_json::to_value(o).unwrap_or(Value::Null), serde_json::to_value(n).unwrap_or(Value::Null));
                let mut changes = Vec::new();
                walk("", &a, &b, &mut changes);
                out.update.push(NetworkUpdate { network: key.clone(), changes });
            }
        }
    }
    out.remove = old.keys().filter(|k| !new.contains_key(*k)).cloned().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointMode, ServiceMode, TaskTemplate, UpdateConfig};

    fn net(name: &str) -> NetworkSpec {
        NetworkSpec { name: name.into(), ..Default::default() }
    }

    #[test]
    fn networks_created_changed_and_dropped() {
        let old = BTreeMap::from([("back".to_string(), net("shop_back")), ("old".to_string(), net("shop_old"))]);
        let mut back = net("shop_back");
        back.internal = true;
        back.labels.insert("team".into(), "a".into());
        let new = BTreeMap::from([("back".to_string(), back), ("front".to_string(), net("shop_front"))]);
        let d = networks(&old, &new);
        assert_eq!(d.create, vec!["front"]);
        assert_eq!(d.remove, vec!["old"]);
        assert_eq!(d.update.len(), 1);
        assert_eq!(d.update[0].network, "back");
        let paths: Vec<&str> = d.update[0].changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, vec!["internal", "labels.team"]);
        assert!(!d.is_empty());
        assert!(networks(&new, &new).is_empty());
    }

    fn spec(image: &str, replicas: u64) -> ServiceSpec {
        ServiceSpec {
            autoscale: None,
            name: "web".into(),
            mode: ServiceMode::Replicated { replicas },
            task: TaskTemplate { image: image.into(), ..Default::default() },
            restart: Default::default(),
            update: Default::default(),
            rollback: UpdateConfig::rollback_default(),
            labels: Default::default(),
            endpoint_mode: Default::default(),
            depends_on: Vec::new(),
        }
    }

    #[test]
    fn equal_specs_have_no_diff() {
        assert_eq!(service(&spec("web:1", 3), &spec("web:1", 3)), None);
    }

    #[test]
    fn scaling_changes_one_field_and_keeps_the_tasks() {
        let d = service(&spec("web:1", 3), &spec("web:1", 5)).expect("a diff");
        assert_eq!(d.changes, vec![Change { path: "mode.replicas".into(), from: 3.into(), to: 5.into() }]);
        assert!(!d.replaces_tasks);
    }

    #[test]
    fn a_new_image_replaces_the_tasks() {
        let mut new = spec("web:2", 3);
        new.task.env = vec!["A=1".into()];
        let d = service(&spec("web:1", 3), &new).expect("a diff");
        let paths: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, vec!["task.env", "task.image"]);
        assert!(d.replaces_tasks);
    }

    #[test]
    fn a_mode_change_shows_both_sides() {
        let mut global = spec("web:1", 0);
        global.mode = ServiceMode::Global;
        let d = service(&spec("web:1", 2), &global).expect("a diff");
        let paths: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, vec!["mode.kind", "mode.replicas"]);
        assert!(!d.reruns_job);
    }

    #[test]
    fn a_changed_job_runs_again_even_if_its_tasks_are_kept() {
        let mut old = spec("migrate:1", 0);
        old.mode = ServiceMode::ReplicatedJob { replicas: 1, max_concurrent: 0 };
        let mut new = old.clone();
        new.labels.insert("run".into(), "2".into());
        let d = service(&old, &new).expect("a diff");
        assert!(!d.replaces_tasks);
        assert!(d.reruns_job);
    }

    #[test]
    fn rollback_config_and_endpoint_mode_are_diffed() {
        let old = spec("web:1", 2);
        let mut new = old.clone();
        new.rollback.parallelism = 3;
        new.endpoint_mode = EndpointMode::Dnsrr;
        let d = service(&old, &new).expect("a diff");
        assert_eq!(
            d.changes,
            vec![
                Change { path: "endpoint_mode".into(), from: "vip".into(), to: "dnsrr".into() },
                Change { path: "rollback.parallelism".into(), from: 1.into(), to: 3.into() },
            ]
        );
        assert!(!d.replaces_tasks);
    }
}
