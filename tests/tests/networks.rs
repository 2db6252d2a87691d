//! Networks on the real engine: services of a stack reach each other by
//! service name and alias on the networks they share, and only there; the
//! networks carry stackd's labels and go with the stack; an external network
//! that does not exist rejects the task with a message `stackctl ps` shows.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use stackd_tests::{Node, build_images, docker, require_docker, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// The running container of the service `service` (full name) in the cluster.
fn container_of(node: &Node, service: &str) -> String {
    let label = format!("io.stackd.service={service}");
    let cluster = node.cluster_id();
    wait_until(WAIT, &format!("a running container of {service}"), || {
        docker::running(&label).into_iter().find(|c| c.labels.get("io.stackd.cluster") == Some(&cluster)).map(|c| c.id)
    })
}

/// The page at `url`, fetched from inside `container` (busybox wget; its
/// `-T` crashes, so `timeout` bounds it).
fn fetch(container: &str, url: &str) -> Result<String, String> {
    docker::exec(container, &format!("timeout 10 wget -q -O- {url}")).map(|page| page.trim().to_string())
}

/// The networks of `stack` in this node's cluster, by name.
fn stack_networks(node: &Node, stack: &str) -> Vec<docker::Network> {
    let cluster = node.cluster_id();
    docker::networks(&format!("io.stackd.stack={stack}"))
        .into_iter()
        .filter(|n| n.labels.get("io.stackd.cluster") == Some(&cluster))
        .collect()
}

#[test]
fn t01_services_reach_each_other_by_name_and_alias_on_their_networks_only() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("net1").expect("init");
    let file = node.write_stack(
        "shop.yml",
        r#"
services:
  api:
    image: stackd-test/web:1
    stop_grace_period: 1s
    networks:
      back:
        aliases: [backend]
  client:
    image: stackd-test/busybox:1
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 1s
    networks: [back]
  outsider:
    image: stackd-test/busybox:1
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 1s
    networks: [front]
networks:
  back:
    labels:
      team: payments
  front:
"#,
    );
    node.stackctl(&["deploy", "-c", &file, "shop", "--wait", "--timeout", "60s"]);

    // The two networks, local bridges with stackd's labels; no default network
    // (every service names its networks).
    let nets = stack_networks(&node, "shop");
    let names: BTreeSet<&str> = nets.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["shop_back", "shop_front"]), "{nets:#?}");
    let back = nets.iter().find(|n| n.name == "shop_back").expect("shop_back");
    assert_eq!(back.driver, "bridge");
    assert_eq!(back.labels.get("io.stackd.network").map(String::as_str), Some("back"));
    assert_eq!(back.labels.get("team").map(String::as_str), Some("payments"));

    // client → api, by service name and by alias.
    let client = container_of(&node, "shop_client");
    assert_eq!(fetch(&client, "http://api:8080/"), Ok("web 1".to_string()));
    assert_eq!(fetch(&client, "http://backend:8080/"), Ok("web 1".to_string()));

    // outsider is on another network: neither the name nor the address reaches api.
    let outsider = container_of(&node, "shop_outsider");
    let api = container_of(&node, "shop_api");
    let err = fetch(&outsider, "http://api:8080/").expect_err("the name resolves only on back");
    assert!(err.contains("bad address"), "{err}");
    let ip = docker::ip_on(&api, "shop_back").expect("api has an address on shop_back");
    assert!(fetch(&outsider, &format!("http://{ip}:8080/")).is_err(), "outsider reached api at {ip}");
    assert_eq!(fetch(&client, &format!("http://{ip}:8080/")), Ok("web 1".to_string()), "the address works from back");

    // service inspect: api's virtual address on back, in the cluster's pool
    // (10.192.0.0/12), and its one task there as an endpoint, at the address
    // `ps -o json` gives it.
    let inspect = node.stackctl_json(&["service", "inspect", "shop_api"]);
    let on_back = inspect["networks"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["network"] == "shop_back"))
        .unwrap_or_else(|| panic!("shop_api on shop_back: {inspect:#}"));
    let vip: Ipv4Addr = on_back["vip"].as_str().and_then(|v| v.parse().ok()).expect("a VIP");
    assert_eq!(u32::from(vip) & 0xfff0_0000, u32::from(Ipv4Addr::new(10, 192, 0, 0)), "{vip} in 10.192.0.0/12");
    let tasks = node.stackctl_json(&["ps", "shop_api"]);
    let task_ip = tasks[0]["addresses"]["shop_back"].as_str().expect("the task's address on shop_back").to_string();
    assert_eq!(on_back["endpoints"][0]["ip"], task_ip.as_str(), "{inspect:#}");
    let text = node.stackctl(&["service", "inspect", "shop_api"]);
    assert!(text.contains(&format!("VIP {vip}")) && text.contains(&task_ip), "{text}");

    // node inspect: the node holds a slice of shop_back, with its gateway there.
    let nodes = node.stackctl_json(&["node", "ls"]);
    let name = nodes[0]["name"].as_str().expect("a node name");
    let me = node.stackctl_json(&["node", "inspect", name]);
    let back = me["networks"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["network"] == "shop_back"))
        .unwrap_or_else(|| panic!("the node on shop_back: {me:#}"));
    let gateway: Ipv4Addr = back["gateway"].as_str().and_then(|g| g.parse().ok()).expect("a gateway");
    assert_eq!(u32::from(gateway) & 0xfff0_0000, u32::from(Ipv4Addr::new(10, 192, 0, 0)), "{me:#}");
    assert_eq!(back["tasks"], 2, "api and client: {me:#}");
    let missing = node.stackctl_output(&["node", "inspect", "no-such-node"]).expect("stackctl runs");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no node \"no-such-node\""), "{missing:?}");

    // stack rm: the containers go, then the networks.
    node.stackctl(&["stack", "rm", "shop"]);
    wait_until(WAIT, "the stack's networks removed", || stack_networks(&node, "shop").is_empty().then_some(()));
    let label = format!("io.stackd.cluster={}", node.cluster_id());
    assert!(docker::containers(&label).is_empty(), "containers left after stack rm");
}

