//! The normalised stack written back as compose (`stackctl config`):
//! it validates against the compose JSON schema, and loading it again gives
//! the same stack — normalising a normalised stack changes nothing.

use std::path::{Path, PathBuf};

use stackd_core::compose;
use stackd_core::loader::{LoadOptions, SourceFile, load};
use stackd_core::model::StackSpec;

mod common;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus")
}

/// The compose schema, compiled once per call (it is small).
fn validate_against_schema(doc: &serde_json::Value, what: &str) {
    let path = shared().join("schema/compose-spec.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read compose-spec.json")).expect("schema is JSON");
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.set_default_draft(boon::Draft::V7);
    compiler.add_resource("compose-spec.json", schema).expect("add schema");
    let index = compiler.compile("compose-spec.json", &mut schemas).expect("compile schema");
    if let Err(e) = schemas.validate(doc, index) {
        panic!("{what}: the emitted compose does not validate against compose-spec.json:\n{e:#}\n{doc:#}");
    }
}

/// Emits `spec` as YAML and loads it again.
fn round_trip(spec: &StackSpec, what: &str) -> StackSpec {
    let doc = compose::document(spec);
    validate_against_schema(&doc, what);
    let yaml = serde_saphyr::to_string(&doc).expect("serialise YAML");
    let files = [SourceFile { name: "config.yml".into(), text: yaml.clone() }];
    match load(&spec.name, &files, &LoadOptions::default()) {
        Ok(l) => l.spec,
        Err(e) => panic!("{what}: the emitted compose does not load:\n{e}\n---\n{yaml}"),
    }
}

#[test]
fn corpus_files_round_trip_and_validate() {
    let mut checked = 0;
    for file in common::corpus_files() {
        let name = file.name.clone();
        let files = [file];
        let options =
            LoadOptions { env: common::corpus_env(), env_file: None, project_dir: None, profiles: Vec::new() };
        let Ok(loaded) = load("corpus", &files, &options) else { continue };
        let again = round_trip(&loaded.spec, &name);
        assert_eq!(again, loaded.spec, "{name}: loading the normalised form changed the stack");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} corpus files loaded");
}

#[test]
fn example_stacks_round_trip_and_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../stacks");
    for entry in std::fs::read_dir(&dir).expect("read stacks/").filter_map(Result::ok) {
        let path = entry.path();
        let name = path.display().to_string();
        let files = [SourceFile { name: name.clone(), text: std::fs::read_to_string(&path).expect("read") }];
        let loaded = load("example", &files, &LoadOptions::default()).unwrap_or_else(|e| panic!("{name}:\n{e}"));
        assert_eq!(round_trip(&loaded.spec, &name), loaded.spec, "{name}");
    }
}

#[test]
#[should_panic(expected = "does not validate against compose-spec.json")]
fn the_schema_check_rejects_what_compose_rejects() {
    // Unknown service keys are refused by the schema (only `x-` extensions are open).
    let doc = serde_json::json!({ "services": { "web": { "image": "x", "not_a_compose_key": true } } });
    validate_against_schema(&doc, "a broken document");
}

#[test]
fn runtime_options_load_and_round_trip() {
    let text = r#"
services:
  web:
    image: web:1
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD, SETUID]
    sysctls:
      net.core.somaxconn: 1024
    extra_hosts:
      - "db=10.0.0.5"
      - "cache:10.0.0.6"
    dns: 10.0.0.2
    dns_search: [example.internal]
    ulimits:
      nproc: 65535
      nofile:
        soft: 1024
        hard: 4096
    logging:
      driver: json-file
      options:
        max-size: 10m
