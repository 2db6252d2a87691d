//! Self-test of the network-namespace harness: two namespaces reach each
//! other (and the host) through the bridge; after `cut(1)` they cannot, after
//! `heal(1)` they can again. Needs root; skipped otherwise (fails with
//! `CI=true`).

use std::time::{Duration, Instant};

use stackd_tests::netns::{self, Netns};

/// Pings until the answer is `want` or `timeout` passes; returns the last answer.
fn ping_until(net: &Netns, from: usize, to: std::net::Ipv4Addr, want: bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let got = net.can_ping(from, to).expect("ping inside a namespace");
        if got == want || Instant::now() >= deadline {
            return got;
        }
    }
}

#[test]
fn cut_and_heal_partition_a_node() {
    if !netns::require_root() {
        return;
    }
    let net = Netns::new(2).expect("create the bridge and two namespaces");
    let (a, b) = (net.addr(0), net.addr(1));
    let names: Vec<String> = net.nodes().iter().map(|n| n.ns.clone()).collect();

    assert!(ping_until(&net, 0, b, true, Duration::from_secs(5)), "node 0 cannot reach node 1 at {b}");
    assert!(ping_until(&net, 1, a, true, Duration::from_secs(5)), "node 1 cannot reach node 0 at {a}");
    assert!(ping_until(&net, 0, net.host_addr(), true, Duration::from_secs(5)), "node 0 cannot reach the host");

    // A command spawned inside sees only its namespace's addresses.
    let out = net.command(1, "ip").args(["-o", "-4", "addr", "show"]).output().expect("ip addr inside node 1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{b}/24")) && !text.contains(&format!("{a}/24")), "{text}");

    net.cut(1).expect("cut node 1");
    assert!(!ping_until(&net, 0, b, false, Duration::from_secs(5)), "node 1 still reachable after cut");
    assert!(!net.can_ping(1, a).expect("ping"), "node 1 still reaches node 0 after cut");

    net.heal(1).expect("heal node 1");
    assert!(ping_until(&net, 0, b, true, Duration::from_secs(10)), "node 1 unreachable after heal");
    assert!(ping_until(&net, 1, a, true, Duration::from_secs(10)), "node 1 cannot reach node 0 after heal");

    drop(net);
    let out = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let list = String::from_utf8_lossy(&out.stdout);
    for n in names {
        assert!(!list.contains(&n), "namespace {n} left behind:\n{list}");
    }
}
