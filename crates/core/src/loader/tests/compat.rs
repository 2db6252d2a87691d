//! Keys of docker compose that Swarm ignores: taken over (`restart`,
//! `scale`, `cpus`, `mem_limit`, …, `network_mode: host|none`, `extends`,
//! `profiles`, `label_file`, `depends_on`: the first start waits), or refused where
//! ignoring them would change what the service does. One test per error
//! class.

use std::collections::BTreeMap;

use super::{errors, files, ok, warnings, web};
use crate::compose;
use crate::loader::{Diagnostic, LoadError, LoadOptions, Loaded, MemoryFiles, load, load_with};
use crate::model::{Dependency, DependencyCondition, NetworkAttachment, RestartCondition, ServiceMode};

fn svc(body: &str) -> String {
    format!("services:\n  web:\n    image: x\n{body}")
}

#[test]
fn network_mode_host_and_none_join_dockers_network() {
    let loaded = ok(&svc("    network_mode: host\n  db:\n    image: db\n"));
    let host_task = &loaded.spec.services["web"].task;
    assert_eq!(host_task.networks, [NetworkAttachment { network: "host".into(), aliases: vec![] }]);
    let host = &loaded.spec.networks["host"];
    assert!(host.external && host.name == "host", "{host:?}");
    // db still joins the stack's default network.
    assert_eq!(loaded.spec.services["db"].task.networks[0].network, "shop_default");
    // The normalised stack says the same thing and loads back unchanged.
    let yaml = serde_saphyr::to_string(&compose::document(&loaded.spec)).expect("yaml");
    let again = load("shop", &files(&yaml), &LoadOptions::default()).expect("normalised loads");
    assert_eq!(again.spec, loaded.spec);

    let none = web(&svc("    network_mode: none\n"));
    assert_eq!(none.task.networks[0].network, "none");
}

#[test]
fn network_mode_host_drops_ports_and_refuses_what_conflicts() {
    assert_eq!(
        warnings(&svc("    network_mode: host\n    ports: ['80:80']\n")),
        [
            "stack.yml:4:5: services.web.network_mode: the service's ports are not published: with network_mode: host its tasks listen on the host's ports"
        ]
    );
    assert!(web(&svc("    network_mode: host\n    ports: ['80:80']\n")).task.ports.is_empty());
    assert_eq!(
        errors(&svc("    network_mode: host\n    hostname: web\n    networks: [default]\n")),
        [
            "stack.yml:4:5: services.web.network_mode: cannot be used with hostname: a task on the host's network has the host's name",
            "stack.yml:6:5: services.web.networks: cannot be used with network_mode: host",
        ]
    );
}

#[test]
fn other_network_modes_are_refused_and_bridge_is_a_warning() {
    assert_eq!(
        errors(&svc("    network_mode: service:db\n  db:\n    image: db\n    network_mode: mynet\n")),
        [
            "stack.yml:4:5: services.web.network_mode: network_mode: service:db is not supported: sharing another container's network is not possible across nodes; run both processes in one service, or let them talk over the stack network",
            "stack.yml:7:5: services.db.network_mode: network_mode: mynet is not supported: to join the network mynet, declare it as an external network and list it under the service's `networks:`",
        ]
    );
    assert_eq!(
        warnings(&svc("    network_mode: bridge\n")),
        ["stack.yml:4:5: services.web.network_mode: ignored: the service joins the stack's networks, as in Swarm"]
    );
}

#[test]
fn shared_namespaces_and_lost_resources_are_refused() {
    assert_eq!(
        errors(&svc(
            "    pid: host\n    ipc: service:db\n    uts: host\n    volumes_from: [db]\n    devices: ['/dev/ttyUSB0:/dev/ttyUSB0']\n    gpus: all\n"
        )),
        [
            "stack.yml:4:5: services.web.pid: pid: host is not supported: the task would run in a process namespace of its own",
            "stack.yml:5:5: services.web.ipc: ipc: service:db is not supported: the task would run in a IPC namespace of its own",
            "stack.yml:6:5: services.web.uts: uts: host is not supported: the task would run in a hostname (UTS) namespace of its own",
            "stack.yml:7:5: services.web.volumes_from: volumes_from is not supported: tasks of different services can run on different nodes; declare a named volume and mount it in each service",
            "stack.yml:8:5: services.web.devices: devices are not supported yet: the task would start without access to them",
            "stack.yml:9:5: services.web.gpus: gpus is not supported yet: the task would start without GPUs",
        ]
    );
    assert_eq!(
        errors("services:\n  llm:\n    provider:\n      type: model\n"),
        [
            "stack.yml:2:3: services.llm: service llm has no `image:`; every service needs one",
            "stack.yml:3:5: services.llm.provider: provider services are not supported: stackd runs containers from an image",
        ]
    );
    // What a task gets anyway is fine.
    assert_eq!(warnings(&svc("    ipc: private\n    pid:\n    privileged: false\n")), Vec::<String>::new());
}

