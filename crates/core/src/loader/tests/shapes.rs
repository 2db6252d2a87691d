//! Every supported shape loads into the expected model.

use std::collections::BTreeMap;

use super::{errors, ok, warnings, web};
use crate::model::{
    EndpointMode, FailureAction, HealthCheck, Mount, MountKind, PortConfig, Protocol, PublishMode, RestartCondition,
    RestartPolicy, ServiceMode, UpdateConfig, UpdateOrder, VolumeSpec,
};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn minimal_service_gets_the_defaults() {
    let loaded = ok("services:\n  web:\n    image: nginx:1.27\n");
    assert!(loaded.warnings.is_empty());
    assert_eq!(loaded.spec.name, "shop");
    let s = &loaded.spec.services["web"];
    assert_eq!(s.name, "web");
    assert_eq!(s.mode, ServiceMode::Replicated { replicas: 1 });
    assert_eq!(s.restart, RestartPolicy::default());
    assert_eq!(s.update, UpdateConfig::default());
    assert_eq!(s.rollback, UpdateConfig::rollback_default());
    assert_eq!(s.endpoint_mode, EndpointMode::Vip);
    assert_eq!(s.task.image, "nginx:1.27");
    assert_eq!(s.task.stop_grace_period_ms, 10_000);
    assert_eq!((s.task.command.clone(), s.task.entrypoint.clone()), (None, None));
    assert!(s.task.env.is_empty() && s.task.mounts.is_empty() && s.task.ports.is_empty());
    assert_eq!((s.task.healthcheck.clone(), s.task.init, s.task.read_only), (None, None, false));
}

#[test]
fn command_and_entrypoint_as_string_or_list() {
    let s = web(
        "services:\n  web:\n    image: x\n    command: sh -c 'echo \"hi there\" && sleep 1'\n    entrypoint: [\"/bin/tini\", \"--\", 5]\n",
    );
    assert_eq!(s.task.command, Some(vec!["sh".into(), "-c".into(), "echo \"hi there\" && sleep 1".into()]));
    assert_eq!(s.task.entrypoint, Some(vec!["/bin/tini".into(), "--".into(), "5".into()]));
    let s = web(
        "services:\n  web:\n    image: x\n    command:\n      - npm\n      - start\n    entrypoint: /docker-entrypoint.sh\n",
    );
    assert_eq!(s.task.command, Some(vec!["npm".into(), "start".into()]));
    assert_eq!(s.task.entrypoint, Some(vec!["/docker-entrypoint.sh".into()]));
}

#[test]
fn environment_as_list_or_map() {
    let s = web("services:\n  web:\n    image: x\n    environment:\n      - Z=last\n      - A=1=2\n      - EMPTY=\n");
    assert_eq!(s.task.env, ["A=1=2", "EMPTY=", "Z=last"]);
    let s = web(
        "services:\n  web:\n    image: x\n    environment:\n      PORT: 8080\n      DEBUG: true\n      FLAG: yes\n      RATIO: 1.50\n      MODE: '0755'\n      BLANK: ''\n",
    );
    assert_eq!(s.task.env, ["BLANK=", "DEBUG=true", "FLAG=yes", "MODE=0755", "PORT=8080", "RATIO=1.50"]);
}

#[test]
fn environment_without_value_is_dropped_with_a_warning() {
    let text = "services:\n  web:\n    image: x\n    environment:\n      - HOME\n      - A=1\n  db:\n    image: y\n    environment:\n      TOKEN:\n";
    let loaded = ok(text);
    assert_eq!(loaded.spec.services["web"].task.env, ["A=1"]);
    assert!(loaded.spec.services["db"].task.env.is_empty());
    assert_eq!(
        warnings(text),
        [
            "stack.yml:5:9: services.web.environment[0]: variable HOME has no value here and is not set in the environment or .env; dropped",
            "stack.yml:10:7: services.db.environment.TOKEN: variable TOKEN has no value here and is not set in the environment or .env; dropped",
        ]
    );
}

#[test]
fn labels_as_list_or_map() {
    let s = web(
        "services:\n  web:\n    image: x\n    labels:\n      - com.example.team=web\n      - flag\n    deploy:\n      labels:\n        traefik.enable: true\n        port: 80\n",
    );
    assert_eq!(s.task.labels, map(&[("com.example.team", "web"), ("flag", "")]));
    assert_eq!(s.labels, map(&[("port", "80"), ("traefik.enable", "true")]));
}

