//! Networks: the top-level section, a service's `networks:` in both forms,
//! the implicit `default` network; one test per error class.

use std::collections::BTreeMap;

use super::{errors, ok, warnings};
use crate::model::{NetworkAttachment, NetworkSpec};

fn attached(network: &str, aliases: &[&str]) -> NetworkAttachment {
    NetworkAttachment { network: network.into(), aliases: aliases.iter().map(|a| a.to_string()).collect() }
}

fn named(name: &str) -> NetworkSpec {
    NetworkSpec { name: name.into(), ..NetworkSpec::default() }
}

#[test]
fn services_without_networks_join_the_default_network() {
    let spec = ok("services:\n  web:\n    image: x\n  db:\n    image: y\n").spec;
    assert_eq!(spec.services["web"].task.networks, [attached("shop_default", &[])]);
    assert_eq!(spec.services["db"].task.networks, [attached("shop_default", &[])]);
    assert_eq!(spec.networks, BTreeMap::from([("default".to_string(), named("shop_default"))]));
    // An empty section is no section.
    let spec = ok("services:\n  web:\n    image: x\n    networks: []\n").spec;
    assert_eq!(spec.services["web"].task.networks, [attached("shop_default", &[])]);
}

#[test]
fn the_default_network_exists_only_when_a_service_joins_it() {
    let spec = ok("services:\n  web:\n    image: x\n    networks: [back]\nnetworks:\n  back:\n").spec;
    assert_eq!(spec.services["web"].task.networks, [attached("shop_back", &[])]);
    assert_eq!(spec.networks, BTreeMap::from([("back".to_string(), named("shop_back"))]));
}

#[test]
fn a_top_level_default_entry_customises_the_default_network() {
    let spec = ok(
        "services:\n  web:\n    image: x\nnetworks:\n  default:\n    name: shared\n    driver_opts:\n      com.docker.network.bridge.enable_icc: 'true'\n",
    )
    .spec;
    assert_eq!(spec.services["web"].task.networks, [attached("shared", &[])]);
    let d = &spec.networks["default"];
    assert_eq!(d.name, "shared");
    assert_eq!(d.driver_opts["com.docker.network.bridge.enable_icc"], "true");
    // An external default network: services join a network that exists.
    let spec = ok("services:\n  web:\n    image: x\nnetworks:\n  default:\n    external: true\n    name: infra\n").spec;
    assert_eq!(spec.services["web"].task.networks, [attached("infra", &[])]);
    assert!(spec.networks["default"].external);
}

#[test]
fn list_and_map_forms_sorted_by_key() {
    let spec = ok(
        "services:\n  web:\n    image: x\n    networks: [front, back]\n  api:\n    image: x\n    networks:\n      front:\n      back:\n        aliases: [api-v1, backend]\n      default:\nnetworks:\n  front:\n  back:\n",
    )
    .spec;
    assert_eq!(spec.services["web"].task.networks, [attached("shop_back", &[]), attached("shop_front", &[])]);
    assert_eq!(
        spec.services["api"].task.networks,
        [attached("shop_back", &["api-v1", "backend"]), attached("shop_default", &[]), attached("shop_front", &[])]
    );
    assert!(spec.networks.contains_key("default"), "api joins default explicitly");
}

#[test]
fn top_level_networks_are_namespaced_unless_named_or_external() {
    let spec = ok(
        "services:\n  web:\n    image: x\n    networks: [a, b, c, d, e]\nnetworks:\n  a:\n  b:\n    name: custom\n  c:\n    external: true\n  d:\n    external:\n      name: legacy\n  e:\n    driver: bridge\n    internal: true\n    attachable: true\n    labels: [team=a]\n    driver_opts:\n      com.docker.network.driver.mtu: 1400\n",
    )
    .spec;
    let n = &spec.networks;
    assert_eq!(n["a"], named("shop_a"));
    assert_eq!(n["b"], named("custom"));
    assert_eq!(n["c"], NetworkSpec { external: true, ..named("c") });
    assert_eq!(n["d"], NetworkSpec { external: true, ..named("legacy") });
    assert_eq!(
        n["e"],
        NetworkSpec {
            driver: Some("bridge".into()),
            internal: true,
            labels: BTreeMap::from([("team".to_string(), "a".to_string())]),
            driver_opts: BTreeMap::from([("com.docker.network.driver.mtu".to_string(), "1400".to_string())]),
            ..named("shop_e")
        }
    );
    let nets: Vec<&str> = spec.services["web"].task.networks.iter().map(|a| a.network.as_str()).collect();
    assert_eq!(nets, ["shop_a", "custom", "c", "legacy", "shop_e"]);
    assert!(!n.contains_key("default"));
}