#[test]
fn t02_services_without_networks_share_the_default_network() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("net2").expect("init");
    let file = node.write_stack(
        "blog.yml",
        "services:\n  web:\n    image: stackd-test/web:1\n    stop_grace_period: 1s\n  probe:\n    image: stackd-test/busybox:1\n    command: [sleep, '3600']\n    init: true\n    stop_grace_period: 1s\n",
    );
    node.stackctl(&["deploy", "-c", &file, "blog", "--wait", "--timeout", "60s"]);
    let nets = stack_networks(&node, "blog");
    assert_eq!(nets.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["blog_default"]);
    assert_eq!(nets[0].labels.get("io.stackd.network").map(String::as_str), Some("default"));
    let probe = container_of(&node, "blog_probe");
    assert_eq!(fetch(&probe, "http://web:8080/"), Ok("web 1".to_string()));

    // A dry run shows what a deploy would change in the networks.
    let next = node.write_stack(
        "next.yml",
        "services:\n  web:\n    image: stackd-test/web:1\n    stop_grace_period: 1s\n    networks: [default, admin]\n  probe:\n    image: stackd-test/busybox:1\n    command: [sleep, '3600']\n    init: true\n    stop_grace_period: 1s\nnetworks:\n  default:\n    labels: {tier: blog}\n  admin:\n",
    );
    let out = node.stackctl(&["deploy", "-c", &next, "blog", "--dry-run"]);
    assert!(out.contains("~ update blog_web (rolling update: tasks are replaced)"), "{out}");
    assert!(out.contains("+ network admin (blog_admin)"), "{out}");
    assert!(out.contains("~ network default (applies to networks created from now on"), "{out}");
    assert!(out.contains("labels.tier: (none) → \"blog\""), "{out}");
    let plan = node.stackctl_json(&["deploy", "-c", &next, "blog", "--dry-run"]);
    assert_eq!(plan["networks"]["create"], serde_json::json!(["admin"]));
    assert_eq!(plan["networks"]["update"][0]["network"], "default");
}

#[test]
fn t03_a_missing_external_network_rejects_the_task() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("net3").expect("init");
    let missing = format!("stackd-test-missing-{}", std::process::id());
    let file = node.write_stack(
        "ext.yml",
        &format!(
            "services:\n  web:\n    image: stackd-test/web:1\n    networks: [infra]\nnetworks:\n  infra:\n    external: true\n    name: {missing}\n"
        ),
    );
    node.stackctl(&["deploy", "-c", &file, "ext"]);
    let expected = format!("external network {missing} does not exist on this node");
    let task = wait_until(WAIT, "a rejected task", || {
        let v = node.stackctl_json(&["ps", "ext"]);
        v.as_array()?.iter().find(|t| t["current_state"] == "rejected").cloned()
    });
    let err = task["error"].as_str().unwrap_or_default();
    assert!(err.starts_with(&expected), "{task:#}");
    // The table cuts a long error to one short line; --no-trunc shows it whole.
    let table = node.stackctl(&["ps", "ext"]);
    assert!(table.contains(&expected[..40]) && table.contains('…'), "{table}");
    let table = node.stackctl(&["ps", "ext", "--no-trunc"]);
    assert!(table.contains(&expected), "{table}");
    // Nothing was created: no container, and the external network stays absent.
    let label = format!("io.stackd.cluster={}", node.cluster_id());
    assert!(docker::containers(&label).is_empty());
    let o = std::process::Command::new("docker").args(["network", "inspect", &missing]).output().expect("docker");
    assert!(!o.status.success(), "{missing} was created");
}

/// `GET /` on 127.0.0.1:`port` from the test process; `None` until it answers.
fn get_local(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split("\r\n\r\n").nth(1).map(|b| b.trim().to_string())
}

#[test]
fn t04_network_mode_host_listens_on_the_hosts_network() {
    if !require_docker() {
        return;
    }
    build_images();
    let node = Node::init("net4").expect("init");
    // A port free on this host, for the task to listen on directly.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let file = node.write_stack(
        "hostnet.yml",
        &format!(
            "services:\n  web:\n    image: stackd-test/web:1\n    network_mode: host\n    stop_grace_period: 1s\n    command: [httpd, -f, -p, '127.0.0.1:{port}', -h, /www]\n"
        ),
    );
    node.stackctl(&["deploy", "-c", &file, "hostnet", "--wait", "--timeout", "60s"]);
    let id = container_of(&node, "hostnet_web");
    let mode = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.HostConfig.NetworkMode}}", &id])
        .output()
        .expect("docker inspect");
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "host");
    let page = wait_until(WAIT, "the page on the host's port", || get_local(port));
    assert_eq!(page, "web 1");
    // No stack network was created for it.
    assert!(stack_networks(&node, "hostnet").is_empty());
    node.stackctl(&["stack", "rm", "hostnet"]);
}
