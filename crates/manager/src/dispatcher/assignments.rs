//! What goes to a node on its session: its tasks, and with them the specs
//! of the networks and named volumes they use, the contents of their
//! configs and secrets (once per session), the registry credentials of
//! their stack, the managers' addresses and the image tags to resolve.
//! Pure functions of the state (`next_message`), and `fan_out`, which
//! wakes every session after applied entries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use stackd_core::ClusterState;
use stackd_core::model::{
    DataKind, DesiredState, MountKind, NodeId, NodeState, StackNetwork, StackVolume, Task, TaskId,
};
use stackd_proto::v1;
use tokio::sync::watch;

use crate::raft::RaftNode;

use super::{BATCH, HEARTBEAT, manager_addrs};

/// A network by the stack that declares it and its engine name.
type NetworkKey = (String, String);

/// The named volumes a task mounts, by its stack and their engine names.
fn volume_keys(t: &Task) -> impl Iterator<Item = NetworkKey> + '_ {
    t.template
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Volume && !m.source.is_empty())
        .map(|m| (t.stack.clone(), m.source.clone()))
}

/// The volumes `tasks` mount, among `known`.
fn volumes_of<'a>(
    tasks: impl IntoIterator<Item = &'a Task>,
    known: &BTreeMap<NetworkKey, StackVolume>,
) -> Vec<v1::StackVolume> {
    let keys: BTreeSet<NetworkKey> = tasks.into_iter().flat_map(volume_keys).collect();
    keys.iter().filter_map(|k| known.get(k)).map(v1::StackVolume::from).collect()
}

/// What a node's tasks need besides themselves: the networks they attach
/// to and the named volumes they mount, as their stacks declare them.
#[derive(Debug, Default)]
struct NodeNeeds {
    networks: BTreeMap<NetworkKey, StackNetwork>,
    volumes: BTreeMap<NetworkKey, StackVolume>,
}

/// The tasks of one node (as the state shares them), and the networks and
/// volumes they need (those their stack declares; a task's stack may have
/// dropped one meanwhile). A look at the node's tasks only.
fn node_tasks(s: &ClusterState, node_id: &str) -> (HashMap<TaskId, Arc<Task>>, NodeNeeds) {
    let tasks: HashMap<TaskId, Arc<Task>> = s.tasks.of_node(node_id).map(|t| (t.id.clone(), t.clone())).collect();
    let mut networks = BTreeMap::new();
    for t in tasks.values() {
        for a in &t.template.networks {
            let key = (t.stack.clone(), a.network.clone());
            if !networks.contains_key(&key)
                && let Some(n) = s.stack_network(&t.stack, &a.network)
            {
                networks.insert(key, n);
            }
        }
    }
    let mut volumes = BTreeMap::new();
    for t in tasks.values() {
        for key in volume_keys(t) {
            if !volumes.contains_key(&key)
                && let Some(v) = s.stack_volume(&key.0, &key.1)
            {
                volumes.insert(key, v);
            }
        }
    }
    (tasks, NodeNeeds { networks, volumes })
}

/// The networks `tasks` attach to, among `known`.
fn networks_of<'a>(
    tasks: impl IntoIterator<Item = &'a Task>,
    known: &BTreeMap<NetworkKey, StackNetwork>,
) -> Vec<v1::StackNetwork> {
    let mut keys = std::collections::BTreeSet::new();
    for t in tasks {
        for a in &t.template.networks {
            keys.insert((t.stack.clone(), a.network.clone()));
        }
    }
    keys.iter().filter_map(|k| known.get(k)).map(v1::StackNetwork::from).collect()
}

/// The contents of the configs and secrets that `tasks` refer to: a node
/// receives only what its own tasks use.
fn file_objects(
    state: &ClusterState,
    tasks: &[&Task],
    sent: &mut BTreeSet<(DataKind, String, String)>,
) -> Vec<v1::FileObject> {
    let mut out = Vec::new();
    // Only tasks that may still start a container need contents.
    let starting = tasks.iter().filter(|t| t.desired_state == DesiredState::Running && !t.status.state.is_terminal());
    for t in starting {
        let refs = t.template.configs.iter().map(|r| (DataKind::Config, r));
        for (kind, r) in refs.chain(t.template.secrets.iter().map(|r| (DataKind::Secret, r))) {
            let key = (kind, r.name.clone(), r.digest.clone());
            if sent.contains(&key) {
                continue;
            }
            // A missing object (removed meanwhile) is left out: the agent rejects the task, saying so.
            if let Some(data) = state.objects(kind).get(&r.name).and_then(|o| o.content(&r.digest)) {
                out.push(v1::FileObject {
                    kind: v1::DataKind::from(kind).into(),
                    name: r.name.clone(),
                    digest: r.digest.clone(),
                    data: data.0.clone(),
                });
                sent.insert(key);
            }
        }
    }
    out
}