#[test]
fn top_level_volumes_are_namespaced_unless_external_or_named() {
    let spec = ok(
        "services:\n  web:\n    image: x\nvolumes:\n  data:\n  logs:\n    driver: local\n    labels: [a=b]\n  shared:\n    external: true\n  fixed:\n    name: my-fixed\n  old:\n    external:\n      name: legacy\n",
    )
    .spec;
    let v = |name: &str, external: bool| VolumeSpec {
        name: name.into(),
        external,
        driver: None,
        labels: BTreeMap::new(),
        driver_opts: BTreeMap::new(),
    };
    assert_eq!(spec.volumes["data"], v("shop_data", false));
    assert_eq!(
        spec.volumes["logs"],
        VolumeSpec { driver: Some("local".into()), labels: map(&[("a", "b")]), ..v("shop_logs", false) }
    );
    assert_eq!(spec.volumes["shared"], v("shared", true));
    assert_eq!(spec.volumes["fixed"], v("my-fixed", false));
    assert_eq!(spec.volumes["old"], v("legacy", true));
}

#[test]
fn a_volumes_driver_opts_are_kept_not_warned_about() {
    // A Swarm stack mounting NFS through the local driver: the options decide
    // where the data lives, so they reach the agent, which applies them.
    let text = "services:\n  web:\n    image: x\n    volumes: [data:/data]\nvolumes:\n  data:\n    driver_opts:\n      type: nfs\n      o: addr=10.0.0.5,rw\n      device: ':/export'\n";
    let loaded = ok(text);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let data = &loaded.spec.volumes["data"];
    assert_eq!(data.driver_opts, map(&[("type", "nfs"), ("o", "addr=10.0.0.5,rw"), ("device", ":/export")]));
    assert_eq!(data.name, "shop_data");
}

#[test]
fn an_external_volume_takes_no_driver_opts() {
    let errors = super::errors(
        "services:\n  web:\n    image: x\nvolumes:\n  data:\n    external: true\n    driver_opts: {type: nfs}\n",
    );
    assert_eq!(
        errors,
        [
            "stack.yml:7:5: volumes.data.driver_opts: cannot be set on an external volume (volume data is not managed by stackd)"
        ]
    );
}

#[test]
fn volumes_short_syntax() {
    let s = web(
        "services:\n  web:\n    image: x\n    volumes:\n      - data:/var/lib/data\n      - shared:/shared:ro\n      - /etc/ssl:/etc/ssl:ro\n      - /srv/www:/www:rw\n      - /cache\nvolumes:\n  data: {}\n  shared:\n    external: true\n",
    );
    let m = |kind, source: &str, target: &str, read_only| Mount::new(kind, source, target, read_only);
    assert_eq!(
        s.task.mounts,
        [
            m(MountKind::Volume, "shop_data", "/var/lib/data", false),
            m(MountKind::Volume, "shared", "/shared", true),
            m(MountKind::Bind, "/etc/ssl", "/etc/ssl", true),
            m(MountKind::Bind, "/srv/www", "/www", false),
            m(MountKind::Volume, "", "/cache", false),
        ]
    );
}

#[test]
fn volumes_long_syntax() {
    let s = web(
        "services:\n  web:\n    image: x\n    volumes:\n      - type: volume\n        source: data\n        target: /data\n        read_only: true\n      - type: bind\n        source: /etc/app\n        target: /config\n      - type: tmpfs\n        target: /tmp\n      - type: volume\n        target: /anon\nvolumes:\n  data:\n    name: app-data\n",
    );
    let m = |kind, source: &str, target: &str, read_only| Mount::new(kind, source, target, read_only);
    assert_eq!(
        s.task.mounts,
        [
            m(MountKind::Volume, "app-data", "/data", true),
            m(MountKind::Bind, "/etc/app", "/config", false),
            m(MountKind::Tmpfs, "", "/tmp", false),
            m(MountKind::Volume, "", "/anon", false),
        ]
    );
}

#[test]
fn ports_short_and_long_syntax() {
    let s = web(
        "services:\n  web:\n    image: x\n    ports:\n      - 80\n      - \"8080:80\"\n      - 127.0.0.1:8443:443\n      - 5353:53/udp\n      - target: 9000\n        published: \"9001\"\n        protocol: udp\n        mode: host\n        host_ip: 10.0.0.1\n      - target: 7000\n        published: 7001\n",
    );
    let p = |target, published, protocol, mode, host_ip: &str| PortConfig {
        target,
        published,
        protocol,
        mode,
        host_ip: host_ip.into(),
        proxy_protocol: false,
    };
    assert_eq!(
        s.task.ports,
        [
            p(80, None, Protocol::Tcp, PublishMode::Ingress, ""),
            p(80, Some(8080), Protocol::Tcp, PublishMode::Ingress, ""),
            p(443, Some(8443), Protocol::Tcp, PublishMode::Ingress, "127.0.0.1"),
            p(53, Some(5353), Protocol::Udp, PublishMode::Ingress, ""),
            p(9000, Some(9001), Protocol::Udp, PublishMode::Host, "10.0.0.1"),
            p(7000, Some(7001), Protocol::Tcp, PublishMode::Ingress, ""),
        ]
    );
}