#[test]
fn links_privileged_and_external_links() {
    assert_eq!(
        errors(&svc("    links: [db, 'cache:redis']\n")),
        [
            "stack.yml:4:17: services.web.links[1]: the link alias \"redis\" would not resolve: add it to the aliases of cache under `networks:`, and drop the link"
        ]
    );
    assert_eq!(
        warnings(&svc("    links: [db, 'db:db']\n    external_links: [x]\n    privileged: true\n")),
        [
            "stack.yml:4:5: services.web.links: ignored: services on a stack network reach each other by service name",
            "stack.yml:5:5: services.web.external_links: ignored: a stack's services reach only the networks they join",
            "stack.yml:6:5: services.web.privileged: ignored: the task runs unprivileged, as in Swarm; grant what it needs with cap_add, sysctls or ulimits",
        ]
    );
}

#[test]
fn restart_becomes_the_restart_policy() {
    let condition = |v: &str| web(&svc(&format!("    restart: {v}\n"))).restart;
    assert_eq!(condition("no").condition, RestartCondition::None);
    assert_eq!(condition("'no'").condition, RestartCondition::None);
    assert_eq!(condition("always").condition, RestartCondition::Any);
    assert_eq!(condition("unless-stopped").condition, RestartCondition::Any);
    let p = condition("on-failure:3");
    assert_eq!((p.condition, p.max_attempts), (RestartCondition::OnFailure, 3));
    assert_eq!(
        errors(&svc("    restart: sometimes\n  db:\n    image: db\n    restart: on-failure:1000\n")),
        [
            "stack.yml:4:5: services.web.restart: must be no, always, on-failure, on-failure:N or unless-stopped, got \"sometimes\"",
            "stack.yml:7:5: services.db.restart: at most 100 attempts, got 1000",
        ]
    );
    // deploy.restart_policy wins, with a word.
    let text = svc("    restart: 'no'\n    deploy:\n      restart_policy: {condition: on-failure}\n");
    assert_eq!(web(&text).restart.condition, RestartCondition::OnFailure);
    assert_eq!(
        warnings(&text),
        ["stack.yml:4:5: services.web.restart: ignored: deploy.restart_policy is set and is used"]
    );
}

#[test]
fn scale_and_compose_resources_are_taken_over() {
    let s =
        web(&svc("    scale: 3\n    cpus: 0.5\n    mem_limit: 256m\n    mem_reservation: 64m\n    pids_limit: 100\n"));
    assert_eq!(s.mode, ServiceMode::Replicated { replicas: 3 });
    let r = &s.task.resources;
    assert_eq!((r.limits.nano_cpus, r.limits.memory_bytes, r.limits.pids), (500_000_000, 256 << 20, 100));
    assert_eq!(r.reservations.memory_bytes, 64 << 20);
    // The same value in both places is fine; -1 is no limit.
    let s = web(&svc(
        "    scale: 2\n    cpus: '1'\n    pids_limit: -1\n    deploy:\n      replicas: 2\n      resources: {limits: {cpus: '1.0'}}\n",
    ));
    assert_eq!((s.mode, s.task.resources.limits.nano_cpus), (ServiceMode::Replicated { replicas: 2 }, 1_000_000_000));
    assert_eq!(s.task.resources.limits.pids, 0);
    assert_eq!(
        errors(&svc(
            "    scale: 3\n    mem_limit: 1g\n    deploy:\n      replicas: 2\n      resources: {limits: {memory: 512m}}\n  db:\n    image: db\n    scale: 2\n    mem_limit: 10m\n    mem_reservation: 20m\n    deploy: {mode: global}\n"
        )),
        [
            "stack.yml:4:5: services.web.scale: differs from deploy.replicas (2); set one of them",
            "stack.yml:5:5: services.web.mem_limit: differs from deploy.resources.limits.memory; set one of them",
            "stack.yml:11:5: services.db.scale: cannot be used with a global deploy mode: a global service runs one task per node",
            "stack.yml:12:5: services.db.mem_limit: the memory reservation is above the memory limit",
        ]
    );
}

