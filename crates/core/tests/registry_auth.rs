//! A stack's registry credentials in the state: a deploy with them
//! (`--with-registry-auth`) replaces them, a deploy without keeps them,
//! removing the stack removes them; a stack without any serialises as
//! before they existed, and no `Debug` form shows them.

mod common;

use stackd_core::ClusterState;
use stackd_core::command::Command;
use stackd_core::registry::{RegistryAuth, RegistryCredential};

fn auth(password: &str) -> RegistryAuth {
    let c = RegistryCredential { username: "ci".into(), password: password.into(), ..Default::default() };
    RegistryAuth([("reg.example.com:5000".to_string(), c)].into())
}

fn deploy(s: &mut ClusterState, i: u64, registry_auth: Option<RegistryAuth>) {
    let cmd = Command::PutStack {
        spec: common::shop_web("reg.example.com:5000/shop/web:1"),
        prune: false,
        registry_auth,
        at: i,
    };
    assert_eq!(s.apply(i, &cmd).rejected, None);
}

#[test]
fn a_deploy_with_credentials_replaces_them_and_one_without_keeps_them() {
    let mut s = ClusterState::default();
    s.apply(1, &Command::InitCluster { cluster_id: "c".into(), at: 1, security: None, node: None });
    deploy(&mut s, 2, None);
    assert!(s.stacks["shop"].registry_auth.is_empty());
    let plain = serde_json::to_string(&s.stacks["shop"]).expect("serialises");
    assert!(!plain.contains("registry_auth"), "a stack without credentials serialises as before: {plain}");

    deploy(&mut s, 3, Some(auth("first-pw")));
    assert_eq!(s.stacks["shop"].registry_auth, auth("first-pw"));
    deploy(&mut s, 4, None);
    assert_eq!(s.stacks["shop"].registry_auth, auth("first-pw"), "a deploy without the flag keeps them");
    deploy(&mut s, 5, Some(auth("second-pw")));
    assert_eq!(s.stacks["shop"].registry_auth, auth("second-pw"));
    let debug = format!(
        "{s:?}{:?}",
        Command::PutStack { spec: common::shop_web("x"), prune: false, registry_auth: Some(auth("third-pw")), at: 6 }
    );
    assert!(!debug.contains("second-pw") && !debug.contains("third-pw"), "Debug shows no credential");
    deploy(&mut s, 6, Some(RegistryAuth::default()));
    assert!(s.stacks["shop"].registry_auth.is_empty(), "an empty set replaces them too");

    deploy(&mut s, 7, Some(auth("pw")));
    assert_eq!(s.apply(8, &Command::RemoveStack { name: "shop".into(), at: 8 }).rejected, None);
    deploy(&mut s, 9, None);
    assert!(s.stacks["shop"].registry_auth.is_empty(), "they went with the stack");
}
