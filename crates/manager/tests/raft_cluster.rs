//! Raft between managers, in one process: three managers on 127.0.0.1 ports
//! (no Docker, no agents) form a cluster through the membership reconciler, write
//! through followers (forwarded to the leader), lose their leader, elect a
//! new one without losing an acknowledged write, catch a fourth manager up
//! through a snapshot after log compaction, and refuse writes on a leader
//! that lost its majority (soft step-down).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use stackd_core::Command;
use stackd_core::model::{Blob, DataKind};
use stackd_manager::{RaftError, Timings};

mod common;

use common::{CLUSTER, Node, wait_until};

fn create(name: &str) -> Command {
    Command::CreateObject {
        kind: DataKind::Config,
        name: name.into(),
        data: Blob(name.as_bytes().to_vec()),
        labels: BTreeMap::new(),
        at: 1,
    }
}

/// Records `node` as a manager of the cluster through `leader`, as joining
/// does before the node becomes a learner: only members may forward writes.
async fn join(leader: &Node, node: &Node) {
    let (_, applied) = leader
        .raft()
        .propose(Command::JoinNode { node: node.record(), at: 1 })
        .await
        .unwrap_or_else(|e| panic!("join m{}: {e}", node.id));
    assert_eq!(applied.rejected, None, "m{} joins", node.id);
}

/// Linearizable read of the config names on `node`.
async fn configs(node: &Node) -> Vec<String> {
    node.raft().read_barrier().await.unwrap_or_else(|e| panic!("read barrier on m{}: {e}", node.id));
    node.raft().shared().read(|s| s.configs.keys().cloned().collect())
}

async fn assert_has_all(node: &Node, acked: &[String]) {
    let have = configs(node).await;
    let missing: Vec<&String> = acked.iter().filter(|a| !have.contains(a)).collect();
    assert!(missing.is_empty(), "m{} lost acknowledged writes {missing:?}", node.id);
}

/// Waits until `leader`'s Raft voters are `ids` (the reconciler's work).
async fn wait_voters(leader: &Node, ids: &[u64]) {
    wait_until(Duration::from_secs(15), &format!("voters {ids:?}"), || {
        let m = leader.raft().members();
        m.voters.keys().copied().collect::<Vec<_>>() == ids && m.learners.is_empty()
    })
    .await;
}