#[test]
fn label_file_labels_and_labels_win() {
    let fs = MemoryFiles(BTreeMap::from([("app.labels".to_string(), b"team=web\ntier=front\n".to_vec())]));
    let text = svc("    label_file: app.labels\n    labels: {tier: edge}\n");
    let loaded = load_with("shop", &files(&text), &LoadOptions::default(), &fs).expect("loads");
    let labels = &loaded.spec.services["web"].task.labels;
    assert_eq!(labels.get("team").map(String::as_str), Some("web"));
    assert_eq!(labels.get("tier").map(String::as_str), Some("edge"));
}

/// Loads `text` (as `stack.yml`) with the files `fs`.
fn with_files(text: &str, fs: &[(&str, &str)]) -> Result<Loaded, Vec<String>> {
    let fs = MemoryFiles(fs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect());
    load_with("shop", &files(text), &LoadOptions::default(), &fs)
        .map_err(|e| e.diagnostics().iter().map(Diagnostic::to_string).collect())
}

#[test]
fn extends_a_service_of_the_stack() {
    let text = "x-base: &base\n  image: app:1\nservices:\n  base:\n    image: app:1\n    environment: {A: '1', B: '2'}\n    ports: ['80:80', '443:443']\n    deploy: {replicas: 2}\n  web:\n    extends: base\n    environment: {B: '3'}\n    ports: ['8080:80']\n  worker:\n    extends: {service: web}\n    command: work\n    ports: !reset []\n";
    let loaded = ok(text);
    let web = &loaded.spec.services["web"];
    assert_eq!(web.task.image, "app:1");
    assert_eq!(web.task.env, ["A=1", "B=3"]);
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 2 });
    let published: Vec<u16> = web.task.ports.iter().filter_map(|p| p.published).collect();
    assert_eq!(published, [80, 443, 8080]);
    let worker = &loaded.spec.services["worker"];
    assert_eq!(worker.task.env, ["A=1", "B=3"], "a base that extends another");
    assert_eq!(worker.task.command.as_deref(), Some(&["work".to_string()][..]));
}

#[test]
fn extends_a_service_of_another_file() {
    let common = "services:\n  base:\n    image: app:${TAG:-2}\n    labels: [team=ops]\n  chained:\n    extends: base\n    user: '1000'\n";
    let text = "services:\n  web:\n    extends: {file: ./common.yml, service: chained}\n    labels: [tier=web]\n";
    let loaded = with_files(text, &[("common.yml", common)]).expect("loads");
    let web = &loaded.spec.services["web"];
    assert_eq!((web.task.image.as_str(), web.task.user.as_deref()), ("app:2", Some("1000")));
    assert_eq!(web.task.labels.len(), 2);
    // Errors in the other file name it.
    let broken = "services:\n  base:\n    image: app\n    deploy: {replicas: -1}\n";
    assert_eq!(
        with_files("services:\n  web:\n    extends: {file: common.yml, service: base}\n", &[("common.yml", broken)])
            .map(|_| ()),
        Err(vec!["common.yml:4:14: services.web.deploy.replicas: must be a non-negative integer, got -1".to_string()])
    );
}