/// The registry credentials that the images of `tasks` (the node's whole
/// task set) need (those of the tasks that may still start a container, from
/// their stack's credentials): a node receives only those of its own tasks'
/// stacks and registries, each once per session, and again when the stack's
/// credentials change; and the keys of those it holds that none needs any
/// more, which it forgets.
fn registry_logins(
    state: &ClusterState,
    tasks: &[&Task],
    sent: &mut BTreeMap<(String, String), String>,
) -> (Vec<v1::RegistryCredential>, Vec<v1::RegistryCredential>) {
    let mut out = Vec::new();
    let mut wanted = BTreeSet::new();
    let starting = tasks.iter().filter(|t| t.desired_state == DesiredState::Running && !t.status.state.is_terminal());
    for t in starting {
        let Some(stack) = state.stacks.get(&t.stack) else { continue };
        let Some((registry, c)) = stack.registry_auth.for_image(t.run_image()) else { continue };
        let key = (t.stack.clone(), registry.to_string());
        if !wanted.insert(key.clone()) {
            continue;
        }
        // The digest tells a changed credential; it is kept in this memory only.
        let digest =
            stackd_core::model::digest(format!("{}\0{}\0{}", c.username, c.password, c.identity_token).as_bytes());
        if sent.get(&key) == Some(&digest) {
            continue;
        }
        let mut wire = stackd_proto::registry_credential(registry, c);
        wire.stack = t.stack.clone();
        out.push(wire);
        sent.insert(key, digest);
    }
    // What the node holds and no task of it needs any more: forgotten.
    let gone: Vec<(String, String)> = sent.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
    let removed = gone
        .into_iter()
        .map(|(stack, registry)| {
            sent.remove(&(stack.clone(), registry.clone()));
            v1::RegistryCredential { stack, registry, ..Default::default() }
        })
        .collect();
    (out, removed)
}

/// How many agents are asked to resolve one image tag (the first answer wins).
const RESOLVERS: usize = 3;

/// The service revisions whose image tag waits to be resolved, each with
/// the [`RESOLVERS`] ready nodes asked to resolve it: those that rank first
/// by a hash of the revision and the node (rendezvous hashing, so the choice
/// stays while the nodes do, and spreads the work over the nodes). Asking
/// every agent made 1,000 nodes send 1,000 answers per deploy.
fn images_to_resolve(state: &ClusterState) -> Vec<(v1::ImageToResolve, Vec<NodeId>)> {
    use std::hash::{Hash, Hasher};
    let ready: Vec<&NodeId> = state.nodes.values().filter(|n| n.state == NodeState::Ready).map(|n| &n.id).collect();
    state
        .images_to_resolve()
        .map(|s| {
            let mut ranked: Vec<(u64, &NodeId)> = ready
                .iter()
                .map(|n| {
                    let mut h = std::hash::DefaultHasher::new();
                    (&s.id, s.revision, n).hash(&mut h);
                    (h.finish(), *n)
                })
                .collect();
            ranked.sort_unstable();
            let asked = ranked.iter().rev().take(RESOLVERS).map(|(_, n)| (*n).clone()).collect();
            // A private tag is resolved with the stack's credentials for its
            // registry: the nodes asked get them with the question only.
            let login = state
                .stacks
                .get(&s.stack)
                .and_then(|st| st.registry_auth.for_image(&s.spec.task.image))
                .map(|(registry, c)| stackd_proto::registry_credential(registry, c));
            let image = v1::ImageToResolve {
                service_id: s.id.clone(),
                revision: s.revision,
                image: s.spec.task.image.clone(),
                login,
            };
            (image, asked)
        })
        .collect()
}

/// What every session sends alike, computed once per change of the state
/// (by [`fan_out`]) rather than once per session.
#[derive(Debug, Default)]
pub(super) struct Common {
    /// The managers' addresses ([`manager_addrs`]).
    managers: Vec<String>,
    /// The image tags to resolve, each with the nodes asked ([`images_to_resolve`]).
    images: Vec<(v1::ImageToResolve, Vec<NodeId>)>,
}

