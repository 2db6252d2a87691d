//! [`Tasks`]: the state's tasks by id, in a persistent map, so that a clone
//! of the state is cheap and a change to a cloned state copies only what it
//! touches.
//!
//! The state machine keeps the state in an `Arc` and the controller loops
//! compute on a snapshot of it (another reference) without the lock. An
//! apply that runs while a snapshot is held copies the state (copy on
//! write). With a `BTreeMap` of 100,000 tasks that copy took 350–500 ms on
//! Raft's apply path; with this map it copies the root-to-leaf paths of the
//! tasks the command changes (B-tree nodes of at most 16 entries, each
//! entry an id and an `Arc` to its task) and those tasks.
//!
//! Snapshots (Raft's and the cluster snapshot files) encode the tasks'
//! templates once for the tasks that share them: within
//! [`with_shared_templates`], the map writes `{"$templates": [...],
//! "$tasks": {id: {"t": index, "task": task without its template}}}`; a
//! task of 100,000 shares its template with the other tasks of its service
//! revision. Reading takes either form.
//!
//! The map keeps an index from service id to task ids, so that the tasks of
//! a service are found without a look at every task. The index is derived:
//! it is not serialized (the map encodes exactly as a `BTreeMap<TaskId,
//! Task>` did, keys in order) and is rebuilt when a state is read. A task's
//! `service_id` never changes once it is in the map.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use imbl::{OrdMap, OrdSet};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{NodeId, ServiceId, Task, TaskId, TaskTemplate};

thread_local! {
    static SHARED_TEMPLATES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (an encoding of a state) with the tasks' templates written once
/// for all the tasks that share them (see the module docs). Everything
/// else (commands, the state's hash) encodes each task whole.
pub fn with_shared_templates<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            SHARED_TEMPLATES.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(SHARED_TEMPLATES.with(|c| c.replace(true)));
    f()
}

/// Whether a task's template is left out of its encoding (inside
/// [`with_shared_templates`]). The argument is the template, unused.
pub fn templates_shared<T>(_: &T) -> bool {
    SHARED_TEMPLATES.with(std::cell::Cell::get)
}

/// The source of change stamps (see the module docs): 0 is never given.
static STAMPS: AtomicU64 = AtomicU64::new(1);

fn next_stamp() -> u64 {
    STAMPS.fetch_add(1, Ordering::Relaxed)
}

/// The tasks of a cluster by id, iterated in id order; see the [module docs](self).
///
/// Its methods are those of the `BTreeMap` it replaces, but that there is no
/// `values_mut` (change tasks one at a time with [`get_mut`](Self::get_mut)).
#[derive(Clone, Default)]
pub struct Tasks {
    by_id: OrdMap<TaskId, Arc<Task>>,
    by_service: OrdMap<ServiceId, OrdSet<TaskId>>,
    by_node: OrdMap<NodeId, OrdSet<TaskId>>,
    /// The change stamp of each node that ever held a task here.
    stamps: OrdMap<NodeId, u64>,
}

impl Tasks {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many tasks there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The task with this id.
    pub fn get(&self, id: &str) -> Option<&Task> {
        self.by_id.get(id).map(|t| &**t)
    }

    /// The task with this id, as the map shares it: unchanged as long as
    /// the same `Arc` is returned ([`Arc::ptr_eq`]).
    pub fn get_shared(&self, id: &str) -> Option<&Arc<Task>> {
        self.by_id.get(id)
    }