#[test]
fn extends_errors() {
    assert_eq!(
        with_files(
            "services:\n  a:\n    extends: b\n  b:\n    extends: a\n  c:\n    extends: nothing\n  d:\n    extends: {file: ../x.yml, service: a}\n  e:\n    extends: {file: missing.yml, service: a}\n  f:\n    extends: {flie: x}\n  g:\n    extends: {service: q, file: other.yml}\n",
            &[("other.yml", "services:\n  p:\n    image: p\n")]
        )
        .map(|_| ()),
        Err(vec![
            "stack.yml:3:5: services.a.extends: extends goes round in a circle: a → b → a".to_string(),
            "stack.yml:7:5: services.c.extends: there is no service nothing to extend".to_string(),
            "stack.yml:9:15: services.d.extends.file: \"../x.yml\": extends.file must be in the stack file's directory (relative paths in it would be resolved from the wrong place)".to_string(),
            "stack.yml:11:15: services.e.extends.file: cannot read missing.yml: No such file or directory".to_string(),
            "stack.yml:13:5: services.f.extends: needs `service:`, the name of the service to extend".to_string(),
            "stack.yml:13:15: services.f.extends.flie: unknown key `flie`: did you mean `file`?".to_string(),
            "stack.yml:15:5: services.g.extends: there is no service q in other.yml to extend".to_string(),
        ])
    );
    // A service whose base is missing still has its own keys checked; a
    // broken file is read and reported once, however many extend it.
    assert_eq!(
        with_files(
            "services:\n  a:\n    extends: nothing\n    deploy: {replicas: -1}\n  b:\n    extends: {file: bad.yml, service: x}\n  c:\n    extends: {file: bad.yml, service: y}\n",
            &[("bad.yml", "services: [\n")]
        )
        .map(|_| ()),
        Err(vec![
            "stack.yml:3:5: services.a.extends: there is no service nothing to extend".to_string(),
            "stack.yml:4:14: services.a.deploy.replicas: must be a non-negative integer, got -1".to_string(),
            "bad.yml:1:11: services[0]: unclosed bracket '['".to_string(),
        ])
    );
}

#[test]
fn depends_on_is_checked() {
    let loaded = ok(&svc(
        "    depends_on:\n      db: {condition: service_started, restart: true}\n      cache: {required: false}\n  db:\n    image: db\n",
    ));
    assert_eq!(
        loaded.warnings.iter().map(Diagnostic::to_string).collect::<Vec<_>>(),
        [
            "stack.yml:5:40: services.web.depends_on.db.restart: not honoured: a service is not restarted when db is updated; updates roll each service on its own",
            "stack.yml:6:7: services.web.depends_on.cache: there is no service cache in the stack; skipped (required: false)",
        ]
    );
    // What is kept is recorded in the spec; a skipped dependency is not.
    assert_eq!(
        loaded.spec.services["web"].depends_on,
        [Dependency { service: "db".into(), condition: DependencyCondition::ServiceStarted, required: true }]
    );
    assert!(loaded.spec.services["db"].depends_on.is_empty());
    assert_eq!(
        errors(&svc(
            "    depends_on: [web, ghost]\n  a:\n    image: a\n    depends_on:\n      b: {condition: when_ready}\n  b:\n    image: b\n    depends_on: [c]\n  c:\n    image: c\n    depends_on: {a: {}}\n  d:\n    image: d\n    depends_on: db\n"
        )),
        [
            "stack.yml:4:18: services.web.depends_on[0]: a service cannot depend on itself",
            "stack.yml:4:23: services.web.depends_on[1]: there is no service ghost in the stack",
            "stack.yml:8:11: services.a.depends_on.b.condition: must be one of `service_started`, `service_healthy`, `service_completed_successfully`, got when_ready",
            "stack.yml:14:18: services.c.depends_on.a: depends_on goes round in a circle: a → b → c → a",
            "stack.yml:17:5: services.d.depends_on: must be a list of services or a mapping, got db",
        ]
    );
}

#[test]
fn depends_on_is_recorded_sorted_with_its_conditions() {
    let loaded = ok(&svc(
        "    depends_on:\n      migrate: {condition: service_completed_successfully}\n      db: {condition: service_healthy, required: false}\n  db:\n    image: db\n  migrate:\n    image: m\n    deploy: {mode: replicated-job}\n    depends_on: [db, db]\n",
    ));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let dep = |service: &str, condition, required| Dependency { service: service.into(), condition, required };
    assert_eq!(
        loaded.spec.services["web"].depends_on,
        [
            dep("db", DependencyCondition::ServiceHealthy, false),
            dep("migrate", DependencyCondition::ServiceCompletedSuccessfully, true),
        ]
    );
    // A name listed twice is one dependency.
    assert_eq!(loaded.spec.services["migrate"].depends_on, [dep("db", DependencyCondition::ServiceStarted, true)]);
}

