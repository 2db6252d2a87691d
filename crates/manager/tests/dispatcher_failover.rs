//! The dispatcher serves the leader only: two managers in one process (no
//! Docker, no agents). The follower refuses agents with the leader's address;
//! the leader's session messages carry the managers' addresses; a leader that
//! loses its majority ends its sessions with `unavailable`.

use std::time::{Duration, Instant};

use stackd_core::Command;
use stackd_manager::Timings;
use stackd_proto::v1;
use stackd_proto::v1::dispatcher_client::DispatcherClient;
use stackd_tls::Role;
use tonic::Code;
use tonic::transport::Channel;

mod common;

use common::{CLUSTER, Node, node_id, pki, wait_until};

use stackd_proto::metadata::LEADER as LEADER_HEADER;

/// A dispatcher client to `node` with the certificate of node `as_node`.
async fn dispatcher(node: &Node, as_node: u64) -> DispatcherClient<Channel> {
    let tls = pki().client_config(Some((&node_id(as_node), Role::Manager)));
    DispatcherClient::new(stackd_tls::channel(&node.addr, tls).await.expect("TLS channel"))
}

fn description(id: u64, addr: &str) -> v1::SessionRequest {
    v1::SessionRequest {
        description: Some(v1::NodeDescription {
            node_id: node_id(id),
            name: format!("m{id}"),
            addr: addr.into(),
            ..Default::default()
        }),
    }
}

fn leader_hint(status: &tonic::Status) -> Option<String> {
    status.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_dispatches_and_names_the_managers() {
    let n1 = Node::start(1, true, Timings::default()).await;
    let mut n2 = Node::start(2, false, Timings::default()).await;
    wait_until(Duration::from_secs(10), "m1 to lead an initialised cluster", || {
        n1.raft().is_leading() && n1.raft().shared().read(|s| s.cluster_id == CLUSTER)
    })
    .await;
    // m2 joins as a manager node, then as a voter.
    n1.raft().propose(Command::JoinNode { node: n2.record(), at: 1 }).await.expect("join m2");
    // A learner, then a voter. A manager that reconciles the membership by
    // itself may be doing the same meanwhile: a step refused is tried again.
    let start = Instant::now();
    while !n1.raft().members().voters.contains_key(&2) {
        assert!(start.elapsed() < Duration::from_secs(20), "m2 did not become a voter");
        let members = n1.raft().members();
        if !members.learners.contains_key(&2) {
            let _ = n1.raft().add_learner(2, &n2.addr).await;
        } else if n1.raft().matched(2) == Some(n1.raft().status().last_log_index) {
            let _ = n1.raft().promote(2).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until(Duration::from_secs(5), "m2 to know its leader", || n2.raft().status().leader == Some(1)).await;
    assert_eq!(n2.raft().leader_addr().as_deref(), Some(n1.addr.as_str()));
    assert_eq!(n1.raft().leader_addr(), None, "the leader gives no address but its own");

    // The follower refuses every call, naming the leader.
    let mut on_follower = dispatcher(&n2, 2).await;
    let e = on_follower.session(description(2, &n2.addr)).await.expect_err("a follower opens no session");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(leader_hint(&e).as_deref(), Some(n1.addr.as_str()), "{e:?}");
    let e = on_follower
        .heartbeat(v1::HeartbeatRequest { node_id: node_id(2), session_id: "s".into() })
        .await
        .expect_err("a follower takes no heartbeat");
    assert_eq!((e.code(), leader_hint(&e)), (Code::Unavailable, Some(n1.addr.clone())), "{e:?}");
    let e = on_follower
        .update_task_status(v1::UpdateTaskStatusRequest { node_id: node_id(2), ..Default::default() })
        .await
        .expect_err("a follower takes no status");
    assert_eq!((e.code(), leader_hint(&e)), (Code::Unavailable, Some(n1.addr.clone())), "{e:?}");

    // The leader serves; its first message names both managers.
    let mut on_leader = dispatcher(&n1, 1).await;
    let mut stream = on_leader.session(description(1, &n1.addr)).await.expect("session on the leader").into_inner();
    let first = stream.message().await.expect("first message").expect("a message");
    assert!(first.assignments.is_some_and(|a| a.full));
    assert_eq!(first.managers, vec![n1.addr.clone(), n2.addr.clone()]);
    on_leader
        .heartbeat(v1::HeartbeatRequest { node_id: node_id(1), session_id: first.session_id.clone() })
        .await
        .expect("the leader takes heartbeats");

    // m2 goes: m1 loses its majority and ends the session with `unavailable`.
    n2.kill().await;
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the session ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the session ends when the leader loses its majority");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(!n1.raft().is_leading());
    let e = on_leader
        .heartbeat(v1::HeartbeatRequest { node_id: node_id(1), session_id: first.session_id })
        .await
        .expect_err("no heartbeat without a majority");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(leader_hint(&e), None, "no other leader is known");
    let mut n1 = n1;
    n1.kill().await;
}