    /// The task with this id, to change. Copies the task first if a clone of
    /// the map still shares it. Its `id`, `service_id` and `node_id` must
    /// not change (place a task with [`assign`](Self::assign)). Stamps the
    /// task's node as changed.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Task> {
        let node = self.by_id.get(id)?.node_id.clone();
        self.touch(node.as_deref());
        self.by_id.get_mut(id).map(Arc::make_mut)
    }

    /// Places the task with this id on `node`; false when there is no such task.
    pub fn assign(&mut self, id: &str, node: &str) -> bool {
        let Some(t) = self.by_id.get_mut(id).map(Arc::make_mut) else { return false };
        let old = t.node_id.replace(node.to_string());
        if let Some(old) = &old {
            self.unindex_node(old, id);
        }
        self.by_node.entry(node.to_string()).or_default().insert(id.to_string());
        self.touch(old.as_deref());
        self.touch(Some(node));
        true
    }

    /// The tasks placed on `node`, in id order: a look at its tasks only.
    pub fn of_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Arc<Task>> + 'a {
        self.by_node.get(node).into_iter().flat_map(|ids| ids.iter()).filter_map(|id| self.by_id.get(id))
    }

    /// The change stamp of `node`: different after any change to its tasks
    /// (0 when it never held one). See the module docs.
    pub fn node_stamp(&self, node: &str) -> u64 {
        self.stamps.get(node).copied().unwrap_or(0)
    }

    fn touch(&mut self, node: Option<&str>) {
        if let Some(node) = node {
            self.stamps.insert(node.to_string(), next_stamp());
        }
    }

    /// Whether a task has this id.
    pub fn contains_key(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Puts `task` under `id`; returns the task it replaces.
    pub fn insert(&mut self, id: TaskId, task: Task) -> Option<Task> {
        let service = task.service_id.clone();
        let node = task.node_id.clone();
        let old = self.by_id.insert(id.clone(), Arc::new(task));
        if let Some(old) = &old {
            self.unindex(&old.service_id, &id);
            if let Some(n) = &old.node_id {
                self.unindex_node(n, &id);
            }
            self.touch(old.node_id.as_deref());
        }
        if let Some(n) = &node {
            self.by_node.entry(n.clone()).or_default().insert(id.clone());
            self.touch(Some(n));
        }
        self.by_service.entry(service).or_default().insert(id);
        old.map(Arc::unwrap_or_clone)
    }

    /// Removes the task with this id; returns it.
    pub fn remove(&mut self, id: &str) -> Option<Task> {
        let old = self.by_id.remove(id)?;
        self.unindex(&old.service_id, id);
        if let Some(n) = &old.node_id {
            self.unindex_node(n, id);
        }
        self.touch(old.node_id.as_deref());
        Some(Arc::unwrap_or_clone(old))
    }

    /// Keeps only the tasks for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&TaskId, &Task) -> bool) {
        let gone: Vec<TaskId> = self.iter().filter(|(id, t)| !keep(id, t)).map(|(id, _)| id.clone()).collect();
        for id in gone {
            self.remove(&id);
        }
    }

    /// The tasks with their ids, in id order.
    pub fn iter(&self) -> Iter<'_> {
        self.by_id.iter().map(|(id, t)| (id, &**t))
    }

    /// The ids, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &TaskId> {
        self.by_id.keys()
    }

    /// The tasks, in id order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Task> {
        self.by_id.values().map(|t| &**t)
    }

    /// The tasks of one service, in id order: a look at the service's
    /// tasks only.
    pub fn of_service<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_service
            .get(service_id)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.get(id))
            .filter(move |t| t.service_id == service_id)
    }

    fn unindex_node(&mut self, node: &str, id: &str) {
        let Some(ids) = self.by_node.get_mut(node) else { return };
        ids.remove(id);
        if ids.is_empty() {
            self.by_node.remove(node);
        }
    }

    fn unindex(&mut self, service: &str, id: &str) {
        let Some(ids) = self.by_service.get_mut(service) else { return };
        ids.remove(id);
        if ids.is_empty() {
            self.by_service.remove(service);
        }
    }
}

/// The iterator of [`Tasks::iter`].
pub type Iter<'a> = std::iter::Map<
    imbl::ordmap::Iter<'a, TaskId, Arc<Task>, imbl::shared_ptr::DefaultSharedPtr>,
    fn((&'a TaskId, &'a Arc<Task>)) -> (&'a TaskId, &'a Task),
>;