#[test]
fn depends_on_conditions_the_dependency_cannot_meet_as_asked_are_warned_about() {
    assert_eq!(
        warnings(&svc(
            "    depends_on:\n      db: {condition: service_healthy}\n      seed: {condition: service_completed_successfully}\n  db:\n    image: db\n    healthcheck: {disable: true}\n  seed:\n    image: s\n"
        )),
        [
            "stack.yml:5:12: services.web.depends_on.db.condition: db has its healthcheck disabled: service_healthy is met as soon as its tasks run (compose refuses to start the service)",
            "stack.yml:6:14: services.web.depends_on.seed.condition: seed is not a job and is restarted whenever it exits (restart_policy condition any): service_completed_successfully is met at its first exit 0; to run it once, make it a job (deploy.mode: replicated-job)",
        ]
    );
    // A service that is not restarted after a clean exit is fine.
    assert!(
        warnings(&svc(
            "    depends_on:\n      seed: {condition: service_completed_successfully}\n  seed:\n    image: s\n    restart: on-failure\n"
        ))
        .is_empty()
    );
}

/// Loads `text` with the profiles `enabled` and the variables `env`.
fn profiled(text: &str, enabled: &[&str], env: &[(&str, &str)]) -> Result<Loaded, LoadError> {
    let options = LoadOptions {
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        profiles: enabled.iter().map(|p| p.to_string()).collect(),
        ..LoadOptions::default()
    };
    load("shop", &files(text), &options)
}

#[test]
fn profiles_choose_the_services() {
    let text = "services:\n  web:\n    image: web\n  debug:\n    image: busybox\n    profiles: [debug]\n  admin:\n    image: admin\n    profiles: [ops, debug]\n";
    let names = |enabled: &[&str], env: &[(&str, &str)]| -> Vec<String> {
        profiled(text, enabled, env).expect("loads").spec.services.into_keys().collect()
    };
    assert_eq!(names(&[], &[]), ["web"]);
    assert_eq!(names(&["ops"], &[]), ["admin", "web"]);
    assert_eq!(names(&["debug"], &[]), ["admin", "debug", "web"]);
    assert_eq!(names(&["*"], &[]), ["admin", "debug", "web"]);
    assert_eq!(names(&[], &[("COMPOSE_PROFILES", "ops, debug")]), ["admin", "debug", "web"]);
    assert_eq!(names(&["ops"], &[("COMPOSE_PROFILES", "debug")]), ["admin", "web"], "--profile wins");
    let warned = profiled(text, &["typo"], &[]).expect("loads");
    assert_eq!(
        warned.warnings.iter().map(Diagnostic::to_string).collect::<Vec<_>>(),
        ["profile \"typo\" is enabled but no service has it"]
    );
    // An enabled service cannot depend on a disabled one; all disabled is no stack.
    let err = |text: &str| -> Vec<String> {
        match profiled(text, &[], &[]) {
            Ok(_) => panic!("loaded"),
            Err(e) => e.diagnostics().iter().map(Diagnostic::to_string).collect(),
        }
    };
    assert_eq!(
        err(
            "services:\n  web:\n    image: web\n    depends_on: [debug]\n  debug:\n    image: b\n    profiles: [debug]\n"
        ),
        [
            "stack.yml:4:18: services.web.depends_on[0]: debug is not deployed: enable one of its profiles (stackctl deploy --profile …)"
        ]
    );
    let optional = profiled(
        "services:\n  web:\n    image: web\n    depends_on: {debug: {required: false}}\n  debug:\n    image: b\n    profiles: [debug]\n",
        &[],
        &[],
    )
    .expect("loads");
    assert_eq!(
        optional.warnings.iter().map(Diagnostic::to_string).collect::<Vec<_>>(),
        [
            "stack.yml:4:18: services.web.depends_on.debug: debug is not deployed: enable one of its profiles (stackctl deploy --profile …); skipped (required: false)"
        ]
    );
    assert_eq!(
        err("services:\n  debug:\n    image: b\n    profiles: [debug, 'bad name']\n"),
        [
            "stack.yml:1:1: services: no service is deployed: each has `profiles:`; enable one with --profile",
            "stack.yml:4:23: services.debug.profiles[1]: profile \"bad name\" is invalid: use letters, digits, '-', '_' and '.'",
        ]
    );
}