#[test]
fn ignored_settings_are_warnings_with_their_position() {
    let w = warnings(
        "services:\n  web:\n    image: x\n    networks:\n      back:\n        priority: 10\n        mac_address: 02:42:ac:11:65:43\n        link_local_ips: [169.254.8.8]\n        driver_opts: {a: b}\n        x-note: fine\nnetworks:\n  back:\n    ipam:\n      driver: default\n    enable_ipv6: false\n    attachable: true\n    x-note: fine\n",
    );
    assert_eq!(
        w,
        [
            "stack.yml:6:9: services.web.networks.back.priority: not supported yet; ignored",
            "stack.yml:7:9: services.web.networks.back.mac_address: not supported yet; ignored",
            "stack.yml:8:9: services.web.networks.back.link_local_ips: not supported yet; ignored",
            "stack.yml:9:9: services.web.networks.back.driver_opts: not supported yet; ignored",
        ]
    );
}

#[test]
fn a_subnet_of_the_stacks_own_or_ipv6_is_refused() {
    for (net, why) in [
        (
            "    ipam:\n      config:\n        - subnet: 172.20.0.0/24\n",
            "stack.yml:7:5: networks.back.ipam: stackd gives each stack network its addresses",
        ),
        (
            "    ipam:\n      driver: custom\n",
            "stack.yml:7:5: networks.back.ipam: stackd gives each stack network its addresses",
        ),
        ("    enable_ipv6: true\n", "stack.yml:7:5: networks.back.enable_ipv6: stack networks are IPv4 only"),
    ] {
        let e = errors(&format!("services:\n  web:\n    image: x\n    networks: [back]\nnetworks:\n  back:\n{net}"));
        assert!(e.iter().any(|e| e.starts_with(why)), "{net}: {e:?}");
    }
    // A fixed address of a task: the others would reach it there.
    let e = errors(
        "services:\n  web:\n    image: x\n    networks:\n      back:\n        ipv4_address: 172.20.0.2\nnetworks:\n  back: {}\n",
    );
    assert!(
        e.iter().any(|e| e
            .starts_with("stack.yml:6:9: services.web.networks.back.ipv4_address: stackd gives each task its address")),
        "{e:?}"
    );
}

#[test]
fn overlay_and_other_drivers_pass_through() {
    let loaded = ok(
        "services:\n  web:\n    image: x\n    networks: [a, b, c]\nnetworks:\n  a:\n    driver: overlay\n  b:\n    driver: overlay\n  c:\n    driver: macvlan\n",
    );
    assert!(loaded.warnings.is_empty(), "overlay networks span the nodes: {:?}", loaded.warnings);
    assert_eq!(loaded.spec.networks["a"].driver.as_deref(), Some("overlay"));
    assert_eq!(loaded.spec.networks["c"].driver.as_deref(), Some("macvlan"));
}

#[test]
fn undefined_network() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    networks: [front, back]\n  api:\n    image: x\n    networks:\n      back:\n        aliases: [api]\nnetworks:\n  front:\n"
        ),
        [
            "stack.yml:4:23: services.web.networks[1]: service web refers to undefined network back",
            "stack.yml:8:7: services.api.networks.back: service api refers to undefined network back",
        ]
    );
}

#[test]
fn network_listed_twice() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    networks: [back, back]\nnetworks:\n  back:\n"),
        ["stack.yml:4:22: services.web.networks[1]: network back is listed twice"]
    );
}