impl<'a> IntoIterator for &'a Tasks {
    type Item = (&'a TaskId, &'a Task);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<(TaskId, Task)> for Tasks {
    fn from_iter<I: IntoIterator<Item = (TaskId, Task)>>(iter: I) -> Self {
        let mut tasks = Tasks::new();
        tasks.extend(iter);
        tasks
    }
}

impl Extend<(TaskId, Task)> for Tasks {
    fn extend<I: IntoIterator<Item = (TaskId, Task)>>(&mut self, iter: I) {
        for (id, task) in iter {
            self.insert(id, task);
        }
    }
}

impl std::ops::Index<&str> for Tasks {
    type Output = Task;

    /// The task with this id; panics when there is none (as `BTreeMap` does).
    fn index(&self, id: &str) -> &Task {
        self.get(id).expect("no task with this id")
    }
}

impl std::ops::Index<&String> for Tasks {
    type Output = Task;

    fn index(&self, id: &String) -> &Task {
        &self[id.as_str()]
    }
}

/// Equal when they hold equal tasks under equal ids (the index follows).
impl PartialEq for Tasks {
    fn eq(&self, other: &Self) -> bool {
        self.by_id == other.by_id
    }
}

impl Eq for Tasks {}

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A map of id to task in id order: what a `BTreeMap<TaskId, Task>` writes;
/// inside [`with_shared_templates`], the templates first, once each.
impl Serialize for Tasks {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !templates_shared(&()) {
            return serializer.collect_map(self.iter());
        }
        use serde::ser::SerializeMap;
        // Tasks of one service revision share a template, mostly: candidates
        // by (service, revision), each checked for equality.
        let mut templates: Vec<&TaskTemplate> = Vec::new();
        let mut by_revision: std::collections::HashMap<(&str, u64), Vec<usize>> = std::collections::HashMap::new();
        let mut index = Vec::with_capacity(self.len());
        for (_, t) in self.iter() {
            let candidates = by_revision.entry((t.service_id.as_str(), t.revision)).or_default();
            let i = match candidates.iter().find(|i| *templates[**i] == t.template) {
                Some(i) => *i,
                None => {
                    templates.push(&t.template);
                    candidates.push(templates.len() - 1);
                    templates.len() - 1
                }
            };
            index.push(i);
        }
        struct Entries<'a>(&'a Tasks, &'a [usize]);
        impl Serialize for Entries<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for ((id, task), t) in self.0.iter().zip(self.1) {
                    map.serialize_entry(id, &Shared { t: *t, task })?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("$templates", &templates)?;
        map.serialize_entry("$tasks", &Entries(self, &index))?;
        map.end()
    }
}

/// A task whose template is in the `$templates` list, at `t`.
#[derive(Serialize)]
struct Shared<'a> {
    t: usize,
    task: &'a Task,
}

/// What [`Shared`] reads back.
#[derive(Deserialize)]
struct SharedOwned {
    t: usize,
    task: Task,
}

/// Reads what [`Serialize`] writes, and builds the index. A key given twice
/// keeps its last task, as a `BTreeMap` does.
impl<'de> Deserialize<'de> for Tasks {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TasksVisitor;

