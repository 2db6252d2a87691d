//! Configs and secrets in the replicated state: external ones must exist,
//! a stack's own are versioned by content, nothing is kept that nothing uses.

use std::collections::BTreeMap;

use stackd_core::model::{
    Blob, DataKind, FileRef, ObjectOrigin, ObjectSpec, ServiceSpec, StackSpec, TaskTemplate, digest,
};
use stackd_core::{ClusterState, Command};

fn own(stack: &str, key: &str, content: &str) -> ObjectSpec {
    ObjectSpec {
        name: format!("{stack}_{key}"),
        external: false,
        origin: ObjectOrigin::File(format!("{key}.txt")),
        data: Blob(content.as_bytes().to_vec()),
        digest: digest(content.as_bytes()),
        labels: BTreeMap::new(),
    }
}

fn external(name: &str) -> ObjectSpec {
    ObjectSpec { name: name.into(), external: true, ..Default::default() }
}

/// A stack `name` with one service using every secret of `secrets`.
fn stack(name: &str, secrets: &[(&str, ObjectSpec)]) -> StackSpec {
    let refs = secrets
        .iter()
        .map(|(k, o)| FileRef {
            source: k.to_string(),
            name: o.name.clone(),
            target: format!("/run/secrets/{k}"),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
            digest: o.digest.clone(),
        })
        .collect();
    let svc =
        ServiceSpec::replicated("web", 1, TaskTemplate { image: "app:1".into(), secrets: refs, ..Default::default() });
    StackSpec {
        name: name.into(),
        services: [("web".to_string(), svc)].into(),
        secrets: secrets.iter().map(|(k, o)| (k.to_string(), o.clone())).collect(),
        ..Default::default()
    }
}

fn cluster() -> (ClusterState, u64) {
    let mut s = ClusterState::default();
    s.apply(1, &Command::InitCluster { cluster_id: "c".into(), at: 1, security: None, node: None });
    (s, 1)
}

fn apply(s: &mut ClusterState, index: &mut u64, cmd: Command) -> Option<String> {
    *index += 1;
    s.apply(*index, &cmd).rejected
}

fn deploy(spec: StackSpec) -> Command {
    Command::PutStack { spec, prune: true, registry_auth: None, at: 10 }
}

#[test]
fn an_external_secret_must_exist_and_a_refusal_changes_nothing() {
    let (mut s, mut i) = cluster();
    let before = s.clone();
    let why = apply(&mut s, &mut i, deploy(stack("app", &[("shared", external("org_shared"))]))).expect("refused");
    assert_eq!(
        why,
        "secret shared is external, but the cluster has no secret named org_shared: create it first with \
         `stackctl secret create org_shared FILE`"
    );
    assert_eq!(s, before);
    let create = Command::CreateObject {
        kind: DataKind::Secret,
        name: "org_shared".into(),
        data: Blob(b"x".to_vec()),
        labels: BTreeMap::new(),
        at: 5,
    };
    assert_eq!(apply(&mut s, &mut i, create.clone()), None);
    assert!(apply(&mut s, &mut i, create).expect("twice").contains("exists already"));
    assert_eq!(apply(&mut s, &mut i, deploy(stack("app", &[("shared", external("org_shared"))]))), None);
    let rm = Command::RemoveObject { kind: DataKind::Secret, name: "org_shared".into(), at: 20 };
    assert_eq!(
        apply(&mut s, &mut i, rm.clone()),
        Some(
            "secret org_shared is in use by app_web (the current spec or a revision kept for rollback): remove it \
             from their stack files and deploy, or remove the stacks"
                .into()
        )
    );
    assert_eq!(apply(&mut s, &mut i, Command::RemoveStack { name: "app".into(), at: 21 }), None);
    assert!(s.secrets.contains_key("org_shared"), "an external secret outlives the stack");
    assert_eq!(apply(&mut s, &mut i, rm), None);
    assert!(s.secrets.is_empty());
}

#[test]
fn a_stack_secret_is_versioned_and_collected() {
    let (mut s, mut i) = cluster();
    let v1 = own("app", "db", "one");
    assert_eq!(apply(&mut s, &mut i, deploy(stack("app", &[("db", v1.clone())]))), None);
    assert_eq!(s.secrets["app_db"].stack, "app");
    assert_eq!(s.secrets["app_db"].current, v1.digest);
    // A new content: a new version, and the old one is kept for the revision in history.
    let v2 = own("app", "db", "two");
    assert_eq!(apply(&mut s, &mut i, deploy(stack("app", &[("db", v2.clone())]))), None);
    let stored = &s.secrets["app_db"];
    assert_eq!(stored.current, v2.digest);
    assert_eq!(stored.versions.len(), 2);
    assert_eq!(stored.content("").map(|b| b.0.as_slice()), Some(&b"two"[..]));
    assert_eq!(stored.content(&v1.digest).map(|b| b.0.as_slice()), Some(&b"one"[..]));
    // Another stack cannot take the name.
    let clash = stack("other", &[("db", ObjectSpec { name: "app_db".into(), ..own("other", "db", "x") })]);
    assert!(apply(&mut s, &mut i, deploy(clash)).expect("refused").contains("belongs to stack app"));
    // Removing the stack removes its secrets; a manager cannot remove them by hand before.
    let rm = Command::RemoveObject { kind: DataKind::Secret, name: "app_db".into(), at: 30 };
    assert!(apply(&mut s, &mut i, rm).expect("refused").contains("belongs to stack app"));
    assert_eq!(apply(&mut s, &mut i, Command::RemoveStack { name: "app".into(), at: 31 }), None);
    assert!(s.secrets.is_empty());
}

#[test]
fn a_secret_dropped_by_a_deploy_stays_while_a_kept_revision_uses_it() {
    let (mut s, mut i) = cluster();
    let v1 = own("app", "db", "one");
    assert_eq!(apply(&mut s, &mut i, deploy(stack("app", &[("db", v1.clone())]))), None);
    // The new revision no longer uses the secret; the previous one, kept for rollback, does.
    assert_eq!(apply(&mut s, &mut i, deploy(stack("app", &[]))), None);
    let stored = s.secrets.get("app_db").expect("kept for a rollback");
    assert_eq!(stored.content(&v1.digest).map(|b| b.0.as_slice()), Some(&b"one"[..]));
    assert_eq!(s.users_of(DataKind::Secret, "app_db"), ["app_web"]);
}

#[test]
fn debug_output_never_shows_a_secret() {
    let spec = stack("app", &[("db", own("app", "db", "hunter2"))]);
    let cmd = deploy(spec);
    assert!(!format!("{cmd:?}").contains("hunter2"));
    let (mut s, mut i) = cluster();
    apply(&mut s, &mut i, cmd);
    assert!(!format!("{s:?}").contains("hunter2"));
}