#[test]
fn deploy_mode_policies_and_labels() {
    let s = web(
        "services:\n  web:\n    image: x\n    deploy:\n      mode: replicated\n      replicas: 3\n      restart_policy:\n        condition: on-failure\n        delay: 2s\n        max_attempts: 4\n        window: 1m\n      update_config:\n        parallelism: 2\n        delay: 10s\n        monitor: 30s\n        failure_action: rollback\n        max_failure_ratio: 0.25\n        order: start-first\n",
    );
    assert_eq!(s.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(
        s.restart,
        RestartPolicy { condition: RestartCondition::OnFailure, delay_ms: 2_000, max_attempts: 4, window_ms: 60_000 }
    );
    assert_eq!(
        s.update,
        UpdateConfig {
            parallelism: 2,
            delay_ms: 10_000,
            monitor_ms: 30_000,
            failure_action: FailureAction::Rollback,
            max_failure_ratio: 0.25,
            order: UpdateOrder::StartFirst,
        }
    );
    let s = web(
        "services:\n  web:\n    image: x\n    deploy:\n      mode: global\n      restart_policy:\n        condition: none\n",
    );
    assert_eq!(s.mode, ServiceMode::Global);
    assert_eq!(s.restart.condition, RestartCondition::None);
    let s = web("services:\n  web:\n    image: x\n    deploy:\n      replicas: 0\n");
    assert_eq!(s.mode, ServiceMode::Replicated { replicas: 0 });
}

#[test]
fn healthchecks() {
    let s = web(
        "services:\n  web:\n    image: x\n    healthcheck:\n      test: wget -q -O- http://localhost/ || exit 1\n      interval: 30s\n      timeout: 5s\n      retries: 3\n      start_period: 1m\n      start_interval: 500ms\n",
    );
    assert_eq!(
        s.task.healthcheck,
        Some(HealthCheck {
            test: vec!["CMD-SHELL".into(), "wget -q -O- http://localhost/ || exit 1".into()],
            interval_ms: 30_000,
            timeout_ms: 5_000,
            retries: 3,
            start_period_ms: 60_000,
            start_interval_ms: 500,
        })
    );
    let s = web(
        "services:\n  web:\n    image: x\n    healthcheck:\n      test: [\"CMD\", \"curl\", \"-f\", \"http://localhost\"]\n",
    );
    let h = s.task.healthcheck.expect("healthcheck");
    assert_eq!(h.test, ["CMD", "curl", "-f", "http://localhost"]);
    assert_eq!((h.interval_ms, h.retries), (0, 0));
    let s = web("services:\n  web:\n    image: x\n    healthcheck:\n      disable: true\n");
    assert_eq!(s.task.healthcheck.expect("healthcheck").test, ["NONE"]);
}

#[test]
fn container_settings() {
    let s = web(
        "services:\n  web:\n    image: x\n    stop_grace_period: 1m30s\n    stop_signal: SIGQUIT\n    working_dir: /app\n    user: 1000\n    hostname: web-1\n    init: true\n    read_only: yes\n",
    );
    assert_eq!(s.task.stop_grace_period_ms, 90_000);
    assert_eq!(s.task.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(s.task.working_dir.as_deref(), Some("/app"));
    assert_eq!(s.task.user.as_deref(), Some("1000"));
    assert_eq!(s.task.hostname.as_deref(), Some("web-1"));
    assert_eq!((s.task.init, s.task.read_only), (Some(true), true));
    let s = web("services:\n  web:\n    image: x\n    stop_grace_period: 0\n    init: false\n");
    assert_eq!((s.task.stop_grace_period_ms, s.task.init), (0, Some(false)));
}

#[test]
fn yes_and_numbers_stay_strings_in_string_fields() {
    let s = web("services:\n  web:\n    image: yes\n    hostname: on\n    working_dir: 0755\n");
    assert_eq!(s.task.image, "yes");
    assert_eq!(s.task.hostname.as_deref(), Some("on"));
    assert_eq!(s.task.working_dir.as_deref(), Some("0755"));
}

#[test]
fn extension_keys_are_ignored_everywhere() {
    let text = "version: '3.8'\nname: ignored\nx-top: 1\nservices:\n  web:\n    image: x\n    x-svc: {a: 1}\n    deploy:\n      x-deploy: 2\n      restart_policy:\n        x-rp: 3\n    healthcheck:\n      test: true\n      x-hc: 4\n    ports:\n      - target: 80\n        x-p: 5\n    volumes:\n      - type: tmpfs\n        target: /t\n        x-v: 6\nvolumes:\n  data:\n    x-vol: 7\n";
    assert_eq!(warnings(text), Vec::<String>::new());
}

#[test]
fn unsupported_keys_are_warnings() {
    let text = "services:\n  web:\n    image: x\n    build: .\n    restart: always\n    depends_on: [db]\n    networks: [front]\n    shm_size: 1g\n    deploy:\n      restart_policy: {condition: on-failure}\n      resources:\n        limits:\n          memory: 50M\n      x-colour: red\n  db:\n    image: postgres\nnetworks:\n  front:\nsecrets:\n  s:\n    external: true\n    template_driver: golang\nconfigs: {}\nmodels: {}\n";
    assert_eq!(
        warnings(text),
        [
            "stack.yml:4:5: services.web.build: ignored: stackd does not build images; `image:` is pulled",
            "stack.yml:5:5: services.web.restart: ignored: deploy.restart_policy is set and is used",
            "stack.yml:8:5: services.web.shm_size: not supported yet; ignored",
            "stack.yml:22:5: secrets.s.template_driver: ignored: the content is used as it is",
            "stack.yml:24:1: models: not supported yet; ignored",
        ]
    );
}

#[test]
fn anchors_and_merge_keys() {
    let spec = ok(
        "x-defaults: &defaults\n  image: app:1\n  environment: &env\n    MODE: prod\n  deploy:\n    replicas: 2\nservices:\n  web:\n    <<: *defaults\n    command: web\n  worker:\n    <<: *defaults\n    image: app:2\n    environment: *env\n    deploy:\n      replicas: 5\n",
    )
    .spec;
    let web = &spec.services["web"];
    assert_eq!(web.task.image, "app:1");
    assert_eq!(web.task.env, ["MODE=prod"]);
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(web.task.command, Some(vec!["web".into()]));
    let worker = &spec.services["worker"];
    assert_eq!(worker.task.image, "app:2");
    assert_eq!(worker.task.env, ["MODE=prod"]);
    assert_eq!(worker.mode, ServiceMode::Replicated { replicas: 5 });
}

#[test]
fn a_warning_does_not_stop_loading() {
    let loaded = ok("services:\n  web:\n    image: x\n    volumes:\n      - /srv:/srv:z\n");
    assert_eq!(loaded.spec.services["web"].task.mounts.len(), 1);
    assert_eq!(
        loaded.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["stack.yml:5:9: services.web.volumes[0]: volume option \"z\" is ignored for now"]
    );
}

#[test]
fn double_dollars_are_unescaped() {
    let s = web(
        "services:\n  web:\n    image: x\n    healthcheck:\n      test: ['CMD-SHELL', 'mysqladmin ping --password=\"$$(cat /run/secrets/pw)\"']\n    environment:\n      PRICE: $$5\n",
    );
    assert_eq!(
        s.task.healthcheck.expect("healthcheck").test[1],
        "mysqladmin ping --password=\"$(cat /run/secrets/pw)\""
    );
    assert_eq!(s.task.env, ["PRICE=$5"]);
}

#[test]
fn ingress_ports_go_through_the_mesh_and_may_ask_for_the_proxy_protocol() {
    let loaded = ok(
        "services:\n  web:\n    image: web:1\n    ports:\n      - \"8080:80\"\n      - target: 81\n        published: 8081\n        x-proxy-protocol: v2\n",
    );
    assert!(loaded.warnings.is_empty(), "no warning: the mesh exists: {:?}", loaded.warnings);
    let ports = &loaded.spec.services["web"].task.ports;
    assert_eq!((ports[0].mode, ports[0].proxy_protocol), (PublishMode::Ingress, false));
    assert_eq!((ports[1].target, ports[1].proxy_protocol), (81, true));
    // Only TCP through the mesh, only v2.
    for (port, why) in [
        (
            "      - target: 81\n        published: 8081\n        mode: host\n        x-proxy-protocol: v2\n",
            "needs a TCP port published through the routing mesh",
        ),
        (
            "      - target: 81\n        published: 8081\n        protocol: udp\n        x-proxy-protocol: v2\n",
            "needs a TCP port published through the routing mesh",
        ),
        ("      - target: 81\n        x-proxy-protocol: v2\n", "needs a TCP port published through the routing mesh"),
        ("      - target: 81\n        published: 8081\n        x-proxy-protocol: v1\n", "v2"),
        ("      - target: 81\n        published: 8081\n        host_ip: 127.0.0.1\n", "applies to `mode: host` only"),
    ] {
        let e = errors(&format!("services:\n  web:\n    image: web:1\n    ports:\n{port}"));
        assert!(e.iter().any(|e| e.contains(why) && e.starts_with("stack.yml:")), "{port}: {e:?}");
    }
}

#[test]
fn job_modes_restart_on_failure_by_default() {
    let loaded = ok("services:\n  web:\n    image: x\n    deploy:\n      mode: replicated-job\n      replicas: 3\n");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let s = &loaded.spec.services["web"];
    assert_eq!(s.mode, ServiceMode::ReplicatedJob { replicas: 3, max_concurrent: 0 });
    assert_eq!(s.restart, RestartPolicy { condition: RestartCondition::OnFailure, ..RestartPolicy::default() });
    // A job without replicas wants one completion.
    let s = web("services:\n  web:\n    image: x\n    deploy:\n      mode: replicated-job\n");
    assert_eq!(s.mode, ServiceMode::ReplicatedJob { replicas: 1, max_concurrent: 0 });
    let s = web(
        "services:\n  web:\n    image: x\n    deploy:\n      mode: global-job\n      restart_policy:\n        condition: none\n        max_attempts: 2\n",
    );
    assert_eq!(s.mode, ServiceMode::GlobalJob);
    assert_eq!(s.restart.condition, RestartCondition::None);
    assert_eq!(s.restart.max_attempts, 2);
}

#[test]
fn jobs_warn_about_condition_any_and_rollout_policies() {
    let text = "services:\n  web:\n    image: x\n    deploy:\n      mode: replicated-job\n      restart_policy:\n        condition: any\n        max_attempts: 1\n      update_config:\n        parallelism: 2\n      rollback_config:\n        parallelism: 3\n";
    assert_eq!(
        warnings(text),
        [
            "stack.yml:7:9: services.web.deploy.restart_policy.condition: condition any is treated as on-failure with mode: replicated-job: a job task that completed is not run again",
            "stack.yml:9:7: services.web.deploy.update_config: ignored with mode: replicated-job: a job has no rolling update; deploying a changed job runs it again",
            "stack.yml:11:7: services.web.deploy.rollback_config: ignored with mode: replicated-job: a job has no rolling update; deploying a changed job runs it again",
        ]
    );
    let s = web(text);
    assert_eq!(
        s.restart,
        RestartPolicy { condition: RestartCondition::OnFailure, max_attempts: 1, ..Default::default() }
    );
    assert_eq!(s.update, UpdateConfig::default());
    assert_eq!(s.rollback, UpdateConfig::rollback_default());
}

#[test]
fn rollback_config_and_endpoint_mode() {
    let loaded = ok(
        "services:\n  web:\n    image: x\n    ports:\n      - target: 80\n        published: 8080\n        mode: host\n    deploy:\n      endpoint_mode: dnsrr\n      update_config:\n        parallelism: 1\n      rollback_config:\n        parallelism: 0\n        delay: 2s\n        monitor: 1s\n        failure_action: continue\n        max_failure_ratio: 0.5\n        order: start-first\n",
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let s = &loaded.spec.services["web"];
    assert_eq!(s.endpoint_mode, EndpointMode::Dnsrr);
    assert_eq!(s.update, UpdateConfig::default());
    assert_eq!(
        s.rollback,
        UpdateConfig {
            parallelism: 0,
            delay_ms: 2_000,
            monitor_ms: 1_000,
            failure_action: FailureAction::Continue,
            max_failure_ratio: 0.5,
            order: UpdateOrder::StartFirst,
        }
    );
    // Unpublished ports are fine with dnsrr; vip is the default when written as such.
    let s = web("services:\n  web:\n    image: x\n    ports: [\"80\"]\n    deploy:\n      endpoint_mode: dnsrr\n");
    assert_eq!(s.endpoint_mode, EndpointMode::Dnsrr);
    let s = web("services:\n  web:\n    image: x\n    deploy:\n      endpoint_mode: vip\n");
    assert_eq!(s.endpoint_mode, EndpointMode::Vip);
}