#[test]
fn service_networks_of_the_wrong_shape() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    networks: back\nnetworks:\n  back:\n"),
        ["stack.yml:4:5: services.web.networks: must be a list of networks or a mapping, got back"]
    );
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    networks:\n      back:\n        aliases: api\nnetworks:\n  back:\n"
        ),
        ["stack.yml:6:9: services.web.networks.back.aliases: must be a list, got api"]
    );
}

#[test]
fn invalid_alias() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    networks:\n      back:\n        aliases: [ok, 'not ok', -x]\nnetworks:\n  back:\n"
        ),
        [
            "stack.yml:6:23: services.web.networks.back.aliases[1]: alias \"not ok\" is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit",
            "stack.yml:6:33: services.web.networks.back.aliases[2]: alias \"-x\" is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit",
        ]
    );
}

#[test]
fn settings_of_an_external_network() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    networks: [infra]\nnetworks:\n  infra:\n    external: true\n    driver: bridge\n    internal: true\n    labels: {a: b}\n    driver_opts: {c: d}\n"
        ),
        [
            "stack.yml:8:5: networks.infra.driver: cannot be set on an external network (network infra is not managed by stackd)",
            "stack.yml:9:5: networks.infra.internal: cannot be set on an external network (network infra is not managed by stackd)",
            "stack.yml:10:5: networks.infra.labels: cannot be set on an external network (network infra is not managed by stackd)",
            "stack.yml:11:5: networks.infra.driver_opts: cannot be set on an external network (network infra is not managed by stackd)",
        ]
    );
}

#[test]
fn docker_host_and_none_networks_are_external_and_joined_alone() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    networks: [a, host, c]\nnetworks:\n  a:\n    driver: host\n  host:\n    external: true\n  c:\n    external:\n      name: none\n  d:\n    name: host\n"
        ),
        [
            "stack.yml:4:5: services.web.networks: Docker's `none` network is joined alone and without aliases",
            "stack.yml:7:5: networks.a.driver: driver `host` cannot be used for a stack network: use `network_mode: host` in the service",
            "stack.yml:13:3: networks.d: networks host and d are both named host",
            "stack.yml:14:5: networks.d.name: Docker's `host` network can only be joined as an external network, or with network_mode: host",
        ]
    );
    // Swarm's way to the host's network: an external network named host.
    let loaded = ok(
        "services:\n  web:\n    image: x\n    networks: [hostnet]\nnetworks:\n  hostnet:\n    external:\n      name: host\n",
    );
    let web = &loaded.spec.services["web"];
    assert_eq!(web.task.networks, [NetworkAttachment { network: "host".into(), aliases: vec![] }]);
    assert_eq!(loaded.spec.networks.keys().collect::<Vec<_>>(), ["hostnet"]);
}

#[test]
fn invalid_network_names() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\nnetworks:\n  -bad:\n  ok:\n    name: 'has space'\n  empty:\n    name: ''\n"
        ),
        [
            "stack.yml:5:3: networks.-bad: network name is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit",
            "stack.yml:7:5: networks.ok.name: \"has space\" is not a valid network name: use letters, digits, '-', '_' and '.', starting with a letter or digit",
            "stack.yml:9:5: networks.empty.name: \"\" is not a valid network name: use letters, digits, '-', '_' and '.', starting with a letter or digit",
        ]
    );
}

#[test]
fn two_networks_with_one_name() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\nnetworks:\n  a:\n    name: shared\n  b:\n    name: shared\n"),
        ["stack.yml:7:3: networks.b: networks a and b are both named shared"]
    );
}

#[test]
fn driver_options_need_values_and_drivers_a_name() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    networks: [a]\nnetworks:\n  a:\n    driver: ''\n    driver_opts: [mtu]\n    internal: maybe\n"
        ),
        [
            "stack.yml:7:5: networks.a.driver: \"\" is not a driver name",
            "stack.yml:8:19: networks.a.driver_opts[0]: driver option mtu needs a value",
            "stack.yml:9:5: networks.a.internal: must be true or false, got maybe",
        ]
    );
}