/// Wakes the sessions after each change of the state (at most every
/// [`BATCH`]), with what they all send alike; ends when the dispatcher is
/// gone or the state machine stops.
pub(super) async fn fan_out(raft: RaftNode, tx: watch::Sender<Arc<Common>>) {
    let mut applied = raft.shared().applied();
    loop {
        applied.borrow_and_update();
        let common = raft.shared().read(|s| Common { managers: manager_addrs(s), images: images_to_resolve(s) });
        tx.send_replace(Arc::new(common));
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tx.closed() => return,
        }
        tokio::time::sleep(BATCH).await;
    }
}

/// What a session sent last, to send only what changed since.
#[derive(Default)]
pub(super) struct Sent {
    /// The node's tasks, as the state shared them: an unchanged task is the
    /// same `Arc` (see [`stackd_core::state::Tasks`]).
    tasks: HashMap<TaskId, Arc<Task>>,
    /// The node's change stamp when they were read (`None`: nothing sent yet).
    pub(super) stamp: Option<u64>,
    /// Contents sent in this session: each once (the agent keeps them).
    objects: BTreeSet<(DataKind, String, String)>,
    /// Registry credentials sent in this session, by (stack, registry): a
    /// digest of what was sent.
    logins: BTreeMap<(String, String), String>,
    pub(super) managers: Vec<String>,
    view: Option<stackd_core::net::NodeView>,
    pub(super) images: Vec<v1::ImageToResolve>,
}

/// The next message of a session, if anything changed for its node since
/// `sent` (which it then records). A look at the node's own tasks only, and
/// only when its change stamp moved; the network view is the node's share.
pub(super) fn next_message(
    s: &ClusterState,
    node_id: &str,
    common: &Common,
    sent: &mut Sent,
) -> Option<v1::SessionMessage> {
    let first = sent.stamp.is_none();
    let stamp = s.tasks.node_stamp(node_id);
    let assignments = (sent.stamp != Some(stamp)).then(|| {
        let (now, needs) = node_tasks(s, node_id);
        let changed: Vec<&Task> = now
            .values()
            .filter(|t| !sent.tasks.get(&t.id).is_some_and(|old| Arc::ptr_eq(old, t) || **old == ***t))
            .map(|t| &**t)
            .collect();
        let removed: Vec<String> = sent.tasks.keys().filter(|id| !now.contains_key(*id)).cloned().collect();
        let message = (first || !changed.is_empty() || !removed.is_empty()).then(|| {
            let (networks, volumes) = if first {
                let all = now.values().map(|t| &**t);
                (networks_of(all.clone(), &needs.networks), volumes_of(all, &needs.volumes))
            } else {
                (
                    networks_of(changed.iter().copied(), &needs.networks),
                    volumes_of(changed.iter().copied(), &needs.volumes),
                )
            };
            let objects = file_objects(s, &changed, &mut sent.objects);
            let all: Vec<&Task> = now.values().map(|t| &**t).collect();
            let (registry_auth, registry_auth_removed) = registry_logins(s, &all, &mut sent.logins);
            let tasks: Vec<v1::Task> = changed.iter().copied().map(v1::Task::from).collect();
            v1::Assignments {
                full: first,
                tasks,
                removed,
                objects,
                networks,
                volumes,
                registry_auth,
                registry_auth_removed,
            }
        });
        sent.tasks = now;
        sent.stamp = Some(stamp);
        message
    });
    let assignments = assignments.flatten();
    let view = stackd_core::net::node_view(s, node_id);
    let view_changed = sent.view.as_ref() != Some(&view);
    let images: Vec<v1::ImageToResolve> =
        common.images.iter().filter(|(_, asked)| asked.iter().any(|n| n == node_id)).map(|(i, _)| i.clone()).collect();
    if assignments.is_none() && !view_changed && common.managers == sent.managers && images == sent.images {
        return None;
    }
    // Every message carries the whole list of managers: a few short
    // addresses, in messages that come only on changes, and the agent never
    // depends on having seen an earlier one (it simply merges).
    let msg = v1::SessionMessage {
        session_id: String::new(),
        heartbeat_period_ms: HEARTBEAT.as_millis() as u64,
        assignments,
        managers: common.managers.clone(),
        network_view: view_changed.then(|| v1::NetworkView::from(&view)),
        resolve_images: images.clone(),
        restore_generation: s.restore_generation,
        log_subscriptions: Vec::new(),
    };
    sent.managers = common.managers.clone();
    sent.images = images;
    sent.view = Some(view);
    Some(msg)
}

