//! Configs and secrets in the state: created on their own (`CreateObject`,
//! `RemoveObject`) or with a stack's deploy, versioned by content, kept while
//! a service or a revision kept for rollback uses them.

use super::*;

/// The event kind of a config or secret.
fn object_event_kind(kind: DataKind) -> ObjectKind {
    match kind {
        DataKind::Config => ObjectKind::Config,
        DataKind::Secret => ObjectKind::Secret,
    }
}

/// A task template's configs or secrets.
fn refs(task: &TaskTemplate, kind: DataKind) -> &[FileRef] {
    match kind {
        DataKind::Config => &task.configs,
        DataKind::Secret => &task.secrets,
    }
}

/// A stack's declared configs or secrets.
fn spec_objects(spec: &StackSpec, kind: DataKind) -> impl Iterator<Item = (&String, &ObjectSpec)> {
    match kind {
        DataKind::Config => spec.configs.iter(),
        DataKind::Secret => spec.secrets.iter(),
    }
}

impl ClusterState {
    /// The configs or the secrets.
    pub fn objects(&self, kind: DataKind) -> &BTreeMap<String, StoredObject> {
        match kind {
            DataKind::Config => &self.configs,
            DataKind::Secret => &self.secrets,
        }
    }

    pub(super) fn objects_mut(&mut self, kind: DataKind) -> &mut BTreeMap<String, StoredObject> {
        match kind {
            DataKind::Config => &mut self.configs,
            DataKind::Secret => &mut self.secrets,
        }
    }

    /// Full names of the services whose current spec, or a revision kept for
    /// rollback, uses the object `name`: while there is one, the object stays.
    pub fn users_of(&self, kind: DataKind, name: &str) -> Vec<String> {
        self.services
            .values()
            .filter(|s| {
                std::iter::once(&s.spec)
                    .chain(s.history.iter().map(|r| &r.spec))
                    .any(|spec| refs(&spec.task, kind).iter().any(|r| r.name == name))
            })
            .map(|s| s.name.clone())
            .collect()
    }

    pub(super) fn create_object(
        &mut self,
        cx: &mut Ctx,
        kind: DataKind,
        name: &str,
        data: &Blob,
        labels: &BTreeMap<String, String>,
    ) {
        if let Err(why) = validate::object(kind, name, data.0.len()) {
            cx.refuse(Refusal::invalid(why));
            return;
        }
        let what = kind.as_str();
        if self.objects(kind).contains_key(name) {
            cx.refuse(Refusal::already_exists(format!(
                "{what} {name} exists already; {what}s cannot change: create one with a new name and use it in the stack"
            )));
            return;
        }
        let digest = digest(&data.0);
        let object = StoredObject {
            name: name.to_string(),
            stack: String::new(),
            labels: labels.clone(),
            current: digest.clone(),
            versions: BTreeMap::from([(digest, data.clone())]),
            created_at: cx.at,
            updated_at: cx.at,
        };
        self.objects_mut(kind).insert(name.to_string(), object);
        cx.event(object_event_kind(kind), Action::Create, name, name, "", String::new());
    }

    pub(super) fn remove_object(&mut self, cx: &mut Ctx, kind: DataKind, name: &str) {
        let what = kind.as_str();
        let Some(object) = self.objects(kind).get(name) else {
            cx.refuse(Refusal::not_found(format!("no {what} named {name:?}")));
            return;
        };
        if !object.stack.is_empty() {
            cx.refuse(Refusal::failed_precondition(format!(
                "{what} {name} belongs to stack {}: remove it from the stack file and deploy with --prune, or remove the stack",
                object.stack
            )));
            return;
        }
        let users = self.users_of(kind, name);
        if !users.is_empty() {
            cx.refuse(Refusal::failed_precondition(format!(
                "{what} {name} is in use by {} (the current spec or a revision kept for rollback): remove it from \
                 their stack files and deploy, or remove the stacks",
                users.join(", ")
            )));
            return;
        }
        self.objects_mut(kind).remove(name);
        cx.event(object_event_kind(kind), Action::Remove, name, name, "", String::new());
    }