#[test]
fn include_is_refused() {
    assert_eq!(
        errors("include: [other.yml]\nservices:\n  web:\n    image: x\n"),
        [
            "stack.yml:1:1: include: include is not supported yet: the services of the included files would be missing; pass each file with -c (later files are merged over earlier ones)"
        ]
    );
}

#[test]
fn generic_resources_are_reserved_by_kind() {
    let s = web(&svc(
        "    deploy:\n      resources:\n        reservations:\n          generic_resources:\n            - discrete_resource_spec: {kind: gpu, value: 2}\n            - discrete_resource_spec: {kind: ssd, value: 1}\n",
    ));
    let generic: Vec<(&str, u64)> =
        s.task.resources.reservations.generic.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(generic, [("gpu", 2), ("ssd", 1)]);
    assert_eq!(
        errors(&svc(
            "    deploy:\n      resources:\n        reservations:\n          devices: [{capabilities: [gpu]}]\n          generic_resources:\n            - named_resource_spec: {kind: gpu, value: GPU-1}\n            - discrete_resource_spec: {kind: gpu, value: 0}\n            - discrete_resource_spec: {kind: 'a b', value: 1}\n            - discrete_resource_spec: {value: 1}\n"
        )),
        [
            "stack.yml:7:11: services.web.deploy.resources.reservations.devices: device reservations are not supported yet: the task would start without the devices; reserve a count with generic_resources",
            "stack.yml:9:15: services.web.deploy.resources.reservations.generic_resources[0].named_resource_spec: named generic resources are not supported for services (as in Swarm): reserve a count with discrete_resource_spec",
            "stack.yml:10:15: services.web.deploy.resources.reservations.generic_resources[1].discrete_resource_spec: value must be at least 1",
            "stack.yml:11:15: services.web.deploy.resources.reservations.generic_resources[2].discrete_resource_spec: \"a b\" is not a resource kind: use letters, digits, '-', '_' and '.'",
            "stack.yml:12:15: services.web.deploy.resources.reservations.generic_resources[3].discrete_resource_spec: needs `kind` and `value`",
        ]
    );
}

#[test]
fn network_mode_host_needs_the_key_host() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    network_mode: host\nnetworks:\n  host:\n    name: shop_host_net\n"
        ),
        [
            "stack.yml:6:3: networks.host: network_mode: host joins Docker's host network under this key: rename this network, or declare `host: {external: true, name: host}`"
        ]
    );
}

#[test]
fn pull_policy_is_applied_and_what_stackd_cannot_do_refused() {
    use crate::model::PullPolicy;
    assert_eq!(web(&svc("")).task.pull_policy, PullPolicy::Missing);
    for (text, policy) in [
        ("always", PullPolicy::Always),
        ("never", PullPolicy::Never),
        ("missing", PullPolicy::Missing),
        ("if_not_present", PullPolicy::Missing),
    ] {
        let loaded = ok(&svc(&format!("    pull_policy: {text}\n")));
        assert_eq!(loaded.spec.services["web"].task.pull_policy, policy, "{text}");
        assert!(loaded.warnings.is_empty(), "{text}: {:?}", loaded.warnings);
        // The normalised stack says the same thing and loads back unchanged.
        let yaml = serde_saphyr::to_string(&compose::document(&loaded.spec)).expect("yaml");
        let again = load("shop", &files(&yaml), &LoadOptions::default()).expect("normalised loads");
        assert_eq!(again.spec, loaded.spec, "{yaml}");
    }
    let why = errors(&svc("    pull_policy: build\n"));
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].starts_with("stack.yml:4:5: services.web.pull_policy: `build` is not supported"), "{why:?}");
    let why = errors(&svc("    pull_policy: daily\n"));
    assert!(why[0].contains("a refresh period"), "{why:?}");
    let why = errors(&svc("    pull_policy: sometimes\n"));
    assert!(why[0].contains("must be one of `always`, `missing`, `never`"), "{why:?}");
}
