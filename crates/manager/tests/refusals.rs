//! Each kind of refusal reaches a control API client as its gRPC code, with
//! the refusal's message: refusals of `apply` (the command was proposed) and
//! those the control API makes before proposing alike.
//!
//! | kind | code |
//! | --- | --- |
//! | not found | `NOT_FOUND` |
//! | invalid | `INVALID_ARGUMENT` |
//! | already exists | `ALREADY_EXISTS` |
//! | failed precondition | `FAILED_PRECONDITION` |
//! | permission denied | `PERMISSION_DENIED` |

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Node, node_id, pki, wait_until};
use stackd_core::model::{
    Blob, EndpointMode, FileRef, ObjectSpec, RestartPolicy, ServiceMode, ServiceSpec, StackSpec, TaskTemplate,
    UpdateConfig, digest,
};
use stackd_manager::Timings;
use stackd_proto::v1;
use stackd_proto::v1::control_client::ControlClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// A one-manager cluster, initialised, and an admin client (the manager's
/// own certificate).
async fn cluster() -> (Node, ControlClient<Channel>) {
    let node = Node::start(1, true, Timings::default()).await;
    wait_until(Duration::from_secs(20), "the cluster is initialised", || {
        node.raft().shared().read(|s| !s.cluster_id.is_empty())
    })
    .await;
    let config = pki().client_config(Some((&node_id(1), stackd_tls::Role::Manager)));
    let channel = stackd_tls::channel(&node.addr, config).await.expect("TLS channel");
    (node, ControlClient::new(channel))
}

fn config(name: &str) -> v1::CreateObjectRequest {
    v1::CreateObjectRequest {
        kind: v1::DataKind::Config.into(),
        name: name.into(),
        data: b"listen 80;".to_vec(),
        labels: Default::default(),
    }
}

/// A stack `name` whose one service uses the secret `secret`.
fn stack(name: &str, secret: ObjectSpec) -> v1::DeployStackRequest {
    let file = FileRef {
        source: "key".into(),
        name: secret.name.clone(),
        target: "/run/secrets/key".into(),
        uid: "0".into(),
        gid: "0".into(),
        mode: 0o444,
        digest: secret.digest.clone(),
    };
    let svc = ServiceSpec {
        autoscale: None,
        name: "web".into(),
        mode: ServiceMode::Replicated { replicas: 1 },
        task: TaskTemplate { image: "app:1".into(), secrets: vec![file], ..Default::default() },
        restart: RestartPolicy::default(),
        update: UpdateConfig::default(),
        rollback: UpdateConfig::rollback_default(),
        labels: BTreeMap::new(),
        endpoint_mode: EndpointMode::Vip,
        depends_on: Vec::new(),
    };
    let spec = StackSpec {
        name: name.into(),
        services: [("web".to_string(), svc)].into(),
        secrets: [("key".to_string(), secret)].into(),
        ..Default::default()
    };
    v1::DeployStackRequest { spec: Some(v1::StackSpec::from(&spec)), prune: false, registry_auth: None }
}

