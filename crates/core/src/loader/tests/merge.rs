//! Several files (`-c a.yml -c b.yml -c c.yml`): compose's merge rules, and
//! diagnostics that name the file each value came from.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::loader::{Diagnostic, LoadError, LoadOptions, Loaded, SourceFile, load};
use crate::model::{
    DependencyCondition, Mount, MountKind, PortConfig, Protocol, PublishMode, RestartCondition, ServiceMode,
};

/// A file's text from its lines (line `n` of the file is `lines[n - 1]`).
fn text(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Files named `a.yml`, `b.yml`, `c.yml`, … with the given lines.
fn files(texts: &[&[&str]]) -> Vec<SourceFile> {
    texts
        .iter()
        .zip(["a.yml", "b.yml", "c.yml", "d.yml"])
        .map(|(lines, name)| SourceFile { name: name.into(), text: text(lines) })
        .collect()
}

fn load_with(texts: &[&[&str]], options: &LoadOptions) -> Result<Loaded, LoadError> {
    load("shop", &files(texts), options)
}

/// Loads the merged files; panics with the rendered errors.
fn ok(texts: &[&[&str]]) -> Loaded {
    match load_with(texts, &LoadOptions::default()) {
        Ok(l) => l,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

/// The rendered errors of invalid files.
fn errors(texts: &[&[&str]]) -> Vec<String> {
    match load_with(texts, &LoadOptions::default()) {
        Ok(_) => panic!("loaded, but errors were expected"),
        Err(LoadError::Invalid { errors: d, .. }) => d.iter().map(Diagnostic::to_string).collect(),
    }
}

/// The rendered warnings of valid files.
fn warnings(texts: &[&[&str]]) -> Vec<String> {
    ok(texts).warnings.iter().map(Diagnostic::to_string).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn port(published: Option<u16>, target: u16, protocol: Protocol, mode: PublishMode) -> PortConfig {
    PortConfig { target, published, protocol, mode, host_ip: String::new(), proxy_protocol: false }
}

#[test]
fn two_files_scalars_replaced_and_mappings_merged() {
    let loaded = ok(&[
        &[
            "services:",
            "  web:",
            "    image: app:1.0",
            "    user: app",
            "    stop_grace_period: 5s",
            "    deploy:",
            "      replicas: 2",
            "      restart_policy:",
            "        condition: on-failure",
            "        delay: 1s",
        ],
        &[
            "services:",
            "  web:",
            "    image: app:2.0",
            "    deploy:",
            "      restart_policy:",
            "        delay: 3s",
            "      update_config:",
            "        parallelism: 3",
        ],
    ]);
    let web = &loaded.spec.services["web"];
    assert_eq!(web.task.image, "app:2.0");
    assert_eq!(web.task.user.as_deref(), Some("app"));
    assert_eq!(web.task.stop_grace_period_ms, 5_000);
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(web.restart.condition, RestartCondition::OnFailure);
    assert_eq!(web.restart.delay_ms, 3_000);
    assert_eq!(web.update.parallelism, 3);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn three_files_apply_in_order() {
    let loaded = ok(&[
        &["services:", "  web:", "    image: app:1", "    hostname: base", "    working_dir: /a"],
        &["services:", "  web:", "    image: app:2", "    hostname: middle"],
        &["services:", "  web:", "    image: app:3", "    deploy:", "      replicas: 4"],
    ]);
    let web = &loaded.spec.services["web"];
    assert_eq!(web.task.image, "app:3");
    assert_eq!(web.task.hostname.as_deref(), Some("middle"));
    assert_eq!(web.task.working_dir.as_deref(), Some("/a"));
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 4 });
}

#[test]
fn a_service_only_in_the_override_file_is_added() {
    let loaded = ok(&[
        &["services:", "  web:", "    image: web:1"],
        &["services:", "  worker:", "    image: worker:1", "    command: [run, jobs]"],
    ]);
    assert_eq!(loaded.spec.services.keys().collect::<Vec<_>>(), ["web", "worker"]);
    assert_eq!(loaded.spec.services["web"].task.image, "web:1");
    assert_eq!(loaded.spec.services["worker"].task.command, Some(vec!["run".to_string(), "jobs".to_string()]));
}

#[test]
fn an_override_file_may_hold_only_what_it_changes() {
    // No `services:` in the second file, and a volume the first file's service uses.
    let loaded = ok(&[
        &["services:", "  db:", "    image: postgres", "    volumes: [data:/var/lib/postgresql/data]"],
        &["volumes:", "  data:", "    name: pg-data"],
    ]);
    assert_eq!(loaded.spec.services["db"].task.mounts[0].source, "pg-data");
}

#[test]
fn environment_merges_by_key_across_list_and_map() {
    let options =
        LoadOptions { env: map(&[("HOME", "/root")]), env_file: None, project_dir: None, profiles: Vec::new() };
    let loaded = load_with(
        &[
            &["services:", "  web:", "    image: x", "    environment:", "      - A=1", "      - B=2", "      - HOME"],
            &["services:", "  web:", "    environment:", "      B: 3", "      C: '4'", "      D:"],
            &["services:", "  web:", "    environment:", "      - A=5", "      - D=6"],
        ],
        &options,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.spec.services["web"].task.env, ["A=5", "B=3", "C=4", "D=6", "HOME=/root"]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn environment_map_then_list() {
    let loaded = ok(&[
        &["services:", "  web:", "    image: x", "    environment:", "      MODE: dev", "      DEBUG: 'true'"],
        &["services:", "  web:", "    environment: [MODE=prod, EXTRA=]"],
    ]);
    assert_eq!(loaded.spec.services["web"].task.env, ["DEBUG=true", "EXTRA=", "MODE=prod"]);
}

#[test]
fn a_variable_without_value_is_warned_where_it_survives() {
    // `TOKEN` has no value in the first file; the second gives it one: no warning.
    // `OTHER` has none in the second file: warned there, with its key path.
    assert_eq!(
        warnings(&[
            &["services:", "  web:", "    image: x", "    environment: [TOKEN]"],
            &["services:", "  web:", "    environment:", "      - TOKEN=t", "      - OTHER"],
        ]),
        [
            "b.yml:5:9: services.web.environment.OTHER: variable OTHER has no value here and is not set in the environment or .env; dropped"
        ]
    );
}

#[test]
fn labels_and_deploy_labels_merge_by_key() {
    let loaded = ok(&[
        &[
            "services:",
            "  web:",
            "    image: x",
            "    labels: [team=web, tier=front]",
            "    deploy:",
            "      labels:",
            "        traefik.enable: 'true'",
            "        traefik.port: '80'",
        ],
        &[
            "services:",
            "  web:",
            "    labels:",
            "      tier: edge",
            "      flag:",
            "    deploy:",
            "      labels: [traefik.port=8080]",
        ],
    ]);
    let web = &loaded.spec.services["web"];
    assert_eq!(web.task.labels, map(&[("flag", ""), ("team", "web"), ("tier", "edge")]));
    assert_eq!(web.labels, map(&[("traefik.enable", "true"), ("traefik.port", "8080")]));
}

#[test]
fn command_entrypoint_and_healthcheck_test_are_replaced_not_appended() {
    let loaded = ok(&[
        &[
            "services:",
            "  web:",
            "    image: x",
            "    command: [echo, foo]",
            "    entrypoint: /entry.sh",
            "    healthcheck:",
            "      test: [CMD, curl, -f, http://localhost/]",
            "      interval: 10s",
        ],
        &[
            "services:",
            "  web:",
            "    command: [echo, bar]",
            "    entrypoint: [/bin/tini, --]",
            "    healthcheck:",
            "      test: wget -q -O- http://localhost/",
            "      retries: 5",
        ],
    ]);
    let task = &loaded.spec.services["web"].task;
    assert_eq!(task.command, Some(vec!["echo".to_string(), "bar".to_string()]));
    assert_eq!(task.entrypoint, Some(vec!["/bin/tini".to_string(), "--".to_string()]));
    let h = task.healthcheck.as_ref().expect("healthcheck");
    assert_eq!(h.test, ["CMD-SHELL", "wget -q -O- http://localhost/"]);
    assert_eq!((h.interval_ms, h.retries), (10_000, 5));
}

#[test]
fn a_null_keeps_the_earlier_value_except_for_commands() {
    let loaded = ok(&[
        &["services:", "  web:", "    image: x", "    user: app", "    command: [serve]", "    labels: [a=1]"],
        &["services:", "  web:", "    user:", "    command:", "    labels:"],
    ]);
    let task = &loaded.spec.services["web"].task;
    assert_eq!(task.user.as_deref(), Some("app"));
    assert_eq!(task.labels, map(&[("a", "1")]));
    assert_eq!(task.command, None);
}

#[test]
fn ports_merge_by_identity() {
    let loaded = ok(&[
        &[
            "services:",
            "  web:",
            "    image: x",
            "    ports:",
            "      - 8080:80",
            "      - 9090:90",
            "      - target: 53",
            "        published: 53",
            "        protocol: udp",
            "      - 127.0.0.1:7000:70",
        ],
        &[
            "services:",
            "  web:",
            "    ports:",
            "      - target: 80",
            "        published: 8080",
            "        mode: host",
            "      - 8443:443",
            "      - 53:53/udp",
            "      - 7001:70",
        ],
    ]);
    let mut ports = loaded.spec.services["web"].task.ports.clone();
    // Replaced in place: 8080:80 (now host mode) and 53/udp; the others appended.
    assert_eq!(
        ports.iter().map(|p| (p.published, p.target)).collect::<Vec<_>>(),
        [(Some(8080), 80), (Some(9090), 90), (Some(53), 53), (Some(7000), 70), (Some(8443), 443), (Some(7001), 70),]
    );
    assert_eq!(ports.remove(0), port(Some(8080), 80, Protocol::Tcp, PublishMode::Host));
    assert_eq!(ports[1], port(Some(53), 53, Protocol::Udp, PublishMode::Ingress));
    assert_eq!(ports[2].host_ip, "127.0.0.1");
}

#[test]
fn ports_with_another_protocol_or_target_are_other_ports() {
    let loaded = ok(&[
        &["services:", "  dns:", "    image: x", "    ports: ['53:53']"],
        &["services:", "  dns:", "    ports: ['53:53/udp', '5353:53']"],
    ]);
    let ports = &loaded.spec.services["dns"].task.ports;
    assert_eq!(
        ports.iter().map(|p| (p.published, p.protocol)).collect::<Vec<_>>(),
        [(Some(53), Protocol::Tcp), (Some(53), Protocol::Udp), (Some(5353), Protocol::Tcp),]
    );
}

#[test]
fn the_same_published_port_for_another_target_is_still_an_error() {
    assert_eq!(
        errors(&[
            &["services:", "  web:", "    image: x", "    ports: ['8080:80']"],
            &["services:", "  web:", "    ports:", "      - '8080:81'"],
        ]),
        ["b.yml:4:9: services.web.ports[0]: port 8080/tcp is published twice"]
    );
}

#[test]
fn volumes_merge_by_target() {
    let loaded = ok(&[
        &[
            "services:",
            "  web:",
            "    image: x",
            "    volumes:",
            "      - data:/data",
            "      - /etc/ssl:/etc/ssl:ro",
            "      - type: tmpfs",
            "        target: /cache",
            "volumes:",
            "  data:",
            "  other:",
        ],
        &[
            "services:",
            "  web:",
            "    volumes:",
            "      - type: volume",
            "        source: other",
            "        target: /data",
            "        read_only: true",
            "      - /srv/cache:/cache",
            "      - /logs",
        ],
    ]);
    let m = |kind, source: &str, target: &str, read_only| Mount::new(kind, source, target, read_only);
    assert_eq!(
        loaded.spec.services["web"].task.mounts,
        [
            m(MountKind::Volume, "shop_other", "/data", true),
            m(MountKind::Bind, "/etc/ssl", "/etc/ssl", true),
            m(MountKind::Bind, "/srv/cache", "/cache", false),
            m(MountKind::Volume, "", "/logs", false),
        ]
    );
}

#[test]
fn duplicates_within_one_file_are_still_errors() {
    assert_eq!(
        errors(&[
            &["services:", "  web:", "    image: x", "    volumes: ['/a:/data']"],
            &["services:", "  web:", "    volumes:", "      - /b:/data", "      - /c:/data"],
        ]),
        ["b.yml:5:9: services.web.volumes[1]: \"/data\" is mounted twice"]
    );
}

#[test]
fn top_level_volumes_merge() {
    let loaded = ok(&[
        &["services:", "  web:", "    image: x", "volumes:", "  data:", "    labels: [a=1, b=2]"],
        &["volumes:", "  data:", "    name: shared-data", "    labels:", "      b: 3"],
    ]);
    let data = &loaded.spec.volumes["data"];
    assert_eq!(data.name, "shared-data");
    assert_eq!(data.labels, map(&[("a", "1"), ("b", "3")]));
}

#[test]
fn errors_name_the_file_and_line_the_value_came_from() {
    assert_eq!(
        errors(&[
            &["services:", "  web:", "    image: x", "    deploy:", "      replicas: 2", "      mode: replicated"],
            &["services:", "  web:", "    deploy:", "      replicas: -2"],
        ]),
        ["b.yml:4:7: services.web.deploy.replicas: must be a non-negative integer, got -2"]
    );
    // One error in each file: both reported, the first file's first.
    assert_eq!(
        errors(&[
            &["services:", "  web:", "    image: x", "    stop_grace_period: 10"],
            &["", "services:", "  web:", "    ports: ['99999:80']"],
            &["services:", "  api:", "    command: echo"],
        ]),
        [
            "a.yml:4:5: services.web.stop_grace_period: must be a duration with a unit (like 10s), got 10",
            "b.yml:4:13: services.web.ports[0]: invalid port \"99999:80\": published port must be a number 1-65535, got \"99999\"",
            "c.yml:2:3: services.api: service api has no `image:`; every service needs one",
        ]
    );
}

#[test]
fn list_items_keep_the_index_they_have_in_their_file() {
    assert_eq!(
        errors(&[
            &["services:", "  web:", "    image: x", "    ports: ['80', '81', '82']"],
            &["services:", "  web:", "    ports:", "      - '83'", "      - target: nope"],
        ]),
        ["b.yml:5:9: services.web.ports[1].target: target port must be a number 1-65535, got \"nope\""]
    );
}

#[test]
fn interpolation_and_syntax_errors_name_their_file() {
    assert_eq!(
        errors(&[&["services:", "  web:", "    image: x"], &["services:", "  web:", "    image: ${TAG:?set TAG}"],]),
        ["b.yml:3:5: services.web.image: required variable TAG is missing a value: set TAG"]
    );
    assert_eq!(
        errors(&[&["services:", "  web:", "    image: x"], &["services:", "  web: [", ""]]),
        ["b.yml:2:8: services.web[0]: unclosed bracket '['"]
    );
    assert_eq!(errors(&[&["services:", "  web:", "    image: x"], &[]]), ["b.yml:1:1: the file is empty"]);
    assert_eq!(
        errors(&[&["services:", "  web:", "    image: x"], &["- a"]]),
        ["b.yml:1:1: a stack file must be a mapping (services:, volumes:, …), got a list"]
    );
}

#[test]
fn warnings_name_their_file() {
    assert_eq!(
        warnings(&[
            &["services:", "  web:", "    image: x", "    shm_size: 1g"],
            &["services:", "  web:", "    image: y", "    shm_size: 2g", "    privileged: true"],
        ]),
        [
            "b.yml:4:5: services.web.shm_size: not supported yet; ignored",
            "b.yml:5:5: services.web.privileged: ignored: the task runs unprivileged, as in Swarm; grant what it needs \
             with cap_add, sysctls or ulimits",
        ]
    );
}

#[test]
fn pairs_that_are_not_pairs_are_errors_in_their_file() {
    assert_eq!(
        errors(&[
            &["services:", "  web:", "    image: x", "    environment:", "      - =nokey", "      - [a]"],
            &["services:", "  web:", "    environment:", "      A: 1", "    labels: oops"],
            &["services:", "  web:", "    labels: [a=b]"],
        ]),
        [
            "a.yml:5:9: services.web.environment[0]: must be KEY=VALUE, with a key",
            "a.yml:6:9: services.web.environment[1]: must be a string, got a list",
        ]
    );
    // A scalar is replaced like any scalar; the one that stays is typed.
    assert_eq!(
        errors(&[
            &["services:", "  web:", "    image: x", "    labels: [a=b]"],
            &["services:", "  web:", "    labels: oops"],
        ]),
        ["b.yml:3:5: services.web.labels: must be a list of KEY=VALUE or a mapping, got oops"]
    );
}

#[test]
fn variables_and_dotenv_apply_to_every_file() {
    let options = LoadOptions {
        env: map(&[("N", "3")]),
        env_file: Some(SourceFile { name: ".env".into(), text: "TAG=1.4\n".into() }),
        project_dir: None,
        profiles: Vec::new(),
    };
    let loaded = load_with(
        &[
            &["services:", "  web:", "    image: app:${TAG}"],
            &["services:", "  web:", "    deploy:", "      replicas: ${N}"],
        ],
        &options,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let web = &loaded.spec.services["web"];
    assert_eq!((web.task.image.as_str(), &web.mode), ("app:1.4", &ServiceMode::Replicated { replicas: 3 }));
}

#[test]
fn reset_removes_and_override_replaces() {
    let loaded = ok(&[
        &[
            "services:",
            "  web:",
            "    image: x",
            "    ports: ['8080:80']",
            "    volumes: ['/a:/a']",
            "    environment:",
            "      FOO: bar",
            "      KEEP: '1'",
            "    user: app",
        ],
        &[
            "services:",
            "  web:",
            "    ports: !reset []",
            "    volumes: !override",
            "      - /b:/b",
            "    environment:",
            "      FOO: !reset null",
            "    user: !reset null",
        ],
    ]);
    let task = &loaded.spec.services["web"].task;
    assert!(task.ports.is_empty());
    assert_eq!(task.mounts.iter().map(|m| m.target.as_str()).collect::<Vec<_>>(), ["/b"]);
    assert_eq!(task.env, ["KEEP=1"]);
    assert_eq!(task.user, None);
}

#[test]
fn reset_applies_in_a_single_file_and_is_ignored_on_list_items() {
    let loaded = ok(&[&["services:", "  web:", "    image: x", "    user: !reset app", "    command: [a, !reset b]"]]);
    let task = &loaded.spec.services["web"].task;
    assert_eq!(task.user, None);
    assert_eq!(task.command, Some(vec!["a".to_string(), "b".to_string()]));
    assert_eq!(
        loaded.warnings.iter().map(Diagnostic::to_string).collect::<Vec<_>>(),
        [
            "a.yml:5:25: services.web.command[1]: `!reset` only applies to the value of a key, not to a list item; ignored"
        ]
    );
}

#[test]
fn depends_on_and_networks_merge_by_name() {
    // Both files' dependencies are recorded, with the condition each gives.
    let loaded = ok(&[
        &[
            "services:",
            "  web:",
            "    image: x",
            "    depends_on: [db]",
            "    networks: [front]",
            "  db: {image: db}",
            "  cache: {image: cache}",
            "networks:",
            "  front:",
            "  back:",
            "    labels: [team=a]",
        ],
        &[
            "services:",
            "  web:",
            "    depends_on:",
            "      cache:",
            "        condition: service_healthy",
            "    networks:",
            "      back:",
            "        aliases: [api]",
            "networks:",
            "  back:",
            "    labels: {tier: db}",
        ],
    ]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let deps: Vec<(&str, DependencyCondition)> =
        loaded.spec.services["web"].depends_on.iter().map(|d| (d.service.as_str(), d.condition)).collect();
    assert_eq!(deps, [("cache", DependencyCondition::ServiceHealthy), ("db", DependencyCondition::ServiceStarted)]);
    // Both files' dependencies are there: b.yml's db → web and a.yml's
    // web → db make a circle, reported at the entry that closes it; b.yml's
    // missing dependency is reported in b.yml.
    assert_eq!(
        errors(&[
            &["services:", "  web:", "    image: x", "    depends_on: [db]", "  db:", "    image: db"],
            &["services:", "  web:", "    depends_on: {queue: {}}", "  db:", "    depends_on: [web]"],
        ]),
        [
            "a.yml:4:18: services.web.depends_on.db: depends_on goes round in a circle: db → web → db",
            "b.yml:3:18: services.web.depends_on.queue: there is no service queue in the stack",
        ]
    );
    let nets: Vec<(&str, &[String])> =
        loaded.spec.services["web"].task.networks.iter().map(|a| (a.network.as_str(), a.aliases.as_slice())).collect();
    assert_eq!(nets, [("shop_back", &["api".to_string()][..]), ("shop_front", &[][..])]);
    assert_eq!(loaded.spec.networks["back"].labels, map(&[("team", "a"), ("tier", "db")]));
    // A later file's undefined network is reported in that file.
    assert_eq!(
        errors(&[&["services:", "  web:", "    image: x"], &["services:", "  web:", "    networks: [nowhere]"]]),
        ["b.yml:3:16: services.web.networks[0]: service web refers to undefined network nowhere"]
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Merging arbitrary service snippets never panics, and every error has
    /// a file and a position.
    #[test]
    fn merging_never_panics(
        parts in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "image", "command", "environment", "labels", "volumes", "ports", "deploy", "healthcheck",
                    "user", "build", "logging", "depends_on", "networks", "extra_hosts", "ulimits", "env_file",
                ]),
                prop::sample::select(vec![
                    "x", "~", "[]", "{}", "[a, 1]", "{a: 1}", "['80:80']", "[{target: 80, published: 8080}]",
                    "[data:/d]", "[{type: tmpfs, target: /d}]", "[A=1, =x, B]", "{A: 1, B: {c: d}}",
                    "!reset []", "!override [x]", "!reset", "{replicas: 2, labels: [a=b]}", "{driver: json-file}",
                    "{test: [CMD, x]}", "[!reset x]",
                ]),
            ),
            1..6,
        ),
    ) {
        let texts: Vec<String> = parts
            .iter()
            .map(|(key, value)| format!("services:\n  web:\n    image: app\n    {key}: {value}\nvolumes:\n  data:\n"))
            .collect();
        let files: Vec<SourceFile> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| SourceFile { name: format!("f{i}.yml"), text: t.clone() })
            .collect();
        if let Err(LoadError::Invalid { errors: diags, .. }) = load("shop", &files, &LoadOptions::default()) {
            prop_assert!(!diags.is_empty());
            for d in &diags {
                prop_assert!(d.file.starts_with('f') && d.line > 0 && d.column > 0, "no position: {d}");
            }
        }
    }
}

#[test]
fn runtime_options_merge() {
    let loaded = ok(&[
        &[
            "services:",
            "  web:",
            "    image: x",
            "    cap_add: [NET_ADMIN, SYS_TIME]",
            "    dns: 10.0.0.2",
            "    extra_hosts: ['db:10.0.0.5', 'cache=10.0.0.6']",
            "    sysctls: {net.core.somaxconn: 1024}",
            "    ulimits:",
            "      nofile: {soft: 1024, hard: 4096}",
            "      nproc: 100",
        ],
        &[
            "services:",
            "  web:",
            "    cap_add: [SYS_TIME, MKNOD]",
            "    dns: [10.0.0.3]",
            "    extra_hosts:",
            "      db: 10.0.0.9",
            "    sysctls: [net.core.somaxconn=2048, net.ipv4.ip_forward=1]",
            "    ulimits:",
            "      nofile: 8192",
        ],
    ]);
    let t = &loaded.spec.services["web"].task;
    assert_eq!(t.cap_add, ["NET_ADMIN", "SYS_TIME", "MKNOD"]);
    assert_eq!(t.dns, ["10.0.0.2", "10.0.0.3"]);
    assert_eq!(t.extra_hosts, ["db:10.0.0.9", "cache:10.0.0.6"]);
    assert_eq!(t.sysctls, map(&[("net.core.somaxconn", "2048"), ("net.ipv4.ip_forward", "1")]));
    assert_eq!((t.ulimits["nofile"].soft, t.ulimits["nofile"].hard), (8192, 8192));
    assert_eq!((t.ulimits["nproc"].soft, t.ulimits["nproc"].hard), (100, 100));
}

/// The example of docs/stack-files.md, "Several files".
#[test]
fn the_documented_example() {
    let loaded = ok(&[
        &[
            "services:",
            "  web:",
            "    image: registry.example.com/web:1.4",
            "    environment: [MODE=dev, TZ=UTC]",
            "    ports: ['8080:80']",
            "    deploy:",
            "      replicas: 2",
        ],
        &[
            "services:",
            "  web:",
            "    image: registry.example.com/web:1.5",
            "    environment:",
            "      MODE: prod",
            "    ports:",
            "      - {target: 80, published: 8080, mode: host}",
            "      - '8443:443'",
            "    deploy:",
            "      restart_policy: {condition: on-failure}",
        ],
    ]);
    let web = &loaded.spec.services["web"];
    assert_eq!(web.task.image, "registry.example.com/web:1.5");
    assert_eq!(web.task.env, ["MODE=prod", "TZ=UTC"]);
    assert_eq!(
        web.task.ports,
        [
            port(Some(8080), 80, Protocol::Tcp, PublishMode::Host),
            port(Some(8443), 443, Protocol::Tcp, PublishMode::Ingress),
        ]
    );
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 2 });
    assert_eq!(web.restart.condition, RestartCondition::OnFailure);
}
