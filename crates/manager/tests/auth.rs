//! A single manager over TLS, in process: who may call what.
//!
//! Control: a bearer token of the cluster or a manager certificate; the
//! token's role decides. Dispatcher: only the node's own certificate.

use stackd_core::model::Blob;
use stackd_core::security::{ClientToken, Security, TokenRole};
use stackd_manager::{Identity, Manager, ManagerConfig, Timings};
use stackd_proto::v1;
use stackd_proto::v1::control_client::ControlClient;
use stackd_proto::v1::dispatcher_client::DispatcherClient;
use stackd_tls::age::{self, AgeError, Identity as Identity_};
use stackd_tls::testing::TestPki;
use stackd_tls::{Role, Secret};
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::{Code, Request};

fn stored(token: &stackd_tls::ClientToken, name: &str, role: TokenRole, stacks: &[&str]) -> ClientToken {
    ClientToken {
        id: token.id().to_string(),
        name: name.to_string(),
        role,
        stacks: stacks.iter().map(|s| s.to_string()).collect(),
        secret_sha256: token.secret_sha256(),
        created_at: 0,
    }
}

fn with_token<T>(msg: T, token: &stackd_tls::ClientToken) -> Request<T> {
    let mut req = Request::new(msg);
    let value = format!("Bearer {}", token.reveal()).parse().expect("ASCII token");
    req.metadata_mut().insert(stackd_proto::metadata::AUTHORIZATION, value);
    req
}

