//! TLS and authentication of a single-node cluster: what `stackd init`
//! writes, and what stackctl is refused without the right settings.

use std::os::unix::fs::PermissionsExt;

use stackd_tests::{Node, require_docker};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn t_auth_stackctl_needs_tls_the_ca_and_a_valid_token() {
    if !require_docker() {
        return;
    }
    let node = Node::init("tauth").expect("init");
    let dir = node.dir.path();

    // The files: private, and stackctl.env says where and how to connect.
    assert_eq!(mode(dir), 0o700);
    assert_eq!(mode(&dir.join("tls")), 0o700);
    assert_eq!(mode(&dir.join("tls/node.key")), 0o600);
    assert_eq!(mode(&dir.join("stackctl.env")), 0o600);
    assert!(!dir.join("tls/bootstrap.json").exists(), "bootstrap state left behind");
    let env = node.stackctl_env().expect("stackctl.env");
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(get("STACKCTL_ADDR"), format!("https://{}", node.addr));
    assert!(std::path::Path::new(&get("STACKCTL_CA")).ends_with("tls/ca.crt"), "{env:?}");
    let token = get("STACKCTL_TOKEN");
    assert!(token.starts_with("STKC-1-"), "no admin token in stackctl.env");

    // With its settings stackctl works, and never shows the token.
    let o = node.stackctl_output(&["node", "ls"]).expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&token));
    assert!(!node.log().contains(&token), "the token is in the node's log");

    // No token: refused by the manager, and told what is missing.
    let o = node.stackctl_output_unset(&["node", "ls"], &["STACKCTL_TOKEN"], &[]).expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("unauthenticated") && err.contains("STACKCTL_TOKEN"), "{err}");

    // A wrong token: refused, and not echoed.
    let (id, _) = token["STKC-1-".len()..].split_once('-').expect("token shape");
    let wrong = format!("STKC-1-{id}-{}", "0".repeat(32));
    let o = node.stackctl_output_env(&["stack", "ls"], &[("STACKCTL_TOKEN", &wrong)]).expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("unauthenticated") && !err.contains(&wrong), "{err}");

    // Plaintext: refused by stackctl itself.
    let http = format!("http://{}", node.addr);
    let o = node.stackctl_output_env(&["node", "ls"], &[("STACKCTL_ADDR", &http)]).expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("TLS only"), "{err}");

    // No CA: stackctl says which setting is missing.
    let o = node.stackctl_output_unset(&["node", "ls"], &["STACKCTL_CA"], &[]).expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("STACKCTL_CA"), "{err}");
}