fn leader_of(nodes: &[&Node]) -> Option<usize> {
    nodes.iter().position(|n| n.raft().status().is_leader && *n.raft().leader_watch().borrow())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_managers_replicate_fail_over_and_catch_up_by_snapshot() {
    // Snapshots every 20 entries and 5 entries kept behind: a node that joins
    // late cannot be fed from the log and must receive a snapshot.
    let timings = Timings { snapshot_every: 20, keep_logs: 5, ..Timings::default() };
    let mut n1 = Node::start(1, true, timings).await;
    let mut n2 = Node::start(2, false, timings).await;
    let mut n3 = Node::start(3, false, timings).await;

    // m1 bootstraps in the background: it leads and applies InitCluster.
    wait_until(Duration::from_secs(10), "m1 to lead an initialised cluster", || {
        n1.raft().status().is_leader && n1.raft().shared().read(|s| s.cluster_id == CLUSTER)
    })
    .await;
    assert!(n1.raft().has_quorum(), "a single voter always has its quorum");

    // Form the cluster: each new manager node in the state is added by the
    // leader's reconciler as a learner, then promoted once caught up.
    join(&n1, &n2).await;
    join(&n1, &n3).await;
    // A follower refuses membership changes: they run on the leader.
    wait_until(Duration::from_secs(10), "m2 to be a member", || n2.raft().status().leader == Some(1)).await;
    assert!(matches!(n2.raft().add_learner(9, "127.0.0.1:9").await, Err(RaftError::NotLeader { .. })));
    wait_voters(&n1, &[1, 2, 3]).await;
    let members = n1.raft().members();
    assert_eq!(members.voters.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(members.learners.is_empty());
    assert_eq!(members.voters.get(&2), Some(&n2.addr));
    wait_until(Duration::from_secs(5), "every manager to know the leader", || {
        [&n2, &n3].iter().all(|n| n.raft().status().leader == Some(1))
    })
    .await;
    // A follower asks the leader for its view (Raft.Members).
    let view = n3.raft().leader_members().await.expect("members through the leader");
    assert_eq!(view.leader, 1);
    assert!(view.has_quorum);
    assert_eq!(
        view.members.iter().map(|m| (m.id, m.voter, m.reachable)).collect::<Vec<_>>(),
        vec![(1, true, true), (2, true, true), (3, true, true)]
    );

    // Writes through every manager: the followers forward to the leader.
    let mut acked = Vec::new();
    for i in 0..30 {
        let node = [&n1, &n2, &n3][i % 3];
        let name = format!("before-{i}");
        let (index, applied) = node.raft().propose(create(&name)).await.unwrap_or_else(|e| panic!("write {name}: {e}"));
        assert!(index > 0 && applied.rejected.is_none(), "{name}: {applied:?}");
        acked.push(name);
    }
    // A follower's linearizable read sees a write made through another follower.
    n2.raft().propose(create("via-m2")).await.expect("write via m2");
    acked.push("via-m2".into());
    assert!(configs(&n3).await.contains(&"via-m2".to_string()), "read index on m3 sees m2's write");
    for n in [&n1, &n2, &n3] {
        assert_has_all(n, &acked).await;
    }
    // Concurrent writes through one follower share its forward stream and
    // are answered by call id, in any order: each caller must get its own
    // result. Every other one repeats a name already taken, so a result
    // handed to the wrong caller shows as a wrong refusal.
    let writes = (0..48).map(|i| {
        let raft = n2.raft().clone();
        let name = if i % 2 == 0 { format!("before-{}", i % 30) } else { format!("concurrent-{i}") };
        async move { (name.clone(), raft.propose(create(&name)).await) }
    });
    for (name, result) in futures_util::future::join_all(writes).await {
        let (_, applied) = result.unwrap_or_else(|e| panic!("concurrent write {name}: {e}"));
        if name.starts_with("before-") {
            assert!(applied.rejected.is_some(), "{name} exists already, yet was created: {applied:?}");
        } else {
            assert_eq!(applied.rejected, None, "{name} is new");
            assert_eq!(applied.events.len(), 1, "{name}: its own event: {applied:?}");
            acked.push(name);
        }
    }
    assert_has_all(&n3, &acked).await;
    let st = n1.raft().status();
    assert!(st.has_quorum && st.reachable.len() == 3, "leader sees everyone: {st:?}");

    // Kill the leader: the survivors elect a new one and keep every acknowledged write.
    let old = leader_of(&[&n1, &n2, &n3]).expect("a leader");
    assert_eq!(old, 0, "m1 still leads");
    let killed = Instant::now();
    n1.kill().await;
    // openraft 0.9 followers wait leader_lease (= election_max) + a random
    // election timeout after the last heartbeat: 1–2 s with the defaults.
    wait_until(Duration::from_secs(10), "a new leader among the survivors", || leader_of(&[&n2, &n3]).is_some()).await;
    eprintln!("new leader elected {:?} after the old one stopped", killed.elapsed());
    for i in 0..30 {
        let node = [&n2, &n3][i % 2];
        let name = format!("after-{i}");
        node.raft().propose(create(&name)).await.unwrap_or_else(|e| panic!("write {name} after failover: {e}"));
        acked.push(name);
    }
    for n in [&n2, &n3] {
        assert_has_all(n, &acked).await;
    }
    let (leader, other) = match leader_of(&[&n2, &n3]) {
        Some(0) => (&n2, &mut n3),
        Some(_) => (&n3, &mut n2),
        None => panic!("no leader after the writes"),
    };
    // The dead manager leaves the state (an operator's `node rm`), then the membership.
    let (_, applied) = leader
        .raft()
        .propose(Command::RemoveNode { id: format!("{:016x}", 1), at: 2 })
        .await
        .expect("remove the dead m1");
    assert_eq!(applied.rejected, None);
    wait_voters(leader, &[2, 3]).await;
    for i in 0..5 {
        let name = format!("after-remove-{i}");
        leader.raft().propose(create(&name)).await.unwrap_or_else(|e| panic!("write {name}: {e}"));
        acked.push(name);
    }

    // A fourth manager joins after compaction: the leader's log starts after a
    // snapshot, so the new learner gets the snapshot streamed.
    // Read before the trigger: the managers' own loops may append entries
    // after it, which a snapshot taken at the trigger does not cover. A
    // trigger while an automatic snapshot is being built is ignored: trigger
    // again until a snapshot covers `applied`.
    let applied = leader.raft().status().last_applied;
    let start = Instant::now();
    while leader.raft().status().snapshot_index < applied {
        assert!(start.elapsed() < Duration::from_secs(10), "no snapshot covers index {applied} after 10 s");
        leader.raft().trigger_snapshot().await.expect("snapshot");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until(Duration::from_secs(10), "the leader to compact its log", || leader.raft().status().purged_index > 0)
        .await;
    let mut n4 = Node::start(4, false, timings).await;
    join(leader, &n4).await;
    let target = leader.raft().status().last_applied;
    wait_until(Duration::from_secs(20), "m4 to catch up", || n4.raft().status().last_applied >= target).await;
    let installs = n4.raft().shared().snapshots_installed();
    assert!(installs >= 1, "m4 caught up through a snapshot (installed {installs})");
    assert_eq!(n4.raft().status().snapshots_installed, installs);
    assert_has_all(&n4, &acked).await;
    let hash = |n: &Node| n.raft().shared().read(|s| s.state_hash());
    assert_eq!(hash(&n4), hash(leader), "m4's state equals the leader's");
    // A learner's writes are forwarded too.
    n4.raft().propose(create("via-m4")).await.expect("write via the learner");
    acked.push("via-m4".into());
    assert_has_all(leader, &acked).await;

    // The reconciler made m4 a voter once it caught up.
    let mut voters: Vec<u64> = [leader.id, other.id, 4].into();
    voters.sort();
    wait_voters(leader, &voters).await;

    // Soft step-down: with the two other voters gone the leader hears from 1
    // of 3 voters. It stops leading in the eyes of the manager within
    // `election_max` and refuses writes and reads.
    other.kill().await;
    n4.kill().await;
    let took = wait_until(Duration::from_secs(6), "the lone leader to step down softly", || {
        !*leader.raft().leader_watch().borrow()
    })
    .await;
    eprintln!("lone leader stepped down {took:?} after losing its majority");
    assert!(!leader.raft().has_quorum());
    let started = Instant::now();
    match leader.raft().propose(create("lost")).await {
        Err(RaftError::NoQuorum(m)) => assert!(m.contains("majority"), "clear message: {m}"),
        other => panic!("a leader without a majority must refuse writes, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1), "refused at once, not after a timeout");
    assert!(matches!(leader.raft().read_barrier().await, Err(RaftError::NoQuorum(_))));
}

/// Every manager restarts at once: `Manager::start` must not wait for a
/// leader (nobody would serve Raft RPCs, so nobody could be elected).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_managers_restart_together_and_keep_their_state() {
    let timings = Timings::default();
    let n1 = Node::start(1, true, timings).await;
    let n2 = Node::start(2, false, timings).await;
    let n3 = Node::start(3, false, timings).await;
    wait_until(Duration::from_secs(10), "m1 to lead", || n1.raft().status().is_leader).await;
    wait_until(Duration::from_secs(10), "the cluster to be initialised", || {
        n1.raft().shared().read(|s| s.cluster_id == CLUSTER)
    })
    .await;
    for n in [&n2, &n3] {
        join(&n1, n).await;
    }
    wait_voters(&n1, &[1, 2, 3]).await;
    let mut acked = Vec::new();
    for i in 0..10 {
        let name = format!("w{i}");
        [&n1, &n2, &n3][i % 3].raft().propose(create(&name)).await.unwrap_or_else(|e| panic!("write {name}: {e}"));
        acked.push(name);
    }
    let hash = n1.raft().shared().read(|s| s.state_hash());

    let (mut n1, mut n2, mut n3) = (n1, n2, n3);
    for n in [&mut n1, &mut n2, &mut n3] {
        n.kill().await;
    }
    // One after the other, the old leader last: each start returns while no
    // leader can exist yet (a start that waited for one would time out here).
    let n2 = n2.start_again(timings).await;
    let n3 = n3.start_again(timings).await;
    let n1 = n1.start_again(timings).await;
    wait_until(Duration::from_secs(15), "a leader after restarting everyone", || leader_of(&[&n1, &n2, &n3]).is_some())
        .await;
    for n in [&n1, &n2, &n3] {
        assert_has_all(n, &acked).await;
        assert_eq!(n.raft().shared().read(|s| s.state_hash()), hash, "m{} kept the state", n.id);
        assert_eq!(n.raft().members().voters.len(), 3);
    }
    n2.raft().propose(create("after-restart")).await.expect("write after the restart");
}
