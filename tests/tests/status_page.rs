//! The status page (`stackd --status-addr`) in a real headless browser
//! (chromium through chromedriver) that trusts the cluster's CA: without a
//! session it shows the sign-in form; a bad token is refused with a clear
//! message; a viewer token signs in, and the page lists the deployed
//! service and the failed task's error; signing out and revoking the token
//! both end the session. A follower's page reads through the leader, and
//! says when it cannot.

use std::time::Duration;

use stackd_tests::browser::{self, Browser};
use stackd_tests::cluster::{Cluster, Opts};
use stackd_tests::task_rows::s;
use stackd_tests::{Node, build_images, free_port, require_docker, wait_until};

#[test]
fn the_status_page_signs_in_with_a_token_and_shows_services_and_failed_tasks() {
    if !require_docker() || !browser::available() {
        return;
    }
    build_images();
    let port = free_port();
    let opts = Opts::default().flag("--status-addr", &format!("127.0.0.1:{port}"));
    let node = Node::init_opts("status1", &opts).expect("node");

    // A service that runs, and one whose task fails: its image is on no node.
    let file = node.write_stack(
        "shop.yml",
        "services:\n  web:\n    image: stackd-test/busybox:1\n    command: [\"sleep\", \"3600\"]\n    init: true\n    stop_grace_period: 1s\n  broken:\n    image: stackd-test/not-on-this-node:1\n    pull_policy: never\n    deploy:\n      restart_policy:\n        condition: none\n",
    );
    node.stackctl(&["deploy", "-c", &file, "shop"]);
    let error = wait_until(Duration::from_secs(60), "shop_broken's task to fail with an error", || {
        let tasks = node.stackctl_json(&["ps", "shop"]);
        let tasks = tasks.as_array()?;
        let web_up = tasks.iter().any(|t| s(t, "name").starts_with("shop_web") && stackd_tests::task_rows::up(t));
        let failed = tasks.iter().find(|t| s(t, "name").starts_with("shop_broken") && !s(t, "error").is_empty())?;
        web_up.then(|| s(failed, "error").to_string())
    });
    let viewer = node.stackctl(&["token", "create", "viewer1", "--role", "viewer"]).trim().to_string();
    assert!(viewer.starts_with("STKC-1-"), "{viewer}");

    let b = Browser::start(&node.data_dir().join("tls/ca.crt")).expect("chromium");
    let home = format!("https://stackd-manager:{port}/");

    // No session: the sign-in form.
    b.goto(&home).expect("the page loads");
    b.wait_url(&format!("{home}login")).expect("sent to the sign-in form");
    assert!(b.find("form#login input#token[type=password]").is_some(), "{}", b.source().unwrap_or_default());
    assert!(b.find("#services").is_none());

    // A bad token: a clear message, no session.
    b.type_into("#token", "STKC-1-0123456789abcdef-0123456789abcdef0123456789abcdef").expect("type");
    b.click("#sign-in").expect("click");
    b.wait_for("#login-error").expect("refused");
    let message = b.text("#login-error").expect("a message");
    assert!(message.contains("unknown or revoked"), "{message}");
    assert!(!message.contains("0123456789abcdef0123456789abcdef"), "the secret is never echoed: {message}");

    // The viewer's token: the status page.
    b.type_into("#token", &viewer).expect("type");
    b.click("#sign-in").expect("click");
    b.wait_for("#viewer").expect("signed in");
    assert_eq!(b.url().expect("url"), home);
    assert_eq!(b.text("#viewer").expect("who"), "viewer1");
    let services = b.text("#services").expect("the services");
    assert!(services.contains("shop_web") && services.contains("1/1"), "{services}");
    assert!(services.contains("shop_broken"), "{services}");
    let failed = b.text("#failed-tasks").expect("the failed tasks");
    assert!(failed.contains("shop_broken") && failed.contains(&error), "{error:?} in:\n{failed}");
    let nodes = b.text("#nodes").expect("the nodes");
    assert!(nodes.contains("status1") && nodes.contains("leader"), "{nodes}");
    assert!(b.text("#events").expect("events").contains("shop_web"));
    let source = b.source().expect("source");
    assert!(!source.contains(&viewer[7..]), "the token is never in the page");

    // Signing out ends the session.
    b.click("#sign-out").expect("sign out");
    b.wait_for("form#login").expect("signed out");
    assert_eq!(b.url().expect("url"), format!("{home}login"));
    b.goto(&home).expect("load");
    b.wait_url(&format!("{home}login")).expect("sent to the sign-in form");

    // A revoked token ends its session on the next request.
    b.type_into("#token", &viewer).expect("type");
    b.click("#sign-in").expect("click");
    b.wait_for("#viewer").expect("signed in again");
    node.stackctl(&["token", "rm", "viewer1"]);
    b.goto(&home).expect("load");
    let message = b.text("#login-error").expect("a message");
    assert!(message.contains("revoked"), "{message}");

    drop(b);
    node.stackctl(&["stack", "rm", "shop"]);
}

/// Two managers without agents (no Docker needed): the follower's page
/// sees a token created a moment ago on the leader (its reads wait for the
/// leader's read index) and names the leader; once the leader is gone, the
/// page still answers, from the follower's own state, and says it may lag.
#[test]
fn a_followers_status_page_reads_through_the_leader_and_says_when_it_cannot() {
    if !browser::available() {
        return;
    }
    let mut c = Cluster::managers(1, &Opts::manager()).expect("a manager");
    let port = free_port();
    c.add_manager("m2", &Opts::manager().flag("--status-addr", &format!("127.0.0.1:{port}"))).expect("m2 joins");
    c.wait_voters(2, Duration::from_secs(60)).expect("two voters");
    let leader = c.leader().expect("a leader");
    assert_eq!(c.nodes[leader].name, "m1", "the first manager leads");

    let viewer = c.stackctl(&["token", "create", "viewer2", "--role", "viewer"]).trim().to_string();
    let b = Browser::start(&c.nodes[0].data_dir().join("tls/ca.crt")).expect("chromium");
    let home = format!("https://stackd-manager:{port}/");
    b.goto(&home).expect("the page loads");
    b.type_into("#token", &viewer).expect("type");
    b.click("#sign-in").expect("click");
    b.wait_for("#viewer").expect("signed in on the follower");
    let nodes = b.text("#nodes").expect("the nodes");
    let m1 = nodes.lines().find(|l| l.starts_with("m1")).unwrap_or_default();
    assert!(m1.contains("leader"), "{nodes}");
    assert!(b.source().expect("source").contains("served by manager <b>m2</b>"));
    assert!(b.find("#may-lag").is_none(), "a confirmed read");

    // No quorum: the page answers from m2's own state, and says so.
    c.nodes[0].kill9();
    b.goto(&home).expect("load");
    b.wait_for("#viewer").expect("still signed in");
    let note = b.text("#may-lag").expect("a note that it may lag");
    assert!(note.contains("may lag"), "{note}");
}
