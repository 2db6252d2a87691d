//! Shared fixtures and helpers for the conversion tests, wire-enum
//! bijection checks and property-based round trips.

use std::collections::BTreeMap;
use std::fmt::Debug;

use proptest::prelude::*;
use prost::Message;
use stackd_core::{model, state};

use super::ConvertError;
use crate::v1;

/// Checks that `value` survives core → wire → bytes → wire → core, that the
/// owned and borrowed conversions agree, and that the encoding keeps the
/// wire message as it was.
pub(super) fn round_trip<C, W>(value: &C)
where
    C: Clone + Debug + PartialEq + TryFrom<W, Error = ConvertError>,
    W: Message + Debug + Default + PartialEq + Clone + From<C> + for<'a> From<&'a C>,
{
    let wire = W::from(value);
    assert_eq!(W::from(value.clone()), wire, "owned and borrowed conversions differ");
    assert_eq!(C::try_from(wire.clone()).as_ref(), Ok(value), "core → wire → core");
    let decoded = W::decode(wire.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(decoded, wire, "wire → bytes → wire");
    assert_eq!(C::try_from(decoded).as_ref(), Ok(value), "core → wire → bytes → wire → core");
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

pub(super) fn node() -> model::Node {
    model::Node {
        id: "n1".into(),
        name: "host-1".into(),
        addr: "10.0.0.1:4242".into(),
        role: model::NodeRole::Manager,
        availability: model::Availability::Drain,
        state: model::NodeState::Ready,
        labels: labels(&[("zone", "a"), ("disk", "ssd")]),
        resources: model::Resources {
            nano_cpus: 4_000_000_000,
            memory_bytes: 8 << 30,
            generic: BTreeMap::from([("gpu".to_string(), 2)]),
        },
        engine_version: "27.3.1".into(),
        engine: model::EngineDescription {
            os: "linux".into(),
            os_name: "Debian GNU/Linux 12 (bookworm)".into(),
            arch: "x86_64".into(),
            kernel_version: "6.1.0-18-amd64".into(),
            labels: labels(&[("storage", "ssd"), ("rack", "")]),
        },
        updated_at: 1_700_000_000_000,
    }
}

/// A template with every optional set and every list non-empty.
pub(super) fn full_template() -> model::TaskTemplate {
    model::TaskTemplate {
        image: "nginx:1.27".into(),
        command: Some(strings(&["nginx", "-g", "daemon off;"])),
        entrypoint: Some(strings(&["/docker-entrypoint.sh"])),
        env: strings(&["A=1", "B=two words"]),
        labels: labels(&[("com.example", "x")]),
        mounts: vec![
            model::Mount {
                kind: model::MountKind::Volume,
                source: "shop_data".into(),
                target: "/data".into(),
                read_only: false,
                tmpfs_size_bytes: 0,
                tmpfs_mode: 0,
            },
            model::Mount {
                kind: model::MountKind::Tmpfs,
                source: String::new(),
                target: "/tmp".into(),
                read_only: false,
                tmpfs_size_bytes: 0,
                tmpfs_mode: 0,
            },
        ],
        ports: vec![
            model::PortConfig {
                target: 80,
                published: Some(8080),
                protocol: model::Protocol::Tcp,
                mode: model::PublishMode::Ingress,
                host_ip: String::new(),
                proxy_protocol: false,
            },
            model::PortConfig {
                target: 53,
                published: None,
                protocol: model::Protocol::Udp,
                mode: model::PublishMode::Host,
                host_ip: "0.0.0.0".into(),
                proxy_protocol: false,
            },
        ],
        working_dir: Some("/srv".into()),
        user: Some("1000:1000".into()),
        hostname: Some("web".into()),
        healthcheck: Some(model::HealthCheck {
            test: strings(&["CMD-SHELL", "curl -f http://localhost/ || exit 1"]),
            interval_ms: 30_000,
            timeout_ms: 5_000,
            retries: 3,
            start_period_ms: 10_000,
            start_interval_ms: 1_000,
        }),
        stop_grace_period_ms: 10_000,
        stop_signal: Some("SIGQUIT".into()),
        init: Some(true),
        read_only: true,
        pull_policy: model::PullPolicy::Always,
        cap_add: strings(&["NET_ADMIN"]),
        cap_drop: strings(&["MKNOD", "SETUID"]),
        sysctls: labels(&[("net.core.somaxconn", "1024")]),
        extra_hosts: strings(&["db:10.0.0.5"]),
        dns: strings(&["10.0.0.2"]),
        dns_search: strings(&["example.internal"]),
        ulimits: [("nofile".to_string(), model::Ulimit { soft: 1024, hard: 4096 })].into(),
        logging: Some(model::Logging { driver: "json-file".into(), options: labels(&[("max-size", "10m")]) }),
        placement: model::Placement {
            constraints: vec![
                model::Constraint { key: "node.labels.zone".into(), op: model::ConstraintOp::Eq, value: "eu".into() },
                model::Constraint { key: "node.role".into(), op: model::ConstraintOp::Ne, value: "worker".into() },
            ],
            preferences: strings(&["node.labels.rack"]),
            max_replicas_per_node: 2,
        },
        resources: model::ResourceSpec {
            limits: model::ResourceLimits { nano_cpus: 500_000_000, memory_bytes: 256 << 20, pids: 100 },
            reservations: model::Resources {
                nano_cpus: 250_000_000,
                memory_bytes: 128 << 20,
                generic: BTreeMap::from([("gpu".to_string(), 1)]),
            },
        },
        configs: vec![model::FileRef {
            source: "site".into(),
            name: "shop_site".into(),
            target: "/etc/site.conf".into(),
            uid: "0".into(),
            gid: "0".into(),
            mode: 0o444,
            digest: model::digest(b"listen 80"),
        }],
        secrets: vec![model::FileRef {
            source: "db".into(),
            name: "shop_db".into(),
            target: "/run/secrets/db".into(),
            uid: "1000".into(),
            gid: "1000".into(),
            mode: 0o400,
            digest: String::new(),
        }],
        networks: vec![
            model::NetworkAttachment { network: "shop_back".into(), aliases: strings(&["api", "api-v1"]) },
            model::NetworkAttachment { network: "shop_default".into(), aliases: vec![] },
        ],
        force_update: 3,
    }
}

pub(super) fn spec() -> model::ServiceSpec {
    model::ServiceSpec {
        autoscale: None,
        name: "web".into(),
        mode: model::ServiceMode::Replicated { replicas: 3 },
        task: full_template(),
        restart: model::RestartPolicy {
            condition: model::RestartCondition::OnFailure,
            delay_ms: 1_000,
            max_attempts: 5,
            window_ms: 60_000,
        },
        update: model::UpdateConfig {
            parallelism: 2,
            delay_ms: 500,
            monitor_ms: 3_000,
            failure_action: model::FailureAction::Rollback,
            max_failure_ratio: 0.5,
            order: model::UpdateOrder::StartFirst,
        },
        rollback: model::UpdateConfig {
            parallelism: 3,
            delay_ms: 100,
            monitor_ms: 2_000,
            failure_action: model::FailureAction::Continue,
            max_failure_ratio: 0.25,
            order: model::UpdateOrder::StopFirst,
        },
        labels: labels(&[("tier", "front")]),
        endpoint_mode: model::EndpointMode::Dnsrr,
        depends_on: vec![
            model::Dependency {
                service: "db".into(),
                condition: model::DependencyCondition::ServiceHealthy,
                required: true,
            },
            model::Dependency {
                service: "migrate".into(),
                condition: model::DependencyCondition::ServiceCompletedSuccessfully,
                required: false,
            },
        ],
    }
}

pub(super) fn service() -> model::Service {
    let old = model::ServiceSpec { mode: model::ServiceMode::Global, task: model::TaskTemplate::default(), ..spec() };
    model::Service {
        autoscale: None,
        id: "s1".into(),
        stack: "shop".into(),
        name: "shop_web".into(),
        spec: spec(),
        revision: 3,
        history: vec![
            model::Revision {
                revision: 1,
                spec: old.clone(),
                deployed_at: 100,
                image: model::ImagePin::Tag { reason: "built on the node".into() },
                rollout: None,
            },
            model::Revision {
                revision: 2,
                spec: old,
                deployed_at: 200,
                image: model::ImagePin::Digest { reference: "web@sha256:0123".into() },
                rollout: Some(model::UpdateStatus {
                    state: model::UpdateState::Paused,
                    started_at: 200,
                    completed_at: 0,
                    message: "task failed".into(),
                }),
            },
        ],
        update: model::UpdateStatus {
            state: model::UpdateState::RollingBack,
            started_at: 300,
            completed_at: 0,
            message: "task failed".into(),
        },
        created_at: 100,
        updated_at: 300,
        image: model::ImagePin::Pending,
        rebalance: Some(model::Rebalance {
            started_at: 250,
            moving: ["t1".to_string()].into_iter().collect(),
            moved: 2,
            last_moved_at: 280,
        }),
        task_failures: 4,
    }
}

pub(super) fn task() -> model::Task {
    model::Task {
        id: "t1".into(),
        service_id: "s1".into(),
        service_name: "shop_web".into(),
        stack: "shop".into(),
        slot: 2,
        node_id: Some("n1".into()),
        revision: 3,
        template: full_template(),
        desired_state: model::DesiredState::Shutdown,
        status: model::TaskStatus {
            state: model::TaskState::Failed,
            timestamp: 1_700_000_000_123,
            message: "exited".into(),
            err: "exit status 2".into(),
            container_id: "abcdef".into(),
            exit_code: Some(2),
            health: "unhealthy".into(),
        },
        unplaceable: String::new(),
        created_at: 1_700_000_000_000,
        addresses: Default::default(),
        image: "web@sha256:0123".into(),
    }
}

pub(super) fn volume() -> model::VolumeSpec {
    model::VolumeSpec {
        name: "shop_data".into(),
        external: false,
        driver: Some("local".into()),
        labels: labels(&[("backup", "daily")]),
        driver_opts: labels(&[("type", "nfs"), ("o", "addr=10.0.0.5,rw"), ("device", ":/export")]),
    }
}

pub(super) fn network() -> model::NetworkSpec {
    model::NetworkSpec {
        name: "shop_back".into(),
        external: false,
        driver: Some("overlay".into()),
        internal: true,
        labels: labels(&[("team", "a")]),
        driver_opts: labels(&[("com.docker.network.driver.mtu", "1400")]),
    }
}

pub(super) fn stack_spec() -> model::StackSpec {
    let db = model::ServiceSpec {
        autoscale: None,
        name: "db".into(),
        mode: model::ServiceMode::Global,
        task: model::TaskTemplate { image: "postgres:17".into(), ..Default::default() },
        restart: model::RestartPolicy::default(),
        update: model::UpdateConfig::default(),
        rollback: model::UpdateConfig::rollback_default(),
        labels: BTreeMap::new(),
        endpoint_mode: model::EndpointMode::Vip,
        depends_on: Vec::new(),
    };
    model::StackSpec {
        name: "shop".into(),
        services: [("web".to_string(), spec()), ("db".to_string(), db)].into_iter().collect(),
        volumes: [
            ("data".to_string(), volume()),
            ("ext".to_string(), model::VolumeSpec { name: "ext".into(), external: true, ..Default::default() }),
        ]
        .into_iter()
        .collect(),
        configs: [(
            "site".to_string(),
            model::ObjectSpec {
                name: "shop_site".into(),
                origin: model::ObjectOrigin::Content,
                data: model::Blob(b"listen 80".to_vec()),
                digest: model::digest(b"listen 80"),
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        secrets: [
            (
                "db".to_string(),
                model::ObjectSpec {
                    name: "shop_db".into(),
                    origin: model::ObjectOrigin::File("db.txt".into()),
                    data: model::Blob(vec![0, 159, 146, 150]),
                    digest: model::digest(&[0, 159, 146, 150]),
                    labels: labels(&[("tier", "db")]),
                    ..Default::default()
                },
            ),
            ("ext".to_string(), model::ObjectSpec { name: "ext".into(), external: true, ..Default::default() }),
            (
                "env".to_string(),
                model::ObjectSpec {
                    name: "shop_env".into(),
                    origin: model::ObjectOrigin::Environment("TOKEN".into()),
                    ..Default::default()
                },
            ),
        ]
        .into_iter()
        .collect(),
        networks: [
            ("back".to_string(), network()),
            ("infra".to_string(), model::NetworkSpec { name: "infra".into(), external: true, ..Default::default() }),
        ]
        .into_iter()
        .collect(),
    }
}

// ---------------------------------------------------------------- wire enums

/// Every value a generated enum accepts converts to core and back to itself.
macro_rules! wire_enum_bijection {
    ($($test:ident: $wire:ty => $core:ty;)*) => {
        $(
            #[test]
            fn $test() {
                let mut seen = 0;
                for i in -4..64 {
                    if let Ok(w) = <$wire>::try_from(i) {
                        let c = <$core>::from(w);
                        assert_eq!(<$wire>::from(c), w);
                        seen += 1;
                    }
                }
                assert!(seen >= 2);
            }
        )*
    };
}

wire_enum_bijection! {
    availability_bijection: v1::Availability => model::Availability;
    node_state_bijection: v1::NodeState => model::NodeState;
    mount_kind_bijection: v1::MountKind => model::MountKind;
    protocol_bijection: v1::Protocol => model::Protocol;
    publish_mode_bijection: v1::PublishMode => model::PublishMode;
    restart_condition_bijection: v1::RestartCondition => model::RestartCondition;
    failure_action_bijection: v1::FailureAction => model::FailureAction;
    update_order_bijection: v1::UpdateOrder => model::UpdateOrder;
    update_state_bijection: v1::UpdateState => model::UpdateState;
    endpoint_mode_bijection: v1::EndpointMode => model::EndpointMode;
    dependency_condition_bijection: v1::DependencyCondition => model::DependencyCondition;
    task_state_bijection: v1::TaskState => model::TaskState;
    desired_state_bijection: v1::DesiredState => model::DesiredState;
    object_kind_bijection: v1::ObjectKind => state::ObjectKind;
    event_action_bijection: v1::EventAction => state::Action;
}

#[test]
fn node_role_bijection_except_unspecified() {
    for i in -4..64 {
        if let Ok(w) = v1::NodeRole::try_from(i) {
            match model::NodeRole::try_from(w) {
                Ok(c) => assert_eq!(v1::NodeRole::from(c), w),
                Err(e) => {
                    assert_eq!(w, v1::NodeRole::Unspecified);
                    assert_eq!(e, ConvertError::Missing("Node.role"));
                }
            }
        }
    }
}

#[test]
fn wire_defaults_are_the_core_defaults() {
    // A proto3 enum field left unset reads as 0: it should mean the core default.
    assert_eq!(model::Availability::from(v1::Availability::default()), model::Availability::default());
    assert_eq!(model::NodeState::from(v1::NodeState::default()), model::NodeState::default());
    assert_eq!(model::Protocol::from(v1::Protocol::default()), model::Protocol::default());
    assert_eq!(model::PublishMode::from(v1::PublishMode::default()), model::PublishMode::default());
    assert_eq!(model::RestartCondition::from(v1::RestartCondition::default()), model::RestartCondition::default());
    assert_eq!(model::FailureAction::from(v1::FailureAction::default()), model::FailureAction::default());
    assert_eq!(model::UpdateOrder::from(v1::UpdateOrder::default()), model::UpdateOrder::default());
    assert_eq!(model::UpdateState::from(v1::UpdateState::default()), model::UpdateState::default());
    assert_eq!(model::EndpointMode::from(v1::EndpointMode::default()), model::EndpointMode::default());
    assert_eq!(model::TaskState::from(v1::TaskState::default()), model::TaskState::default());
    assert_eq!(model::DesiredState::from(v1::DesiredState::default()), model::DesiredState::default());
}

#[test]
fn errors_read_well() {
    assert_eq!(ConvertError::Missing("ServiceSpec.task").to_string(), "missing field ServiceSpec.task");
    assert_eq!(
        ConvertError::UnknownEnum { field: "Task.desired_state", value: 9 }.to_string(),
        "unknown value 9 for Task.desired_state"
    );
    assert_eq!(
        ConvertError::OutOfRange { field: "PortConfig.target", value: 70_000 }.to_string(),
        "PortConfig.target out of range: 70000"
    );
}

// ---------------------------------------------------------------- properties

fn text() -> impl Strategy<Value = String> {
    // Empty strings included: they must not turn into absent ones.
    prop_oneof![Just(String::new()), "[a-zA-Z0-9_./:=-]{1,12}", any::<String>()]
}

fn string_vec() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..4)
}

fn string_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(text(), text(), 0..4)
}

fn mount() -> impl Strategy<Value = model::Mount> {
    let kind = prop_oneof![Just(model::MountKind::Volume), Just(model::MountKind::Bind), Just(model::MountKind::Tmpfs)];
    (kind, text(), text(), any::<bool>()).prop_map(|(kind, source, target, read_only)| model::Mount {
        kind,
        source,
        target,
        read_only,
        tmpfs_size_bytes: 0,
        tmpfs_mode: 0,
    })
}

fn port_config() -> impl Strategy<Value = model::PortConfig> {
    let protocol = prop_oneof![Just(model::Protocol::Tcp), Just(model::Protocol::Udp), Just(model::Protocol::Sctp)];
    let mode = prop_oneof![Just(model::PublishMode::Ingress), Just(model::PublishMode::Host)];
    (any::<u16>(), any::<Option<u16>>(), protocol, mode, text()).prop_map(
        |(target, published, protocol, mode, host_ip)| model::PortConfig {
            target,
            published,
            protocol,
            mode,
            proxy_protocol: target % 2 == 0,
            host_ip,
        },
    )
}

fn healthcheck() -> impl Strategy<Value = model::HealthCheck> {
    (string_vec(), any::<[u64; 5]>()).prop_map(
        |(test, [interval_ms, timeout_ms, retries, start_period_ms, start_interval_ms])| model::HealthCheck {
            test,
            interval_ms,
            timeout_ms,
            retries,
            start_period_ms,
            start_interval_ms,
        },
    )
}

fn template() -> impl Strategy<Value = model::TaskTemplate> {
    let lists = (text(), prop::option::of(string_vec()), prop::option::of(string_vec()), string_vec(), string_map());
    let parts = (
        prop::collection::vec(mount(), 0..3),
        prop::collection::vec(port_config(), 0..3),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(healthcheck()),
    );
    let rest = (
        any::<u64>(),
        prop::option::of(text()),
        any::<Option<bool>>(),
        any::<bool>(),
        prop::collection::vec((text(), string_vec()), 0..3),
    );
    let runtime = (
        string_vec(),
        string_vec(),
        string_map(),
        string_vec(),
        prop::collection::btree_map(text(), (any::<i64>(), any::<i64>()), 0..3),
        prop::option::of((text(), string_map())),
    );
    (lists, parts, rest, runtime).prop_map(
        |(
            (image, command, entrypoint, env, labels),
            (mounts, ports, working_dir, user, hostname, healthcheck),
            (stop_grace_period_ms, stop_signal, init, read_only, networks),
            (cap_add, cap_drop, sysctls, dns, ulimits, logging),
        )| model::TaskTemplate {
            image,
            command,
            entrypoint,
            env,
            labels,
            mounts,
            ports,
            working_dir,
            user,
            hostname,
            healthcheck,
            stop_grace_period_ms,
            stop_signal,
            init,
            read_only,
            pull_policy: [model::PullPolicy::Missing, model::PullPolicy::Always, model::PullPolicy::Never]
                [(stop_grace_period_ms % 3) as usize],
            cap_add,
            cap_drop,
            sysctls,
            extra_hosts: dns.iter().map(|d| format!("h:{d}")).collect(),
            dns_search: dns.clone(),
            dns,
            ulimits: ulimits.into_iter().map(|(k, (soft, hard))| (k, model::Ulimit { soft, hard })).collect(),
            logging: logging.map(|(driver, options)| model::Logging { driver, options }),
            placement: model::Placement::default(),
            resources: model::ResourceSpec::default(),
            configs: Vec::new(),
            secrets: Vec::new(),
            networks: networks
                .into_iter()
                .map(|(network, aliases)| model::NetworkAttachment { network, aliases })
                .collect(),
            force_update: stop_grace_period_ms.rotate_left(7),
        },
    )
}

fn task_state() -> impl Strategy<Value = model::TaskState> {
    use model::TaskState::*;
    prop::sample::select(vec![
        New, Pending, Assigned, Preparing, Starting, Running, Complete, Shutdown, Failed, Rejected, Orphaned,
    ])
}

fn task_status() -> impl Strategy<Value = model::TaskStatus> {
    (task_state(), any::<u64>(), text(), text(), text(), any::<Option<i64>>(), text()).prop_map(
        |(state, timestamp, message, err, container_id, exit_code, health)| model::TaskStatus {
            state,
            timestamp,
            message,
            err,
            container_id,
            exit_code,
            health,
        },
    )
}

fn task_strategy() -> impl Strategy<Value = model::Task> {
    let desired = prop_oneof![Just(model::DesiredState::Running), Just(model::DesiredState::Shutdown)];
    let ids = (text(), text(), text(), text(), any::<u64>(), prop::option::of(text()), any::<u64>());
    let addresses = prop::collection::btree_map(text(), any::<u32>().prop_map(std::net::Ipv4Addr::from), 0..3);
    (ids, template(), desired, task_status(), text(), any::<u64>(), addresses).prop_map(
        |(
            (id, service_id, service_name, stack, slot, node_id, revision),
            template,
            desired_state,
            status,
            unplaceable,
            created_at,
            addresses,
        )| {
            model::Task {
                id,
                service_id,
                service_name,
                stack,
                slot,
                node_id,
                revision,
                template,
                desired_state,
                status,
                unplaceable,
                created_at,
                addresses,
                image: String::new(),
            }
        },
    )
}

proptest! {
    #[test]
    fn any_template_round_trips(t in template()) {
        round_trip::<_, v1::TaskTemplate>(&t);
    }

    #[test]
    fn any_task_round_trips(t in task_strategy()) {
        round_trip::<_, v1::Task>(&t);
    }

    #[test]
    fn any_wire_port_converts_or_is_out_of_range(target in any::<u32>(), published in any::<Option<u32>>()) {
        let wire = v1::PortConfig { target, published, ..v1::PortConfig::default() };
        match model::PortConfig::try_from(wire) {
            Ok(p) => {
                prop_assert_eq!(u32::from(p.target), target);
                prop_assert_eq!(p.published.map(u32::from), published);
            }
            Err(ConvertError::OutOfRange { value, .. }) => {
                prop_assert!(value > u64::from(u16::MAX));
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}