#[cfg(test)]
mod tests {
    use stackd_core::model::{DesiredState, NetworkAttachment, NetworkSpec, TaskStatus, TaskTemplate};

    use super::*;

    fn task(stack: &str, networks: &[&str]) -> Task {
        Task {
            id: format!("{stack}-{}", networks.join("-")),
            service_id: "s".into(),
            service_name: format!("{stack}_web"),
            stack: stack.into(),
            slot: 1,
            node_id: Some("n1".into()),
            revision: 1,
            template: TaskTemplate {
                networks: networks
                    .iter()
                    .map(|n| NetworkAttachment { network: n.to_string(), aliases: vec![] })
                    .collect(),
                ..Default::default()
            },
            desired_state: DesiredState::Running,
            status: TaskStatus::default(),
            unplaceable: String::new(),
            created_at: 0,
            addresses: Default::default(),
            image: String::new(),
        }
    }

    #[test]
    fn contents_go_once_per_session_and_only_to_tasks_that_may_start() {
        use stackd_core::model::{Blob, FileRef, StoredObject, TaskState};
        let mut state = ClusterState::default();
        state.secrets.insert(
            "app_db".into(),
            StoredObject {
                name: "app_db".into(),
                stack: "app".into(),
                labels: BTreeMap::new(),
                current: "d1".into(),
                versions: BTreeMap::from([("d1".to_string(), Blob(b"pw".to_vec()))]),
                created_at: 0,
                updated_at: 0,
            },
        );
        let with_secret = |id: &str| {
            let mut t = task("app", &[]);
            t.id = id.into();
            t.template.secrets = vec![FileRef { name: "app_db".into(), digest: "d1".into(), ..FileRef::default() }];
            t
        };
        let (a, b) = (with_secret("a"), with_secret("b"));
        let mut done = with_secret("c");
        done.status.state = TaskState::Complete;
        let mut sent = BTreeSet::new();
        assert!(file_objects(&state, &[&done], &mut sent).is_empty(), "a finished task needs no content");
        let first = file_objects(&state, &[&a, &b], &mut sent);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].data, b"pw");
        assert!(file_objects(&state, &[&a], &mut sent).is_empty(), "sent once per session");
    }

    #[test]
    fn registry_credentials_go_to_the_tasks_of_their_stack_and_registry_once() {
        use stackd_core::model::{Stack, TaskState};
        use stackd_core::registry::{RegistryAuth, RegistryCredential};
        let login =
            |user: &str| RegistryCredential { username: user.into(), password: "pw".into(), ..Default::default() };
        let mut state = ClusterState::default();
        for (name, registry, user) in [("app", "reg.example.com:5000", "app-user"), ("other", "other.example.com", "o")]
        {
            let auth = RegistryAuth([(registry.to_string(), login(user))].into());
            let stack = Stack {
                name: name.into(),
                volumes: BTreeMap::new(),
                networks: BTreeMap::new(),
                registry_auth: auth,
                created_at: 0,
                updated_at: 0,
            };
            state.stacks.insert(name.into(), stack);
        }
        let with_image = |id: &str, image: &str| {
            let mut t = task("app", &[]);
            t.id = id.into();
            t.template.image = image.into();
            t
        };
        let private = with_image("a", "reg.example.com:5000/app/web:1");
        let twin = with_image("b", "reg.example.com:5000/app/worker:1");
        let public = with_image("c", "redis:7");
        let elsewhere = with_image("d", "other.example.com/x:1");
        let mut done = with_image("e", "reg.example.com:5000/app/web:1");
        done.status.state = TaskState::Failed;
        let mut sent = BTreeMap::new();
        let (none, _) = registry_logins(&state, &[&done, &public, &elsewhere], &mut sent);
        assert!(none.is_empty(), "{sent:?}");
        let (first, removed) = registry_logins(&state, &[&private, &twin], &mut sent);
        assert!(removed.is_empty());
        assert_eq!(first.len(), 1, "once per stack and registry: {first:?}");
        assert_eq!((first[0].stack.as_str(), first[0].registry.as_str()), ("app", "reg.example.com:5000"));
        assert_eq!(first[0].username, "app-user");
        assert!(!format!("{first:?}").contains("app-user"), "Debug hides them: {first:?}");
        assert!(registry_logins(&state, &[&private], &mut sent).0.is_empty(), "sent once per session");
        // New credentials (a deploy --with-registry-auth) go again.
        if let Some(st) = state.stacks.get_mut("app") {
            st.registry_auth.0.insert("reg.example.com:5000".into(), login("new-user"));
        }
        let (again, _) = registry_logins(&state, &[&private], &mut sent);
        assert_eq!(again.iter().map(|c| c.username.as_str()).collect::<Vec<_>>(), ["new-user"]);
        // The stack removed (its tasks go with it): the node forgets them.
        state.stacks.remove("app");
        let (more, removed) = registry_logins(&state, &[&private], &mut sent);
        assert!(more.is_empty());
        assert_eq!(
            removed.iter().map(|c| (c.stack.as_str(), c.registry.as_str(), c.username.as_str())).collect::<Vec<_>>(),
            [("app", "reg.example.com:5000", "")]
        );
        assert!(sent.is_empty(), "{sent:?}");
        assert!(registry_logins(&state, &[&private], &mut sent).1.is_empty(), "told once");
    }

    fn known(entries: &[(&str, &str, &str)]) -> BTreeMap<NetworkKey, StackNetwork> {
        entries
            .iter()
            .map(|(stack, key, name)| {
                let n = StackNetwork {
                    stack: stack.to_string(),
                    key: key.to_string(),
                    spec: NetworkSpec { name: name.to_string(), ..Default::default() },
                };
                ((stack.to_string(), name.to_string()), n)
            })
            .collect()
    }

    #[test]
    fn a_message_carries_the_networks_of_its_tasks_once_each() {
        let known = known(&[
            ("shop", "back", "shop_back"),
            ("shop", "front", "shop_front"),
            ("blog", "shared", "infra"),
            ("shop", "shared", "infra"),
        ]);
        let tasks = [task("shop", &["shop_back", "infra"]), task("shop", &["shop_back"]), task("blog", &["infra"])];
        let sent = networks_of(tasks.iter(), &known);
        let got: Vec<(&str, &str)> = sent.iter().map(|n| (n.stack.as_str(), n.key.as_str())).collect();
        assert_eq!(got, [("blog", "shared"), ("shop", "shared"), ("shop", "back")], "by stack and engine name");
        // A network the stack no longer declares is not sent (its task is rejected for want of it).
        assert!(networks_of([task("shop", &["shop_gone"])].iter(), &known).is_empty());
        assert!(networks_of(std::iter::empty(), &known).is_empty());
    }

    #[test]
    fn a_message_carries_the_named_volumes_of_its_tasks_once_each() {
        use stackd_core::model::{Mount, VolumeSpec};
        let known: BTreeMap<NetworkKey, StackVolume> = [("shop", "data", "shop_data"), ("shop", "nfs", "shared")]
            .iter()
            .map(|(stack, key, name)| {
                let spec = VolumeSpec { name: name.to_string(), ..Default::default() };
                (
                    (stack.to_string(), name.to_string()),
                    StackVolume { stack: stack.to_string(), key: key.to_string(), spec },
                )
            })
            .collect();
        let mounting = |sources: &[(MountKind, &str)]| {
            let mut t = task("shop", &[]);
            t.template.mounts = sources.iter().map(|(kind, s)| Mount::new(*kind, *s, "/m", false)).collect();
            t
        };
        let tasks = [
            mounting(&[(MountKind::Volume, "shop_data"), (MountKind::Volume, "shared")]),
            mounting(&[(MountKind::Volume, "shop_data")]),
            // Binds, tmpfs and anonymous volumes need no definition.
            mounting(&[(MountKind::Bind, "shared"), (MountKind::Tmpfs, ""), (MountKind::Volume, "")]),
        ];
        let sent = volumes_of(tasks.iter(), &known);
        let got: Vec<(&str, &str)> = sent.iter().map(|v| (v.stack.as_str(), v.key.as_str())).collect();
        assert_eq!(got, [("shop", "nfs"), ("shop", "data")], "by stack and engine name");
        assert!(volumes_of([mounting(&[(MountKind::Bind, "shared")])].iter(), &known).is_empty());
        assert!(volumes_of([mounting(&[(MountKind::Volume, "shop_gone")])].iter(), &known).is_empty());
    }
}
