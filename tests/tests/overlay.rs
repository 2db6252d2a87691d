//! One flat network per stack network across nodes, each node with a Docker
//! engine of its own ([`stackd_tests::engines`]): a container on node 1
//! reaches a replica on node 2 and node 3 by its address, and the server
//! sees the client's own address; a transfer of many packets crosses the
//! VXLAN whole (the MTU accounts for the encapsulation); another stack's
//! container cannot reach them; `stack rm` leaves no VXLAN device and no
//! bridge behind on any node. Needs root and Docker; skipped otherwise
//! (fails with `CI=true`).

use std::process::Command;
use std::time::{Duration, Instant};

use stackd_tests::engines::Engines;
use stackd_tests::{Opts, netns, require_docker, wait_until};

const APP: &str = "\
services:
  web:
    image: stackd-test/web:1
    command: [\"httpd\", \"-f\", \"-v\", \"-p\", \"8080\", \"-h\", \"/www\"]
    ports: [\"18081:8080\"]
    deploy:
      replicas: 3
      placement:
        max_replicas_per_node: 1
  client:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    deploy:
      mode: global
  api:
    image: stackd-test/web:2
    command: [\"httpd\", \"-f\", \"-v\", \"-p\", \"8080\", \"-h\", \"/www\"]
    ports: [\"18080:8080\"]
    deploy:
      replicas: 2
      placement:
        max_replicas_per_node: 1
";

const OTHER: &str = "\
services:
  client:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    deploy:
      mode: global
";

/// Output of a command, with its status.
fn out(mut c: Command) -> (bool, String) {
    match c.output() {
        Ok(o) => (
            o.status.success(),
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// The id of the one container of `service` (full name) on node `i`'s engine.
fn container(c: &Engines, i: usize, service: &str) -> String {
    wait_until(Duration::from_secs(30), &format!("{service} running on node {i}"), || {
        let mut d = c.docker(i);
        d.args(["ps", "-q", "--filter", &format!("label=io.stackd.service={service}")]);
        let (ok, text) = out(d);
        let id = text.lines().next()?.trim().to_string();
        (ok && !id.is_empty()).then_some(id)
    })
}

/// A container's address on `network`.
fn address(c: &Engines, i: usize, id: &str, network: &str) -> String {
    let mut d = c.docker(i);
    d.args(["inspect", "-f", &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"), id]);
    let (ok, text) = out(d);
    assert!(ok, "inspect {id}: {text}");
    text.trim().to_string()
}

/// Runs `sh -c script` in a container on node `i`.
fn exec(c: &Engines, i: usize, id: &str, script: &str) -> (bool, String) {
    let mut d = c.docker(i);
    d.args(["exec", id, "sh", "-c", script]);
    out(d)
}

/// A shell line that GETs `/` from `ip`:8080 (busybox's static wget
/// crashes in glibc's resolver code, even for an address).
fn get(ip: &str) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 8080")
}

/// `GET /` over TCP from the test process; the body, if any answer came.
fn http_get(addr: std::net::SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The kernel's links of node `i` whose name starts with `prefix`.
fn links(c: &Engines, i: usize, prefix: &str) -> Vec<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &c.engine(i).ns, "ip", "-o", "link", "show"]);
    let (_, text) = out(cmd);
    text.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The nodes' links, forwarding and neighbour entries, for a failure message.
fn diagnose(c: &Engines) -> String {
    let mut text = String::new();
    for i in 0..3 {
        for args in [
            &["ip", "-d", "-br", "link"][..],
            &["bridge", "fdb", "show"][..],
            &["ip", "neigh"][..],
            &["ip", "-br", "addr"][..],
        ] {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &c.engine(i).ns]).args(args);
            text.push_str(&format!("--- node {i}: {}\n{}\n", args.join(" "), out(cmd).1));
        }
    }
    text
}

#[test]
fn a_stack_network_spans_the_nodes() {
    if !netns::require_root() || !require_docker() {
        return;
    }
    let t0 = Instant::now();
    let c = Engines::start(3, 1, &Opts::default()).expect("three nodes with an engine each");
    let m = c.node(0);
    let app = m.write_stack("app.yml", APP);
    m.stackctl(&["deploy", "-c", &app, "app", "--wait", "--timeout", "90s"]);
    let other = m.write_stack("other.yml", OTHER);
    m.stackctl(&["deploy", "-c", &other, "other", "--wait", "--timeout", "90s"]);

    let client = container(&c, 0, "app_client");
    let client_ip = address(&c, 0, &client, "app_default");
    let webs: Vec<(String, String)> = (1..3)
        .map(|i| {
            let id = container(&c, i, "app_web");
            let ip = address(&c, i, &id, "app_default");
            (id, ip)
        })
        .collect();
    assert!(!client_ip.is_empty() && webs.iter().all(|(_, ip)| !ip.is_empty()), "addresses: {client_ip} {webs:?}");

    for (i, (id, ip)) in webs.iter().enumerate() {
        let node = i + 1;
        // The VXLAN entries appear within the data plane's period.
        let start = Instant::now();
        loop {
            let (ok, text) = exec(&c, 0, &client, &get(ip));
            if ok && text.contains("web 1") {
                break;
            }

            assert!(
                start.elapsed() < Duration::from_secs(20),
                "web on node {node} at {ip} unreachable from node 0 ({client_ip}): {text}\n{}\n{}",
                diagnose(&c),
                c.cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // The server saw the client's own address (no masquerade on the way).
        let mut logs = c.docker(node);
        logs.args(["logs", id]);
        let (_, log) = out(logs);
        assert!(log.contains(&client_ip), "web on node {node} did not see {client_ip}: {log}\n{}", c.cluster.logs());
    }

    // Names: the node's DNS server answers for every node's tasks.
    let all: Vec<String> = {
        let mut v: Vec<String> = webs.iter().map(|(_, ip)| ip.clone()).collect();
        let id = container(&c, 0, "app_web");
        v.push(address(&c, 0, &id, "app_default"));
        v
    };
    let listed = wait_until(Duration::from_secs(20), "tasks.web lists the 3 replicas", || {
        let (ok, text) = exec(&c, 0, &client, "nslookup tasks.web");
        (ok && all.iter().all(|ip| text.contains(ip.as_str()))).then_some(text)
    });
    assert!(all.iter().all(|ip| listed.contains(ip.as_str())), "{listed}");
    let (ok, vip) = exec(&c, 0, &client, "nslookup web");
    assert!(ok && vip.contains("10.192."), "web has no virtual address: {vip}");
    let (ok, full) = exec(&c, 0, &client, "nslookup app_web");
    let last = |t: &str| t.lines().rev().find(|l| l.contains("Address")).unwrap_or_default().to_string();
    assert!(ok && last(&full) == last(&vip), "app_web and web differ: {full} / {vip}");
    // Each replica is reachable from a container on another node (the way
    // ELK or RabbitMQ peers connect to each other), and by `<stack>_web`.
    let peer_client = container(&c, 1, "app_client");
    for ip in &all {
        let (ok, text) = exec(&c, 1, &peer_client, &get(ip));
        assert!(ok && text.contains("web 1"), "{ip} from node 1: {text}");
    }
    let (ok, text) = exec(&c, 0, &client, &get("app_web"));
    assert!(ok && text.contains("web 1"), "app_web by name: {text}");
    // Another stack's container does not get app's names.
    let outsider = container(&c, 0, "other_client");
    let (ok, text) = exec(&c, 0, &outsider, "nslookup tasks.web");
    assert!(!ok || !all.iter().any(|ip| text.contains(ip.as_str())), "another stack resolved tasks.web: {text}");

    // The virtual address: balanced over the replicas of every node, and
    // each sees the client's own address.
    for _ in 0..15 {
        let (ok, text) = exec(&c, 0, &client, &get("web"));
        assert!(ok && text.contains("web 1"), "web through its VIP: {text}");
    }
    let mut reached = 0;
    for i in 0..3 {
        let id = container(&c, i, "app_web");
        let mut logs = c.docker(i);
        logs.args(["logs", &id]);
        if out(logs).1.contains(&client_ip) {
            reached += 1;
        }
    }
    assert!(reached >= 2, "15 requests to web's VIP reached {reached} of 3 replicas (by the client's own address)");

    // The routing mesh: `api` runs on 2 of the 3 nodes; each node's address
    // answers 30 of 30, from both replicas.
    let api_nodes: Vec<usize> = (0..3)
        .filter(|i| {
            let mut d = c.docker(*i);
            d.args(["ps", "-q", "--filter", "label=io.stackd.service=app_api"]);
            !out(d).1.trim().is_empty()
        })
        .collect();
    assert_eq!(api_nodes.len(), 2, "api's replicas are not on two nodes");
    for i in 0..3 {
        let addr = std::net::SocketAddr::from((c.net.addr(i), 18080));
        let mut ok = 0;
        for _ in 0..30 {
            if http_get(addr).is_some_and(|body| body.contains("web 2")) {
                ok += 1;
            }
        }
        assert_eq!(ok, 30, "node {i} ({addr}) answered {ok} of 30 through the mesh\n{}", diagnose(&c));
    }
    for i in &api_nodes {
        let id = container(&c, *i, "app_api");
        let mut logs = c.docker(*i);
        logs.args(["logs", &id]);
        let log = out(logs).1;
        let served = log.lines().filter(|l| l.contains("response:200")).count();
        assert!(served > 0, "api on node {i} served no request of the mesh: {log}");
    }

    // A 3-replica service through the mesh: one node's address spreads over all three.
    let served = |i: usize| -> usize {
        let id = container(&c, i, "app_web");
        let mut logs = c.docker(i);
        logs.args(["logs", &id]);
        out(logs).1.lines().filter(|l| l.contains("response:200")).count()
    };
    let before: Vec<usize> = (0..3).map(served).collect();
    let addr = std::net::SocketAddr::from((c.net.addr(0), 18081));
    let ok = (0..30).filter(|_| http_get(addr).is_some_and(|b| b.contains("web 1"))).count();
    assert_eq!(ok, 30, "web through node 0's mesh port");
    for (i, b) in before.iter().enumerate() {
        assert!(served(i) > *b, "web on node {i} got none of 30 requests through the mesh");
    }

    // 1 MiB from node 0's client to node 1's client: many full-size packets.
    let peer = container(&c, 1, "app_client");
    let peer_ip = address(&c, 1, &peer, "app_default");
    let mut listen = c.docker(1);
    listen.args(["exec", "-d", &peer, "sh", "-c", "sleep 15 | nc -l -p 9000 > /tmp/got"]);
    assert!(out(listen).0);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, text) =
        exec(&c, 0, &client, &format!("dd if=/dev/urandom bs=1024 count=1024 2>/dev/null | nc -w 3 {peer_ip} 9000"));
    assert!(ok, "send: {text}");
    let size = wait_until(Duration::from_secs(10), "the whole transfer", || {
        let (_, t) = exec(&c, 1, &peer, "wc -c < /tmp/got");
        let n: u64 = t.trim().parse().ok()?;
        (n == 1024 * 1024).then_some(n)
    });
    assert_eq!(size, 1024 * 1024);

    // Another stack's container reaches none of them.
    for (_, ip) in &webs {
        let (ok, text) = exec(&c, 0, &outsider, &get(ip));
        assert!(!ok, "another stack reached {ip}: {text}");
    }

    // stack rm leaves no VXLAN device, bridge, network, rule, route or
    // address of stackd behind on any node.
    m.stackctl(&["stack", "rm", "app"]);
    m.stackctl(&["stack", "rm", "other"]);
    for i in 0..3 {
        wait_until(Duration::from_secs(60), &format!("node {i} without stackd's links"), || {
            let left = [links(&c, i, "stkvx-"), links(&c, i, "stk-")].concat();
            left.is_empty().then_some(())
        });
        let ns = c.engine(i).ns.clone();
        wait_until(Duration::from_secs(10), &format!("node {i} without the stacks' rules"), || {
            let mut save = Command::new("ip");
            save.args(["netns", "exec", &ns, "iptables-save"]);
            let (_, rules) = out(save);
            (!rules.contains("10.192.") && !rules.contains("--dport 18080")).then_some(())
        });
        let mut routes = Command::new("ip");
        routes.args(["netns", "exec", &ns, "ip", "-4", "route", "show", "table", "5354"]);
        let (_, text) = out(routes);
        assert!(!text.contains("10.192."), "node {i} kept mesh routes: {text}");
        let mut nets = c.docker(i);
        nets.args(["network", "ls", "--format", "{{.Name}}"]);
        let (_, text) = out(nets);
        assert!(!text.lines().any(|n| n.starts_with("app_") || n.starts_with("other_")), "node {i} kept {text}");
    }
    left_over_networks_are_replaced(&c);
    eprintln!("test took {:?}", t0.elapsed());
}

/// A stack removed and deployed again at once: its containers go first and
/// its network a moment later, so the new deploy may find the old network,
/// whose subnet the cluster may since have given to another. The agent
/// replaces such a network (once its containers are gone) rather than
/// start tasks on it with addresses outside its subnet. Played exactly by
/// a network of the stack's name and labels with another subnet, then by
/// `stack rm` and `deploy` back to back.
fn left_over_networks_are_replaced(c: &Engines) {
    let m = c.node(0);
    let other = m.write_stack("other.yml", OTHER);
    m.stackctl(&["deploy", "-c", &other, "other", "--wait", "--timeout", "90s"]);
    let mut inspect = c.docker(1);
    inspect.args(["network", "inspect", "other_default", "-f", "{{json .Labels}}"]);
    let (ok, labels) = out(inspect);
    assert!(ok, "other_default on node 1: {labels}");
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_str(labels.trim()).expect("the network's labels as JSON");
    m.stackctl(&["stack", "rm", "other"]);
    let gone = |i: usize| {
        let mut nets = c.docker(i);
        nets.args(["network", "ls", "-q", "--filter", "name=^other_default$"]);
        out(nets).1.trim().is_empty()
    };
    wait_until(Duration::from_secs(60), "other_default gone from node 1", || gone(1).then_some(()));
    // The old network, as a late removal would have left it.
    let mut create = c.docker(1);
    create.args(["network", "create", "--subnet", "10.250.7.0/24"]);
    for (k, v) in &labels {
        create.args(["--label", &format!("{k}={v}")]);
    }
    create.arg("other_default");
    let (ok, text) = out(create);
    assert!(ok, "creating the left-over network: {text}");
    m.stackctl(&["deploy", "-c", &other, "other", "--wait", "--timeout", "90s"]);
    let id = container(c, 1, "other_client");
    let ip = address(c, 1, &id, "other_default");
    assert!(ip.starts_with("10.192."), "the client on node 1 got {ip} on the left-over network");
    // Back to back, as a CI job's `stack rm` and `deploy` would.
    for round in 0..2 {
        m.stackctl(&["stack", "rm", "other"]);
        let out = m
            .stackctl_output(&["deploy", "-c", &other, "other", "--wait", "--timeout", "90s"])
            .expect("stackctl deploy");
        assert!(
            out.status.success(),
            "round {round}: a deploy right after stack rm did not converge: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            c.cluster.logs()
        );
        for i in 0..3 {
            let id = container(c, i, "other_client");
            let ip = address(c, i, &id, "other_default");
            assert!(ip.starts_with("10.192."), "round {round}: the client on node {i} has {ip}");
        }
    }
    m.stackctl(&["stack", "rm", "other"]);
    for i in 0..3 {
        wait_until(Duration::from_secs(60), &format!("other_default gone from node {i}"), || gone(i).then_some(()));
    }
}

const HEALTH: &str = "\
services:
  web:
    image: stackd-test/web:1
    healthcheck:
      test: [\"CMD\", \"sh\", \"-c\", \"test ! -f /tmp/sick\"]
      interval: 500ms
      retries: 1
    deploy:
      replicas: 3
      placement:
        max_replicas_per_node: 1
  client:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    deploy:
      placement:
        constraints: [node.role == manager]
  echo:
    image: stackd-test/busybox:1
    command: [\"sleep\", \"3600\"]
    ports:
      - target: 9999
        published: 19090
        protocol: udp
    deploy:
      replicas: 1
      placement:
        constraints: [node.role != manager]
  pp:
    image: stackd-test/busybox:1
    command: [\"sh\", \"-c\", \"while true; do nc -l -p 8080 > /tmp/got.part && mv /tmp/got.part /tmp/got; done\"]
    ports:
      - target: 8080
        published: 18090
        x-proxy-protocol: v2
    deploy:
      placement:
        constraints: [node.role != manager]
";

/// The addresses `tasks.web` answers from the client's container.
fn tasks_web(c: &Engines, client: &str) -> Vec<String> {
    let (_, text) = exec(c, 0, client, "nslookup tasks.web");
    let mut ips: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:").or_else(|| l.strip_prefix("Address 1:")))
        .map(|a| a.split_whitespace().next().unwrap_or_default().to_string())
        .filter(|a| a.starts_with("10.192."))
        .collect();
    ips.sort();
    ips
}

/// The addresses node `i`'s rules translate to (`--to-destination`).
fn nat_targets(c: &Engines, i: usize) -> Vec<String> {
    let mut save = Command::new("ip");
    save.args(["netns", "exec", &c.engine(i).ns, "iptables-save", "-t", "nat"]);
    let (_, rules) = out(save);
    rules
        .split_whitespace()
        .skip_while(|w| *w != "--to-destination")
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--to-destination")
        .map(|w| w[1].split(':').next().unwrap_or_default().to_string())
        .collect()
}

/// A UDP echo server in the network namespace of container `id` on node
/// `i` (busybox has no UDP server: the host's python3 runs inside the
/// container's namespace).
fn udp_echo(c: &Engines, i: usize, id: &str, port: u16) -> std::process::Child {
    let mut d = c.docker(i);
    d.args(["inspect", "-f", "{{.State.Pid}}", id]);
    let pid = out(d).1.trim().to_string();
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(d,a)\n"
    );
    Command::new("nsenter")
        .args(["-t", &pid, "-n", "python3", "-c", &script])
        .spawn()
        .expect("python3 UDP echo in the container's namespace")
}

/// Whether a UDP datagram to `addr` comes back.
fn udp_round_trip(addr: std::net::SocketAddr) -> bool {
    let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0") else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 64];
    s.send_to(b"ping", addr).is_ok() && s.recv_from(&mut buf).is_ok_and(|(n, _)| &buf[..n] == b"ping")
}

#[test]
fn answers_follow_health_and_node_loss_and_udp_crosses_the_mesh() {
    if !netns::require_root() || !require_docker() {
        return;
    }
    let c = Engines::start(3, 1, &Opts::default()).expect("three nodes with an engine each");
    let m = c.node(0);
    let file = m.write_stack("health.yml", HEALTH);
    m.stackctl(&["deploy", "-c", &file, "app", "--wait", "--timeout", "90s"]);
    let client = container(&c, 0, "app_client");
    let webs: Vec<(String, String)> = (0..3)
        .map(|i| {
            let id = container(&c, i, "app_web");
            let ip = address(&c, i, &id, "app_default");
            (id, ip)
        })
        .collect();
    let mut all: Vec<String> = webs.iter().map(|(_, ip)| ip.clone()).collect();
    all.sort();
    wait_until(Duration::from_secs(20), "tasks.web lists the 3 replicas", || {
        (tasks_web(&c, &client) == all).then_some(())
    });

    // UDP through the mesh, at every node's address (the echo task runs on one of the workers).
    let echo_node = (1..3).find(|i| {
        let mut d = c.docker(*i);
        d.args(["ps", "-q", "--filter", "label=io.stackd.service=app_echo"]);
        !out(d).1.trim().is_empty()
    });
    let echo_node = echo_node.expect("echo runs on a worker");
    let echo_id = container(&c, echo_node, "app_echo");
    let mut echo = udp_echo(&c, echo_node, &echo_id, 9999);
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        let addr = std::net::SocketAddr::from((c.net.addr(i), 19090));
        let ok = (0..10).filter(|_| udp_round_trip(addr)).count();
        assert!(ok >= 9, "UDP through the mesh at node {i}: {ok} of 10 came back\n{}", diagnose(&c));
    }
    let _ = echo.kill();
    let _ = echo.wait();

    // PROXY protocol v2 through the mesh at every node: the task reads the
    // header first, with the client's own address.
    let pp_node = (1..3)
        .find(|i| {
            let mut d = c.docker(*i);
            d.args(["ps", "-q", "--filter", "label=io.stackd.service=app_pp"]);
            !out(d).1.trim().is_empty()
        })
        .expect("pp runs on a worker");
    let pp = container(&c, pp_node, "app_pp");
    for i in 0..3 {
        let _ = exec(&c, pp_node, &pp, "rm -f /tmp/got");
        let addr = std::net::SocketAddr::from((c.net.addr(i), 18090));
        let local = wait_until(Duration::from_secs(10), &format!("a connection through node {i}'s PROXY hop"), || {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            let local = s.local_addr().ok()?;
            s.write_all(b"hello").ok()?;
            s.shutdown(std::net::Shutdown::Write).ok()?;
            Some(local)
        });
        let got = wait_until(Duration::from_secs(10), "the task's copy of the connection", || {
            let (ok, text) = exec(&c, pp_node, &pp, "od -An -tx1 -v /tmp/got");
            ok.then(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
        });
        let std::net::IpAddr::V4(ip) = local.ip() else { panic!("an IPv4 client") };
        let [a, b, cc, d] = ip.octets();
        let client = format!("{a:02x} {b:02x} {cc:02x} {d:02x}");
        assert!(
            got.starts_with("0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a 21 11 00 0c"),
            "no PROXY v2 header via node {i}: {got}"
        );
        assert!(got[48..].starts_with(&client), "the header via node {i} does not carry the client {ip}: {got}");
        assert!(got.ends_with("68 65 6c 6c 6f"), "the payload via node {i} is not whole: {got}");
    }

    // Every node's rules translate web's VIP to the 3 replicas.
    for i in 0..3 {
        let targets = nat_targets(&c, i);
        assert!(all.iter().all(|ip| targets.contains(ip)), "node {i} translates to {targets:?}, not to all of {all:?}");
    }

    // A replica made unhealthy leaves the answers within about a second of
    // Docker saying so.
    let (sick_id, sick_ip) = webs[1].clone();
    let mut touch = c.docker(1);
    touch.args(["exec", &sick_id, "touch", "/tmp/sick"]);
    assert!(out(touch).0);
    wait_until(Duration::from_secs(10), "Docker marks the replica unhealthy", || {
        let mut d = c.docker(1);
        d.args(["inspect", "-f", "{{.State.Health.Status}}", &sick_id]);
        (out(d).1.trim() == "unhealthy").then_some(())
    });
    let marked = Instant::now();
    wait_until(Duration::from_secs(5), "the unhealthy replica leaves tasks.web", || {
        (!tasks_web(&c, &client).contains(&sick_ip)).then_some(())
    });
    let took = marked.elapsed();
    eprintln!("the unhealthy replica left the answers {took:?} after Docker marked it");
    assert!(took < Duration::from_secs(1), "the unhealthy replica left the answers only after {took:?}");
    // And the virtual address: no node translates to it any more.
    for i in 0..3 {
        wait_until(Duration::from_secs(1), &format!("node {i}'s VIP rules without the unhealthy replica"), || {
            (!nat_targets(&c, i).contains(&sick_ip)).then_some(())
        });
    }

    // A node cut off the LAN: its replica leaves the answers once it is marked down.
    let (_, lost_ip) = webs[2].clone();
    let lost = c.node(2).name.clone();
    c.cut(2).expect("cut node 2");
    wait_until(Duration::from_secs(60), "node 2 marked down", || {
        let v = m.stackctl_json(&["node", "ls"]);
        v.as_array()?.iter().any(|n| n["name"] == lost.as_str() && n["state"] == "down").then_some(())
    });
    wait_until(Duration::from_secs(5), "node 2's replica leaves tasks.web", || {
        (!tasks_web(&c, &client).contains(&lost_ip)).then_some(())
    });
    wait_until(Duration::from_secs(5), "node 2's replica leaves node 0's VIP rules", || {
        (!nat_targets(&c, 0).contains(&lost_ip)).then_some(())
    });
    c.heal(2).expect("heal node 2");
}