        impl<'de> Visitor<'de> for TasksVisitor {
            type Value = Tasks;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of task id to task")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tasks, A::Error> {
                use serde::de::Error;
                let mut tasks = Tasks::new();
                let Some(first) = map.next_key::<String>()? else { return Ok(tasks) };
                if first != "$templates" {
                    // A map of id to task.
                    tasks.insert(first, map.next_value::<Task>()?);
                    while let Some((id, task)) = map.next_entry::<TaskId, Task>()? {
                        tasks.insert(id, task);
                    }
                    return Ok(tasks);
                }
                let templates: Vec<TaskTemplate> = map.next_value()?;
                match map.next_key::<String>()? {
                    Some(k) if k == "$tasks" => {}
                    other => {
                        return Err(A::Error::custom(format!("expected $tasks after $templates, found {other:?}")));
                    }
                }
                let entries: std::collections::BTreeMap<TaskId, SharedOwned> = map.next_value()?;
                for (id, SharedOwned { t, mut task }) in entries {
                    task.template = templates
                        .get(t)
                        .cloned()
                        .ok_or_else(|| A::Error::custom(format!("task {id}: no template {t}")))?;
                    tasks.insert(id, task);
                }
                Ok(tasks)
            }
        }

        deserializer.deserialize_map(TasksVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, service: &str) -> Task {
        Task {
            id: id.into(),
            service_id: service.into(),
            service_name: format!("app_{service}"),
            stack: "app".into(),
            slot: 0,
            node_id: None,
            revision: 1,
            template: crate::model::TaskTemplate::default(),
            desired_state: crate::model::DesiredState::Running,
            status: crate::model::TaskStatus::default(),
            unplaceable: String::new(),
            created_at: 0,
            addresses: Default::default(),
            image: String::new(),
        }
    }

    fn ids<'a>(tasks: impl Iterator<Item = &'a Task>) -> Vec<&'a str> {
        tasks.map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn shared_templates_are_written_once_and_read_back_whole() {
        let mut m = Tasks::new();
        for i in 0..50 {
            let mut t = task(&format!("t{i:02}"), if i % 2 == 0 { "a" } else { "b" });
            t.template.image = format!("img-{}", i % 2);
            if i == 7 {
                // The same revision, another template: kept apart.
                t.template.command = Some(vec!["odd".into()]);
            }
            m.insert(t.id.clone(), t);
        }
        let whole = serde_json::to_string(&m).expect("encode");
        let shared = with_shared_templates(|| serde_json::to_string(&m)).expect("encode shared");
        assert!(shared.starts_with(r#"{"$templates":["#), "{shared}");
        let v: serde_json::Value = serde_json::from_str(&shared).expect("json");
        assert_eq!(v["$templates"].as_array().map(Vec::len), Some(3), "a, b and the odd one");
        assert!(shared.len() * 2 < whole.len(), "{} vs {}", shared.len(), whole.len());
        assert_eq!(serde_json::from_str::<Tasks>(&shared).expect("decode shared"), m);
        assert_eq!(serde_json::from_str::<Tasks>(&whole).expect("decode whole"), m);
        // Outside the scope, tasks encode whole again (commands, the state's hash).
        assert_eq!(serde_json::to_string(&m).expect("encode"), whole);
        let bad = r#"{"$templates":[],"$tasks":{"t1":{"t":3,"task":{}}}}"#;
        assert!(serde_json::from_str::<Tasks>(bad).is_err());
    }

    #[test]
    fn the_index_follows_inserts_removals_and_replacements() {
        let mut m: Tasks = ["t3", "t1", "t2"].iter().map(|id| (id.to_string(), task(id, "a"))).collect();
        m.insert("t0".into(), task("t0", "b"));
        assert_eq!(ids(m.values()), ["t0", "t1", "t2", "t3"]);
        assert_eq!(ids(m.of_service("a")), ["t1", "t2", "t3"]);
        assert_eq!(ids(m.of_service("b")), ["t0"]);
        // A task put again under its id with another service moves in the index.
        m.insert("t2".into(), task("t2", "b"));
        assert_eq!(ids(m.of_service("a")), ["t1", "t3"]);
        assert_eq!(ids(m.of_service("b")), ["t0", "t2"]);
        assert_eq!(m.remove("t0").map(|t| t.id), Some("t0".into()));
        assert_eq!(m.remove("t0"), None);
        m.retain(|_, t| t.service_id != "a");
        assert_eq!(ids(m.values()), ["t2"]);
        assert_eq!(ids(m.of_service("a")), Vec::<&str>::new());
        assert_eq!(ids(m.of_service("c")), Vec::<&str>::new());
        assert_eq!(m.by_service.len(), 1, "no empty entry is left behind");
    }

    fn node_ids<'a>(tasks: impl Iterator<Item = &'a Arc<Task>>) -> Vec<&'a str> {
        tasks.map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn the_node_index_and_stamps_follow_placements_changes_and_removals() {
        let mut m: Tasks = ["t1", "t2", "t3"].iter().map(|id| (id.to_string(), task(id, "a"))).collect();
        assert_eq!(m.of_node("n1").count(), 0);
        assert_eq!(m.node_stamp("n1"), 0, "never held a task");
        assert!(m.assign("t1", "n1") && m.assign("t2", "n1") && m.assign("t3", "n2"));
        assert!(!m.assign("t9", "n1"), "no such task");
        assert_eq!(node_ids(m.of_node("n1")), ["t1", "t2"]);
        let (n1, n2) = (m.node_stamp("n1"), m.node_stamp("n2"));
        assert!(n1 > 0 && n2 > 0);

        // A change to a task of n1 stamps n1 only; the old Arc is kept by a reader.
        let before = m.get_shared("t1").cloned().expect("there");
        m.get_mut("t1").expect("there").slot = 5;
        assert!(m.node_stamp("n1") != n1 && m.node_stamp("n2") == n2);
        assert!(!Arc::ptr_eq(&before, m.get_shared("t1").expect("there")), "a changed task is a new Arc");
        assert!(Arc::ptr_eq(m.get_shared("t3").expect("there"), m.get_shared("t3").expect("there")));

        // A move leaves one node for the other, stamping both.
        let (n1, n2) = (m.node_stamp("n1"), m.node_stamp("n2"));
        assert!(m.assign("t2", "n2"));
        assert_eq!(node_ids(m.of_node("n1")), ["t1"]);
        assert_eq!(node_ids(m.of_node("n2")), ["t2", "t3"]);
        assert!(m.node_stamp("n1") != n1 && m.node_stamp("n2") != n2);

        // A removal and a replacement by insert follow too.
        let n2 = m.node_stamp("n2");
        m.remove("t3");
        assert_eq!(node_ids(m.of_node("n2")), ["t2"]);
        assert!(m.node_stamp("n2") != n2);
        let mut moved = task("t1", "a");
        moved.node_id = Some("n3".into());
        m.insert("t1".into(), moved);
        assert_eq!(m.of_node("n1").count(), 0);
        assert_eq!(node_ids(m.of_node("n3")), ["t1"]);
        m.retain(|id, _| id != "t2");
        assert_eq!(m.of_node("n2").count(), 0);

        // A state read back builds the index again (stamps are not state).
        let json = serde_json::to_string(&m).expect("encodes");
        let back: Tasks = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, m);
        assert_eq!(node_ids(back.of_node("n3")), ["t1"]);
    }

    #[test]
    fn a_change_to_a_clone_leaves_the_original_as_it_was() {
        let mut a: Tasks = (0..100).map(|k| (format!("t{k:03}"), task(&format!("t{k:03}"), "s"))).collect();
        let snapshot = a.clone();
        a.get_mut("t042").expect("there").slot = 7;
        a.remove("t001");
        a.insert("t100".into(), task("t100", "s"));
        assert_eq!(snapshot.get("t042").map(|t| t.slot), Some(0));
        assert!(snapshot.contains_key("t001") && !snapshot.contains_key("t100"));
        assert_eq!(snapshot.of_service("s").count(), 100);
        assert_eq!(a["t042"].slot, 7);
        assert_eq!(a.of_service("s").count(), 100);
        assert_ne!(a, snapshot);
    }

    #[test]
    fn it_encodes_as_a_btreemap_does_and_reads_back_with_its_index() {
        let tasks = [task("b", "s2"), task("a", "s1"), task("c", "s1")];
        let map: Tasks = tasks.iter().map(|t| (t.id.clone(), t.clone())).collect();
        let btree: std::collections::BTreeMap<TaskId, Task> = tasks.iter().map(|t| (t.id.clone(), t.clone())).collect();
        let json = serde_json::to_string(&map).expect("encodes");
        assert_eq!(json, serde_json::to_string(&btree).expect("encodes"));
        let back: Tasks = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, map);
        assert_eq!(ids(back.of_service("s1")), ["a", "c"]);
        assert!(serde_json::from_str::<Tasks>("[]").is_err());
    }
}