fn secret() -> v1::CreateObjectRequest {
    v1::CreateObjectRequest {
        kind: v1::DataKind::Secret.into(),
        name: "db_password".into(),
        data: b"s3cret".to_vec(),
        labels: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_serves_tls_and_checks_every_caller() {
    stackd_tls::install_default_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let identity = Identity::generate("m1", &addr);
    let pki = TestPki::for_cluster(&identity.cluster_id);

    let admin = stackd_tls::ClientToken::generate();
    let viewer = stackd_tls::ClientToken::generate();
    let deployer = stackd_tls::ClientToken::generate();
    let recovery = Identity_::generate().expect("recovery key");
    let security = Security {
        ca_cert_pem: pki.ca.cert_pem().to_string(),
        ca_key_pem: Blob(pki.ca.key_pem().into_bytes()),
        manager_secret: Blob(Secret::generate().as_bytes().to_vec()),
        worker_secret: Blob(Secret::generate().as_bytes().to_vec()),
        tokens: [
            stored(&admin, "admin", TokenRole::Admin, &[]),
            stored(&viewer, "ci-read", TokenRole::Viewer, &[]),
            stored(&deployer, "ci-shop", TokenRole::Deployer, &["shop"]),
        ]
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect(),
        recovery_recipient: recovery.recipient().to_string(),
        unlock_key: Blob::default(),
    };
    let manager = Manager::start(ManagerConfig {
        data_dir: dir.path().to_path_buf(),
        identity: identity.clone(),
        bootstrap: Some(stackd_manager::Bootstrap::New(security)),
        credentials: pki.credentials(&identity.node_id, Role::Manager),
        timings: Timings::default(),
        at_rest: stackd_manager::keys::open(dir.path(), None).expect("the raft data key"),
    })
    .await
    .expect("manager starts");
    manager.initialised(Duration::from_secs(30)).await.expect("the cluster is initialised");
    let server = tonic::transport::Server::builder()
        .add_routes(manager.routes())
        .serve_with_incoming(stackd_tls::tls_incoming(listener, manager.tls()));
    let server = tokio::spawn(server);

    // Plaintext is not served: a TLS client is required.
    assert!(matches!(
        stackd_tls::channel(&format!("http://{addr}"), pki.client_config(None)).await,
        Err(stackd_tls::ConnectError::Plaintext(_))
    ));
    // Another cluster's CA: the handshake fails.
    let other = TestPki::new();
    assert!(stackd_tls::channel(&addr, other.client_config(None)).await.is_err());

    let anonymous = stackd_tls::channel(&addr, pki.client_config(None)).await.expect("TLS channel");
    let mut control = ControlClient::new(anonymous.clone());

    // No token, a wrong secret, an unknown token: unauthenticated.
    let e = control.list_nodes(v1::ListNodesRequest::default()).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("STACKCTL_TOKEN"), "{}", e.message());
    let forged = stackd_tls::ClientToken::parse(&format!("STKC-1-{}-{}", admin.id(), "0".repeat(32))).expect("shape");
    let e = control.list_nodes(with_token(v1::ListNodesRequest::default(), &forged)).await.expect_err("wrong");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = control
        .list_nodes(with_token(v1::ListNodesRequest::default(), &stackd_tls::ClientToken::generate()))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // A viewer reads but may not write.
    let nodes = control.list_nodes(with_token(v1::ListNodesRequest::default(), &viewer)).await.expect("viewer reads");
    assert!(nodes.get_ref().nodes.iter().any(|n| n.id == identity.node_id), "the first manager is a node");
    let inspect = v1::InspectNodeRequest { node: identity.node_id.clone(), stale: false };
    let node = control.inspect_node(with_token(inspect, &viewer)).await.expect("viewer inspects a node");
    assert_eq!(node.get_ref().node.as_ref().map(|n| n.id.as_str()), Some(identity.node_id.as_str()));
    assert!(node.get_ref().manager.as_ref().is_some_and(|m| m.leader), "the only manager leads: {node:?}");
    let e = control
        .inspect_node(with_token(v1::InspectNodeRequest::default(), &forged))
        .await
        .expect_err("a wrong token inspects");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = control.create_object(with_token(secret(), &viewer)).await.expect_err("viewer writes");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // A deployer may remove its own stacks only.
    let e = control
        .remove_stack(with_token(v1::RemoveStackRequest { name: "blog".into() }, &deployer))
        .await
        .expect_err("not its stack");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = control
        .remove_stack(with_token(v1::RemoveStackRequest { name: "shop".into() }, &deployer))
        .await
        .expect_err("no such stack");
    assert_eq!(e.code(), Code::NotFound, "allowed, but there is no stack: {e:?}");
    // The admin does everything.
    control.create_object(with_token(secret(), &admin)).await.expect("admin writes");

    // Snapshots: the admin only; encrypted to the recovery key, secrets inside.
    for who in [&viewer, &deployer] {
        let e = control
            .save_snapshot(with_token(v1::SaveSnapshotRequest::default(), who))
            .await
            .expect_err("only an admin saves snapshots");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    let file = save(&mut control, &admin).await;
    let (header, sealed) = stackd_core::backup::split(&file).expect("a snapshot file");
    assert_eq!(header.cluster_id, identity.cluster_id);
    assert_eq!(header.recipient, recovery.recipient().to_string());
    assert!(header.index > 0);
    for clear in [&b"s3cret"[..], b"czNjcmV0"] {
        assert!(!file.windows(clear.len()).any(|w| w == clear), "the secret's value is not in the clear");
    }
    let plain = age::decrypt(std::slice::from_ref(&recovery), sealed).expect("the recovery key opens it");
    let state = stackd_core::backup::open(&header, &plain).expect("a state");
    let value = state.secrets.get("db_password").and_then(|s| s.versions.get(&s.current));
    assert_eq!(value.map(|b| b.0.as_slice()), Some(&b"s3cret"[..]));
    let status = control
        .cluster_status(with_token(v1::ClusterStatusRequest { stale: false }, &viewer))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.recovery_recipient, recovery.recipient().to_string());
    assert_eq!(state.state_hash(), status.state_hash, "nothing changed since: the same state");

    // A new recovery key: the admin only, a well-formed recipient only.
    let next = Identity_::generate().expect("key");
    let set = |r: String| v1::SetRecoveryKeyRequest { recipient: r };
    let e = control.set_recovery_key(with_token(set(next.recipient().to_string()), &viewer)).await.expect_err("viewer");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = control.set_recovery_key(with_token(set(next.to_secret_string()), &admin)).await.expect_err("private");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let r = control.set_recovery_key(with_token(set(next.recipient().to_string()), &admin)).await.expect("rotate");
    assert_eq!(r.into_inner().previous, recovery.recipient().to_string());
    let file = save(&mut control, &admin).await;
    let (_, sealed) = stackd_core::backup::split(&file).expect("a snapshot file");
    assert_eq!(age::decrypt(std::slice::from_ref(&recovery), sealed).err(), Some(AgeError::WrongKey));
    age::decrypt(&[next], sealed).expect("the new key opens the new snapshot");

    // Autolock: the admin only; on, the key; rotation; off. The manager's
    // data key follows the cluster's setting.
    let keys_file = dir.path().join("raft").join("keys.json");
    let wrapped_by = || std::fs::read_to_string(&keys_file).expect("keys.json");
    assert!(wrapped_by().contains("\"local\""), "{}", wrapped_by());
    let on = |enabled: bool| v1::SetAutolockRequest { enabled };
    let e = control.set_autolock(with_token(on(true), &viewer)).await.expect_err("viewer");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e =
        control.get_unlock_key(with_token(v1::GetUnlockKeyRequest { rotate: false }, &admin)).await.expect_err("off");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let first = control.set_autolock(with_token(on(true), &admin)).await.expect("on").into_inner();
    assert!(first.changed && first.key.starts_with("STKLOCK-1-") && first.key_id.len() == 8, "{first:?}");
    let again = control.set_autolock(with_token(on(true), &admin)).await.expect("on again").into_inner();
    assert!(!again.changed && again.key == first.key, "turning it on twice keeps the key");
    let follows = |id: String| {
        let wrapped_by = &wrapped_by;
        async move {
            for _ in 0..100 {
                if wrapped_by().contains(&id) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("keys.json never followed key {id}: {}", wrapped_by());
        }
    };
    follows(first.key_id.clone()).await;
    // keys.json is written first, then the local key goes.
    let kek = dir.path().join("raft.kek");
    for _ in 0..100 {
        if !kek.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!kek.exists(), "the local key is deleted under autolock");
    let rotated = control
        .get_unlock_key(with_token(v1::GetUnlockKeyRequest { rotate: true }, &admin))
        .await
        .expect("rotate")
        .into_inner();
    assert!(rotated.changed && rotated.key != first.key, "{rotated:?}");
    follows(rotated.key_id.clone()).await;
    let status = control
        .cluster_status(with_token(v1::ClusterStatusRequest { stale: false }, &viewer))
        .await
        .expect("status")
        .into_inner();
    assert!(status.autolock && status.unlock_key_id == rotated.key_id, "{status:?}");
    // A running manager has nothing to unlock, whatever the key.
    let e = stackd_proto::v1::lock_client::LockClient::new(
        stackd_tls::channel(&addr, pki.client_config(None)).await.expect("TLS channel"),
    )
    .unlock(v1::UnlockRequest { key: rotated.key.clone() })
    .await
    .expect_err("not locked");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let off = control.set_autolock(with_token(on(false), &admin)).await.expect("off").into_inner();
    assert!(off.changed && off.key.is_empty(), "{off:?}");
    follows("\"local\"".into()).await;
    assert!(dir.path().join("raft.kek").exists(), "a new local key (written before keys.json)");

    // A manager's certificate is an admin's.
    let as_manager = pki.client_config(Some((&identity.node_id, Role::Manager)));
    let channel = stackd_tls::channel(&addr, as_manager).await.expect("TLS channel");
    ControlClient::new(channel.clone()).list_nodes(v1::ListNodesRequest::default()).await.expect("manager cert reads");

    // The dispatcher: the node's own certificate only.
    let beat = |node_id: &str| v1::HeartbeatRequest { node_id: node_id.into(), session_id: "s".into() };
    let e = DispatcherClient::new(anonymous).heartbeat(beat(&identity.node_id)).await.expect_err("no cert");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = DispatcherClient::new(channel.clone()).heartbeat(beat("someoneelse00000")).await.expect_err("other");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Its own node: past authentication (there is no session yet).
    let e = DispatcherClient::new(channel).heartbeat(beat(&identity.node_id)).await.expect_err("no session");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    server.abort();
    manager.shutdown().await;
}

async fn save(control: &mut ControlClient<tonic::transport::Channel>, token: &stackd_tls::ClientToken) -> Vec<u8> {
    let mut stream = control
        .save_snapshot(with_token(v1::SaveSnapshotRequest::default(), token))
        .await
        .expect("admin saves")
        .into_inner();
    let mut file = Vec::new();
    let mut total = None;
    while let Some(piece) = stream.next().await {
        let piece = piece.expect("a piece");
        total.get_or_insert(piece.total);
        file.extend_from_slice(&piece.data);
    }
    assert_eq!(Some(file.len() as u64), total, "the first piece gives the size");
    file
}