fn refused<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, says: &str) {
    let e = r.expect_err("refused");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(e.message().contains(says), "{:?} should say {says:?}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_not_found() {
    let (mut node, mut control) = cluster().await;
    // Refused by `apply`.
    let r = control.remove_stack(v1::RemoveStackRequest { name: "shop".into() }).await;
    refused(r, Code::NotFound, "no stack named \"shop\"");
    let gone = v1::RemoveObjectRequest { kind: v1::DataKind::Config.into(), name: "nginx.conf".into() };
    refused(control.remove_object(gone).await, Code::NotFound, "no config named \"nginx.conf\"");
    // Refused before proposing.
    let r = control.inspect_service(v1::InspectServiceRequest { service: "shop_web".into(), stale: false }).await;
    refused(r, Code::NotFound, "no service \"shop_web\"");
    let r = control.remove_node(v1::RemoveNodeRequest { node: "n9".into(), force: true }).await;
    refused(r, Code::NotFound, "no node \"n9\"");
    let r = control.inspect_node(v1::InspectNodeRequest { node: "n9".into(), stale: false }).await;
    refused(r, Code::NotFound, "no node \"n9\" (give its name or id");
    node.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_is_invalid_argument() {
    let (mut node, mut control) = cluster().await;
    refused(control.create_object(config("-bad")).await, Code::InvalidArgument, "config name \"-bad\" is invalid");
    let big = v1::CreateObjectRequest { data: vec![0; stackd_core::model::MAX_OBJECT_BYTES + 1], ..config("big") };
    refused(control.create_object(big).await, Code::InvalidArgument, "a config holds at most");
    let r = control.deploy_stack(v1::DeployStackRequest { spec: None, prune: false, registry_auth: None }).await;
    refused(r, Code::InvalidArgument, "missing stack spec");
    let r = control.join_cluster(v1::JoinClusterRequest { token: "nope".into(), ..Default::default() }).await;
    refused(r, Code::InvalidArgument, "STK-1-<CA digest>-<secret>");
    node.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_exists_is_already_exists() {
    let (mut node, mut control) = cluster().await;
    control.create_object(config("nginx.conf")).await.expect("created");
    // Refused by `apply` (it was failed_precondition before refusals had kinds).
    refused(control.create_object(config("nginx.conf")).await, Code::AlreadyExists, "config nginx.conf exists already");
    // A stack's own secret under a name the cluster holds already (it was invalid_argument).
    let name = |n: &str| v1::CreateObjectRequest { kind: v1::DataKind::Secret.into(), ..config(n) };
    control.create_object(name("key")).await.expect("created");
    let own = ObjectSpec {
        name: "key".into(),
        external: false,
        data: Blob(b"k".to_vec()),
        digest: digest(b"k"),
        ..Default::default()
    };
    refused(control.deploy_stack(stack("shop", own)).await, Code::AlreadyExists, "was created with stackctl");
    // Refused before proposing.
    let token =
        |name: &str| v1::CreateTokenRequest { name: name.into(), role: v1::TokenRole::Viewer.into(), stacks: vec![] };
    control.create_token(token("ci")).await.expect("created");
    refused(control.create_token(token("ci")).await, Code::AlreadyExists, "a token named ci exists already");
    node.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_precondition_is_failed_precondition() {
    let (mut node, mut control) = cluster().await;
    // Refused by `apply`: the last manager stays, even with --force.
    let r = control.remove_node(v1::RemoveNodeRequest { node: "m1".into(), force: true }).await;
    refused(r, Code::FailedPrecondition, "is the last manager");
    // An external secret the cluster does not have (it was invalid_argument).
    let external = ObjectSpec { name: "db_password".into(), external: true, ..Default::default() };
    let r = control.deploy_stack(stack("shop", external)).await;
    refused(r, Code::FailedPrecondition, "the cluster has no secret named db_password");
    // Refused before proposing: a reachable manager is demoted first.
    let r = control.remove_node(v1::RemoveNodeRequest { node: "m1".into(), force: false }).await;
    refused(r, Code::FailedPrecondition, "manager m1 is reachable");
    node.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_denied_is_permission_denied() {
    let (mut node, mut control) = cluster().await;
    let viewer = v1::CreateTokenRequest { name: "ci-read".into(), role: v1::TokenRole::Viewer.into(), stacks: vec![] };
    let viewer = control.create_token(viewer).await.expect("created").into_inner().token;
    // Without a certificate: the token is the credential.
    let channel = stackd_tls::channel(&node.addr, pki().client_config(None)).await.expect("TLS channel");
    let mut req = Request::new(config("nginx.conf"));
    let bearer = format!("Bearer {viewer}").parse().expect("ASCII");
    req.metadata_mut().insert(stackd_proto::metadata::AUTHORIZATION, bearer);
    let r = ControlClient::new(channel).create_object(req).await;
    refused(r, Code::PermissionDenied, "the viewer token ci-read may not");
    // A join token of another cluster.
    let other = stackd_tls::testing::TestPki::new();
    let token = stackd_tls::JoinToken::new(&other.ca.digest(), stackd_tls::Secret::generate()).expect("token");
    let r = control.join_cluster(v1::JoinClusterRequest { token: token.reveal(), ..Default::default() }).await;
    refused(r, Code::PermissionDenied, "it belongs to another cluster");
    node.kill().await;
}