    /// Checks a stack's configs and secrets against the cluster's: external
    /// ones must exist, the stack's own must not collide with another's.
    pub(super) fn check_objects(&self, spec: &StackSpec) -> Result<(), Refusal> {
        for kind in [DataKind::Config, DataKind::Secret] {
            let what = kind.as_str();
            for (key, o) in spec_objects(spec, kind) {
                match (self.objects(kind).get(&o.name), o.external) {
                    (None, true) => {
                        let command = if kind == DataKind::Config { "configs" } else { "secret" };
                        return Err(Refusal::failed_precondition(format!(
                            "{what} {key} is external, but the cluster has no {what} named {}: create it first with \
                             `stackctl {command} create {} FILE`",
                            o.name, o.name
                        )));
                    }
                    (Some(stored), false) if stored.stack != spec.name => {
                        let owner = if stored.stack.is_empty() {
                            "was created with stackctl".to_string()
                        } else {
                            format!("belongs to stack {}", stored.stack)
                        };
                        return Err(Refusal::already_exists(format!(
                            "{what} {key}: the cluster's {what} {} {owner}; use `external: true` to use it, or another name",
                            o.name
                        )));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Stores the stack's own configs and secrets (a new content is a new
    /// version), removes those it no longer declares and no service uses,
    /// and drops versions that no kept revision refers to.
    pub(super) fn put_objects(&mut self, cx: &mut Ctx, spec: &StackSpec) {
        for kind in [DataKind::Config, DataKind::Secret] {
            let declared: Vec<(String, ObjectSpec)> =
                spec_objects(spec, kind).filter(|(_, o)| !o.external).map(|(k, o)| (k.clone(), o.clone())).collect();
            for (_, o) in &declared {
                let store = self.objects_mut(kind);
                match store.get_mut(&o.name) {
                    Some(stored) if stored.current == o.digest && stored.labels == o.labels => {}
                    Some(stored) => {
                        stored.versions.insert(o.digest.clone(), o.data.clone());
                        stored.current = o.digest.clone();
                        stored.labels = o.labels.clone();
                        stored.updated_at = cx.at;
                        cx.event(object_event_kind(kind), Action::Update, &o.name, &o.name, &spec.name, String::new());
                    }
                    None => {
                        store.insert(
                            o.name.clone(),
                            StoredObject {
                                name: o.name.clone(),
                                stack: spec.name.clone(),
                                labels: o.labels.clone(),
                                current: o.digest.clone(),
                                versions: BTreeMap::from([(o.digest.clone(), o.data.clone())]),
                                created_at: cx.at,
                                updated_at: cx.at,
                            },
                        );
                        cx.event(object_event_kind(kind), Action::Create, &o.name, &o.name, &spec.name, String::new());
                    }
                }
            }
        }
    }

    /// Removes the stack's objects that `keep` does not name and no service
    /// uses, then drops every version no service revision refers to.
    pub(super) fn collect_objects(&mut self, cx: &mut Ctx, stack: &str, keep: Option<&StackSpec>) {
        for kind in [DataKind::Config, DataKind::Secret] {
            let names: Vec<String> = self
                .objects(kind)
                .values()
                .filter(|o| o.stack == stack)
                .filter(|o| {
                    keep.is_none_or(|spec| !spec_objects(spec, kind).any(|(_, d)| d.name == o.name && !d.external))
                })
                .map(|o| o.name.clone())
                .collect();
            for name in names {
                if self.users_of(kind, &name).is_empty() {
                    self.objects_mut(kind).remove(&name);
                    cx.event(object_event_kind(kind), Action::Remove, &name, &name, stack, String::new());
                }
            }
            // Versions still referred to by a current or kept revision.
            let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for svc in self.services.values() {
                let specs = std::iter::once(&svc.spec).chain(svc.history.iter().map(|r| &r.spec));
                for r in specs.flat_map(|s| refs(&s.task, kind)) {
                    wanted.entry(r.name.clone()).or_default().push(r.digest.clone());
                }
            }
            for o in self.objects_mut(kind).values_mut() {
                let keep = wanted.get(&o.name);
                let current = o.current.clone();
                o.versions.retain(|d, _| *d == current || keep.is_some_and(|k| k.contains(d)));
            }
        }
    }
}