"#;
    let files = [SourceFile { name: "rt.yml".into(), text: text.into() }];
    let loaded = load("rt", &files, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let t = &loaded.spec.services["web"].task;
    assert_eq!(t.cap_add, vec!["NET_ADMIN"]);
    assert_eq!(t.cap_drop, vec!["MKNOD", "SETUID"]);
    assert_eq!(t.sysctls["net.core.somaxconn"], "1024");
    assert_eq!(t.extra_hosts, vec!["db:10.0.0.5", "cache:10.0.0.6"]);
    assert_eq!(t.dns, vec!["10.0.0.2"]);
    assert_eq!(t.dns_search, vec!["example.internal"]);
    assert_eq!((t.ulimits["nproc"].soft, t.ulimits["nproc"].hard), (65535, 65535));
    assert_eq!((t.ulimits["nofile"].soft, t.ulimits["nofile"].hard), (1024, 4096));
    let log = t.logging.as_ref().expect("logging");
    assert_eq!((log.driver.as_str(), log.options["max-size"].as_str()), ("json-file", "10m"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(round_trip(&loaded.spec, "runtime options"), loaded.spec);
}

#[test]
fn runtime_option_errors_name_the_place() {
    let text = "services:\n  web:\n    image: web:1\n    cap_add: [net_admin]\n    dns: [not-an-ip]\n    extra_hosts: [nohost]\n    ulimits:\n      nofile: {soft: 10, hard: 5}\n";
    let files = [SourceFile { name: "bad.yml".into(), text: text.into() }];
    let err = load("rt", &files, &LoadOptions::default()).expect_err("invalid").to_string();
    for expected in [
        "bad.yml:4:15: services.web.cap_add[0]: \"net_admin\" is not a capability name",
        "bad.yml:5:11: services.web.dns[0]: \"not-an-ip\" is not an IP address",
        "bad.yml:6:19: services.web.extra_hosts[0]: \"nohost\" must be host:ip",
        "services.web.ulimits.nofile: soft limit 10 is above the hard limit 5",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// `logging.options` without a driver configure the engine's default
/// driver (docker/cli passes them with an empty driver name): the
/// normalised stack writes them back without a driver, and loads the same.
#[test]
fn logging_options_without_a_driver_round_trip() {
    let text = "services:\n  web:\n    image: web:1\n    logging:\n      options: {max-size: 10m}\n";
    let files = [SourceFile { name: "rt.yml".into(), text: text.into() }];
    let loaded = load("rt", &files, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let log = loaded.spec.services["web"].task.logging.as_ref().expect("logging");
    assert_eq!((log.driver.as_str(), log.options["max-size"].as_str()), ("", "10m"));
    let doc = compose::document(&loaded.spec);
    assert_eq!(doc["services"]["web"]["logging"], serde_json::json!({ "options": { "max-size": "10m" } }));
    assert_eq!(round_trip(&loaded.spec, "logging options"), loaded.spec);
}

#[test]
fn depends_on_loads_and_round_trips() {
    let text = "services:\n  web:\n    image: web:1\n    depends_on:\n      migrate: {condition: service_completed_successfully}\n      db: {condition: service_healthy, required: false}\n  db:\n    image: db:1\n  migrate:\n    image: m:1\n    deploy: {mode: replicated-job}\n    depends_on: [db]\n";
    let files = [SourceFile { name: "rt.yml".into(), text: text.into() }];
    let loaded = load("rt", &files, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        serde_json::to_value(&loaded.spec.services["web"].depends_on).expect("json"),
        serde_json::json!([
            { "service": "db", "condition": "service_healthy", "required": false },
            { "service": "migrate", "condition": "service_completed_successfully", "required": true },
        ])
    );
    let doc = compose::document(&loaded.spec);
    assert_eq!(
        doc["services"]["migrate"]["depends_on"],
        serde_json::json!({ "db": { "condition": "service_started" } })
    );
    assert!(doc["services"]["db"].get("depends_on").is_none());
    assert_eq!(round_trip(&loaded.spec, "depends_on"), loaded.spec);
}

#[test]
fn autoscale_policies_load_and_round_trip() {
    let text = r#"
services:
  web:
    image: nginx
    ports: ["8080:80"]
    deploy:
      resources: {limits: {cpus: "0.5"}}
    x-stackd-autoscale:
      min: 2
      max: 12
      target: {cpu: 70%}
  api:
    image: api:1
    ports: ["8081:80"]
    deploy: {replicas: 3}
    x-stackd-autoscale:
      max: 6
      target: {connections: 50}
      period: 30s
      scale_down_window: 10m
      scale_up_window: 1m30s
"#;
    let files = [SourceFile { name: "a.yml".into(), text: text.into() }];
    let loaded = load("a", &files, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let doc = compose::document(&loaded.spec);
    assert_eq!(
        doc["services"]["web"]["x-stackd-autoscale"],
        serde_json::json!({
            "min": 2, "max": 12, "target": { "cpu": "70%" },
            "period": "15s", "scale_down_window": "5m", "scale_up_window": "0s",
        })
    );
    // Without written replicas the service starts at min, and says so.
    assert_eq!(doc["services"]["web"]["deploy"]["replicas"], 2);
    assert_eq!(
        doc["services"]["api"]["x-stackd-autoscale"],
        serde_json::json!({
            "min": 1, "max": 6, "target": { "connections": 50 },
            "period": "30s", "scale_down_window": "10m", "scale_up_window": "1m30s",
        })
    );
    assert_eq!(round_trip(&loaded.spec, "autoscale"), loaded.spec);
}

#[test]
fn placement_and_resources_load_and_round_trip() {
    let text = r#"
services:
  web:
    image: web:1
    deploy:
      placement:
        constraints:
          - node.labels.zone == eu
          - node.role != worker
        preferences:
          - spread: node.labels.rack
        max_replicas_per_node: 2
      resources:
        limits:
          cpus: "0.5"
          memory: 512M
          pids: 100
        reservations:
          cpus: 0.25
          memory: 128m
"#;
    let files = [SourceFile { name: "p.yml".into(), text: text.into() }];
    let loaded = load("p", &files, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let t = &loaded.spec.services["web"].task;
    let constraints: Vec<String> = t.placement.constraints.iter().map(ToString::to_string).collect();
    assert_eq!(constraints, vec!["node.labels.zone == eu", "node.role != worker"]);
    assert_eq!(t.placement.preferences, vec!["node.labels.rack"]);
    assert_eq!(t.placement.max_replicas_per_node, 2);
    assert_eq!(
        (t.resources.limits.nano_cpus, t.resources.limits.memory_bytes, t.resources.limits.pids),
        (500_000_000, 512 << 20, 100)
    );
    assert_eq!((t.resources.reservations.nano_cpus, t.resources.reservations.memory_bytes), (250_000_000, 128 << 20));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(round_trip(&loaded.spec, "placement and resources"), loaded.spec);
}

#[test]
fn networks_load_and_round_trip() {
    let text = r#"
services:
  api:
    image: web:1
    networks:
      back:
        aliases: [api-v1, backend]
  client:
    image: busybox:1
    networks: [back, front]
  lone:
    image: busybox:1
networks:
  back:
    driver: bridge
    internal: true
    labels: {team: a}
    driver_opts:
      com.docker.network.driver.mtu: "1400"
  front:
    name: shop-front
  infra:
    external: true
"#;
    let files = [SourceFile { name: "n.yml".into(), text: text.into() }];
    let loaded = load("shop", &files, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let spec = &loaded.spec;
    let nets = |s: &str| -> Vec<String> {
        spec.services[s].task.networks.iter().map(|a| format!("{}{:?}", a.network, a.aliases)).collect()
    };
    assert_eq!(nets("api"), ["shop_back[\"api-v1\", \"backend\"]"]);
    assert_eq!(nets("client"), ["shop_back[]", "shop-front[]"]);
    assert_eq!(nets("lone"), ["shop_default[]"]);
    let keys: Vec<&str> = spec.networks.keys().map(String::as_str).collect();
    assert_eq!(keys, ["back", "default", "front", "infra"]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(round_trip(spec, "networks"), *spec);
}

#[test]
fn placement_and_resource_errors_name_the_place() {
    let text = "services:\n  web:\n    image: web:1\n    deploy:\n      placement:\n        constraints: [\"zone == eu\"]\n      resources:\n        limits:\n          memory: 12 parsecs\n";
    let files = [SourceFile { name: "bad.yml".into(), text: text.into() }];
    let err = load("p", &files, &LoadOptions::default()).expect_err("invalid").to_string();
    for expected in [
        "bad.yml:6:23: services.web.deploy.placement.constraints[0]: unknown constraint key \"zone\"",
        "bad.yml:9:11: services.web.deploy.resources.limits.memory: \"12 parsecs\" is not a byte size",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

mod generated {
    //! Valid stacks generated at random always load, and load back as themselves.

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use stackd_core::autoscale::{Policy, Target};
    use stackd_core::model::*;

    use super::round_trip;

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9]{0,7}"
    }

    /// Text that YAML and interpolation must both carry through unchanged.
    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 $:#'\"{}=./-]{1,12}"
    }

    fn ms() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), 1u64..4_000_000]
    }

    fn template(volumes: Vec<String>) -> impl Strategy<Value = TaskTemplate> {
        let basics = (
            "[a-z]{1,8}(:[0-9]{1,2})?",
            proptest::option::of(proptest::collection::vec(text(), 1..4)),
            proptest::collection::btree_map("[A-Z][A-Z0-9_]{0,6}", text(), 0..4),
            proptest::collection::btree_map("[a-z][a-z.]{0,8}", text(), 0..3),
            1u64..3_600_000,
        );
        let mounts = (
            proptest::collection::btree_set(1u8..20, 0..3),
            proptest::option::of(proptest::sample::select(if volumes.is_empty() {
                vec![String::new()]
            } else {
                volumes
            })),
            any::<bool>(),
        );
        let ports = proptest::collection::btree_map(
            1000u16..2000,
            (1u16..65535, any::<bool>(), any::<bool>(), any::<bool>()),
            0..3,
        );
        let extras = (
            proptest::collection::vec("[A-Z_]{2,8}", 0..2),
            proptest::option::of((1u64..8, 1u64..4)),
            proptest::option::of((0u64..4, 1u64..5)),
        );
        (basics, mounts, ports, extras).prop_map(
            |((image, command, env, labels, grace), (tmpfs, volume, ro), ports, (caps, placement, res))| {
                let mut mounts: Vec<Mount> = tmpfs
                    .into_iter()
                    .map(|i| Mount {
                        kind: MountKind::Tmpfs,
                        source: String::new(),
                        target: format!("/t{i}"),
                        read_only: false,
                        // Some with a size and a mode, some without.
                        tmpfs_size_bytes: u64::from(i % 3) << 20,
                        tmpfs_mode: if i % 2 == 0 { 0o1777 } else { 0 },
                    })
                    .collect();
                if let Some(v) = volume.filter(|v| !v.is_empty()) {
                    mounts.push(Mount {
                        kind: MountKind::Volume,
                        source: v,
                        target: "/data".into(),
                        read_only: ro,
                        tmpfs_size_bytes: 0,
                        tmpfs_mode: 0,
                    });
                }
                mounts.push(Mount {
                    kind: MountKind::Bind,
                    source: "/srv/app".into(),
                    target: "/app".into(),
                    read_only: ro,
                    tmpfs_size_bytes: 0,
                    tmpfs_mode: 0,
                });
                let ports = ports
                    .into_iter()
                    .map(|(published, (target, udp, host, proxy))| PortConfig {
                        target,
                        published: Some(published),
                        protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                        mode: if host { PublishMode::Host } else { PublishMode::Ingress },
                        host_ip: String::new(),
                        // TCP through the mesh only.
                        proxy_protocol: proxy && !udp && !host,
                    })
                    .collect();
                TaskTemplate {
                    image,
                    command,
                    env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    labels,
                    mounts,
                    ports,
                    stop_grace_period_ms: grace,
                    cap_add: caps,
                    placement: placement
                        .map(|(max, _)| Placement {
                            constraints: vec![Constraint::parse("node.labels.zone == eu").expect("valid")],
                            preferences: vec!["node.labels.rack".into()],
                            max_replicas_per_node: max,
                        })
                        .unwrap_or_default(),
                    resources: res
                        .map(|(cpu, gib)| ResourceSpec {
                            limits: ResourceLimits {
                                nano_cpus: cpu * 250_000_000 + 250_000_000,
                                memory_bytes: gib << 30,
                                pids: 0,
                            },
                            reservations: Resources {
                                nano_cpus: cpu * 250_000_000,
                                memory_bytes: 0,
                                generic: if cpu % 2 == 1 {
                                    [("gpu".to_string(), cpu)].into()
                                } else {
                                    Default::default()
                                },
                            },
                        })
                        .unwrap_or_default(),
                    ..Default::default()
                }
            },
        )
    }

    fn update_config(rollback: bool) -> impl Strategy<Value = UpdateConfig> {
        // A rollback's failure action is pause or continue.
        let actions: &[FailureAction] = if rollback {
            &[FailureAction::Pause, FailureAction::Continue]
        } else {
            &[FailureAction::Pause, FailureAction::Continue, FailureAction::Rollback]
        };
        (0u64..4, ms(), ms(), proptest::sample::select(actions.to_vec()), 0u8..5, any::<bool>()).prop_map(
            |(parallelism, delay_ms, monitor_ms, failure_action, ratio, start_first)| UpdateConfig {
                parallelism,
                delay_ms,
                monitor_ms,
                failure_action,
                max_failure_ratio: f64::from(ratio) / 4.0,
                order: if start_first { UpdateOrder::StartFirst } else { UpdateOrder::StopFirst },
            },
        )
    }

    /// An autoscaling policy around `replicas`, valid for a service with
    /// `ports` (a connections target needs a TCP port through the mesh):
    /// how far below and above `replicas` the bounds are, the target, the
    /// period and the windows.
    fn autoscale() -> impl Strategy<Value = (u64, u64, bool, u32, u64, u64, u64)> {
        (0u64..20, 0u64..20, any::<bool>(), 1u32..=1000, 1000u64..120_000, 0u64..=3_600_000, 0u64..=3_600_000)
    }

    fn with_autoscale(
        (below, above, connections, value, period, down_window, up_window): (u64, u64, bool, u32, u64, u64, u64),
        replicas: u64,
        ports: &[PortConfig],
    ) -> Policy {
        let min = replicas.saturating_sub(below).max(1);
        let mesh = ports
            .iter()
            .any(|p| p.published.is_some() && p.mode == PublishMode::Ingress && p.protocol == Protocol::Tcp);
        let target = if connections && mesh {
            Target::Connections { per_replica: value }
        } else {
            Target::Cpu { percent: value }
        };
        Policy { min, max: replicas + above, target, period, down_window, up_window }
    }

    fn mode() -> impl Strategy<Value = ServiceMode> {
        prop_oneof![
            (0u64..20).prop_map(|replicas| ServiceMode::Replicated { replicas }),
            Just(ServiceMode::Global),
            (0u64..20).prop_map(|replicas| ServiceMode::ReplicatedJob { replicas, max_concurrent: 0 }),
            Just(ServiceMode::GlobalJob),
        ]
    }

    /// The networks a service joins: for each of the stack's networks (engine
    /// names, in key order), whether it joins and its aliases; none: `default`.
    fn attachments(networks: Vec<String>, default: String) -> impl Strategy<Value = Vec<NetworkAttachment>> {
        let n = networks.len();
        proptest::collection::vec((any::<bool>(), proptest::collection::btree_set("[a-z][a-z0-9-]{0,6}", 0..3)), n..=n)
            .prop_map(move |choices| {
                let joined: Vec<NetworkAttachment> = networks
                    .iter()
                    .zip(choices)
                    .filter(|(_, (join, _))| *join)
                    .map(|(network, (_, aliases))| NetworkAttachment {
                        network: network.clone(),
                        aliases: aliases.into_iter().collect(),
                    })
                    .collect();
                if joined.is_empty() {
                    vec![NetworkAttachment { network: default.clone(), aliases: vec![] }]
                } else {
                    joined
                }
            })
    }

    /// A top-level network `key` of `stack`.
    fn network(stack: String, key: String) -> impl Strategy<Value = NetworkSpec> {
        (
            any::<bool>(),
            any::<bool>(),
            proptest::sample::select(vec![None, Some("bridge"), Some("overlay"), Some("macvlan")]),
            any::<bool>(),
            proptest::collection::btree_map("[a-z][a-z.]{0,8}", text(), 0..2),
            proptest::collection::btree_map("[a-z][a-z.]{0,8}", "[a-z0-9]{1,4}", 0..2),
        )
            .prop_map(move |(external, custom, driver, internal, labels, driver_opts)| {
                let name = match (custom, external) {
                    (true, _) => format!("{key}-net"),
                    (false, true) => key.clone(),
                    (false, false) => format!("{stack}_{key}"),
                };
                if external {
                    NetworkSpec { name, external, ..NetworkSpec::default() }
                } else {
                    NetworkSpec { name, external, driver: driver.map(str::to_string), internal, labels, driver_opts }
                }
            })
    }

    fn service(
        name: String,
        volumes: Vec<String>,
        networks: Vec<String>,
        default: String,
    ) -> impl Strategy<Value = ServiceSpec> {
        let policies = (
            prop_oneof![Just(RestartCondition::Any), Just(RestartCondition::OnFailure), Just(RestartCondition::None)],
            ms(),
            0u64..5,
            ms(),
        );
        (
            (template(volumes), attachments(networks, default)).prop_map(|(mut t, networks)| {
                t.networks = networks;
                t
            }),
            mode(),
            policies,
            update_config(false),
            update_config(true),
            any::<bool>(),
            proptest::collection::btree_map("[a-z]{1,6}", text(), 0..2),
            proptest::option::of(autoscale()),
        )
            .prop_map(
                move |(
                    mut task,
                    mut mode,
                    (condition, delay_ms, max_attempts, window_ms),
                    update,
                    rollback,
                    dnsrr,
                    labels,
                    policy,
                )| {
                    let job = mode.is_job();
                    let endpoint_mode = if dnsrr {
                        // dnsrr cannot publish ports in ingress mode.
                        for p in &mut task.ports {
                            p.mode = PublishMode::Host;
                            p.proxy_protocol = false;
                        }
                        EndpointMode::Dnsrr
                    } else {
                        EndpointMode::Vip
                    };
                    // Autoscaled: a replicated service, started within the bounds.
                    let autoscale = match (&mut mode, policy) {
                        (ServiceMode::Replicated { replicas }, Some(p)) => {
                            *replicas = (*replicas).max(1);
                            Some(with_autoscale(p, *replicas, &task.ports))
                        }
                        _ => None,
                    };
                    ServiceSpec {
                        autoscale,
                        name: name.clone(),
                        mode,
                        task,
                        restart: RestartPolicy {
                            // A job restarts on failure when `any` is asked for.
                            condition: if job && condition == RestartCondition::Any {
                                RestartCondition::OnFailure
                            } else {
                                condition
                            },
                            delay_ms,
                            max_attempts,
                            window_ms,
                        },
                        // A job has no rolling update: its policies are the defaults.
                        update: if job { UpdateConfig::default() } else { update },
                        rollback: if job { UpdateConfig::rollback_default() } else { rollback },
                        labels,
                        endpoint_mode,
                        depends_on: Vec::new(),
                    }
                },
            )
    }

    fn stack() -> impl Strategy<Value = StackSpec> {
        (
            name(),
            proptest::collection::btree_set(name(), 0..3),
            proptest::collection::btree_set(name(), 1..4),
            proptest::collection::btree_set(name(), 0..3),
        )
            .prop_flat_map(|(stack, vols, services, nets)| {
                let volumes: BTreeMap<String, VolumeSpec> = vols
                    .iter()
                    .map(|v| (v.clone(), VolumeSpec { name: format!("{stack}_{v}"), ..Default::default() }))
                    .collect();
                let networks: Vec<_> = nets.iter().map(|k| network(stack.clone(), k.clone())).collect();
                (Just(stack), Just(volumes), Just(services), Just(nets), networks)
            })
            .prop_flat_map(|(stack, volumes, services, keys, specs)| {
                let networks: BTreeMap<String, NetworkSpec> = keys.into_iter().zip(specs).collect();
                let default = networks.get("default").map_or_else(|| format!("{stack}_default"), |n| n.name.clone());
                let names: Vec<String> = volumes.values().map(|v| v.name.clone()).collect();
                let net_names: Vec<String> = networks.values().map(|n| n.name.clone()).collect();
                let services: Vec<_> = services
                    .into_iter()
                    .map(|s| service(s, names.clone(), net_names.clone(), default.clone()))
                    .collect();
                (Just(stack), Just(volumes), Just(networks), Just(default), services).prop_map(
                    |(name, volumes, mut networks, default, services)| {
                        let joins_default =
                            services.iter().any(|s| s.task.networks.iter().any(|a| a.network == default));
                        if joins_default && !networks.contains_key("default") {
                            networks.insert("default".into(), NetworkSpec { name: default, ..Default::default() });
                        }
                        StackSpec {
                            name,
                            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
                            volumes,
                            networks,
                            ..Default::default()
                        }
                    },
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn valid_generated_stacks_load_back_as_themselves(spec in stack()) {
            prop_assert_eq!(round_trip(&spec, "a generated stack"), spec);
        }
    }
}
