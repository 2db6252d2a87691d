//! Keys: a key that is not in the compose specification at its place is an
//! error with a "did you mean", as `docker stack deploy` refuses a key its
//! schema does not have; a key that is compose but that stackd does not
//! apply is a warning; `x-` keys are allowed where compose allows them.

use super::{errors, files, no_vars, warnings};
use crate::loader::{Diagnostic, load};

/// The three typos of issue 12: each dropped a setting with a warning.
#[test]
fn a_typo_is_an_error_with_a_suggestion() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    enviroment:\n      A: '1'\n    helthcheck:\n      test: [CMD, true]\n    deploy:\n      replica: 3\n"
        ),
        [
            "stack.yml:4:5: services.web.enviroment: unknown key `enviroment`: did you mean `environment`?",
            "stack.yml:6:5: services.web.helthcheck: unknown key `helthcheck`: did you mean `healthcheck`?",
            "stack.yml:9:7: services.web.deploy.replica: unknown key `replica`: did you mean `replicas`?",
        ]
    );
}

/// Every mapping the loader reads checks its keys against the keys compose
/// allows there.
#[test]
fn every_place_checks_its_keys() {
    let text = "\
services:
  web:
    image: x
    deploy:
      resources:
        limits: {cpu: '1'}
        reservations: {memroy: 1M, generic_resources: [{discrete_resource_spec: {kind: gpu, valeu: 1}}]}
        limit: {}
      restart_policy: {conditon: any}
      update_config: {paralelism: 2}
      rollback_config: {oder: start-first}
      placement: {constraint: []}
    healthcheck: {intervall: 5s}
    logging: {drivr: json-file}
    ulimits: {nofile: {sfot: 1, hard: 2}}
    ports: [{target: 80, publised: 8080}]
    volumes: [{type: tmpfs, target: /t, tmpfs: {szie: 1m}}, {type: volume, source: data, targte: /d}]
    networks: {back: {alias: [b]}}
    secrets: [{source: s, traget: /s}]
    env_file: [{path: a.env, requird: false}]
    depends_on: {db: {conditoin: service_started}}
  db:
    image: x
volumes:
  data: {drivers: local}
  old: {external: {nmae: x}}
networks:
  back: {internl: true}
secrets:
  s: {fiel: s.txt}
configs:
  c: {contnet: x}
volumse: {}
";
    let unknown: Vec<String> = errors(text).into_iter().filter(|e| e.contains("unknown key")).collect();
    assert_eq!(
        unknown,
        [
            "stack.yml:6:18: services.web.deploy.resources.limits.cpu: unknown key `cpu`: did you mean `cpus`?",
            "stack.yml:7:24: services.web.deploy.resources.reservations.memroy: unknown key `memroy`: did you mean `memory`?",
            "stack.yml:7:93: services.web.deploy.resources.reservations.generic_resources[0].discrete_resource_spec.valeu: unknown key `valeu`: did you mean `value`?",
            "stack.yml:8:9: services.web.deploy.resources.limit: unknown key `limit`: did you mean `limits`?",
            "stack.yml:9:24: services.web.deploy.restart_policy.conditon: unknown key `conditon`: did you mean `condition`?",
            "stack.yml:10:23: services.web.deploy.update_config.paralelism: unknown key `paralelism`: did you mean `parallelism`?",
            "stack.yml:11:25: services.web.deploy.rollback_config.oder: unknown key `oder`: did you mean `order`?",
            "stack.yml:12:19: services.web.deploy.placement.constraint: unknown key `constraint`: did you mean `constraints`?",
            "stack.yml:13:19: services.web.healthcheck.intervall: unknown key `intervall`: did you mean `interval`?",
            "stack.yml:14:15: services.web.logging.drivr: unknown key `drivr`: did you mean `driver`?",
            "stack.yml:15:24: services.web.ulimits.nofile.sfot: unknown key `sfot`: did you mean `soft`?",
            "stack.yml:16:26: services.web.ports[0].publised: unknown key `publised`: did you mean `published`?",
            "stack.yml:17:49: services.web.volumes[0].tmpfs.szie: unknown key `szie`: did you mean `size`?",
            "stack.yml:17:90: services.web.volumes[1].targte: unknown key `targte`: did you mean `target`?",
            "stack.yml:18:23: services.web.networks.back.alias: unknown key `alias`: did you mean `aliases`?",
            "stack.yml:19:27: services.web.secrets[0].traget: unknown key `traget`: did you mean `target`?",
            "stack.yml:20:30: services.web.env_file[0].requird: unknown key `requird`: did you mean `required`?",
            "stack.yml:21:23: services.web.depends_on.db.conditoin: unknown key `conditoin`: did you mean `condition`?",
            "stack.yml:25:10: volumes.data.drivers: unknown key `drivers`: did you mean `driver`?",
            "stack.yml:26:20: volumes.old.external.nmae: unknown key `nmae`: did you mean `name`?",
            "stack.yml:28:10: networks.back.internl: unknown key `internl`: did you mean `internal`?",
            "stack.yml:30:7: secrets.s.fiel: unknown key `fiel`: did you mean `file`?",
            "stack.yml:32:7: configs.c.contnet: unknown key `contnet`: did you mean `content`?",
            "stack.yml:33:1: volumse: unknown key `volumse`: did you mean `volumes`?",
        ]
    );
}

/// A key far from every valid one gets no suggestion; a `deploy:` key
/// written on the service says where it belongs.
#[test]
fn no_suggestion_when_nothing_is_close() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    colour: blue\n    replicas: 2\ncolour: green\n"),
        [
            "stack.yml:4:5: services.web.colour: unknown key `colour`: not a key of a service in the compose specification",
            "stack.yml:5:5: services.web.replicas: unknown key `replicas`: did you mean `deploy.replicas`?",
            "stack.yml:6:1: colour: unknown key `colour`: not a top-level key in the compose specification",
        ]
    );
}

/// Keys that are compose but that stackd, like Swarm, does not apply stay
/// warnings; so do `x-` keys where compose allows them (none are read).
#[test]
fn compose_keys_stackd_does_not_apply_stay_warnings() {
    assert_eq!(
        warnings(
            "services:\n  web:\n    image: x\n    shm_size: 1g\n    x-note: 1\n    deploy:\n      placement:\n        preferences:\n          - spread: node.labels.zone\n            x-why: racks\n"
        ),
        ["stack.yml:4:5: services.web.shm_size: not supported yet; ignored"]
    );
}

/// Where compose allows no extension (an `env_file` entry, `extends`), an
/// `x-` key is an unknown key too.
#[test]
fn extensions_only_where_compose_allows_them() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    env_file: [{path: a.env, required: false, x-a: 1}]\n"),
        ["stack.yml:4:47: services.web.env_file[0].x-a: unknown key `x-a`: extension keys are not allowed here"]
    );
}

/// Every warning is returned with the errors, not only when the stack loads.
#[test]
fn warnings_are_kept_when_there_are_errors() {
    let err =
        load("shop", &files("services:\n  web:\n    image: x\n    shm_size: 1g\n    enviroment: {}\n"), &no_vars())
            .expect_err("a typo");
    assert_eq!(
        err.warnings().iter().map(Diagnostic::to_string).collect::<Vec<_>>(),
        ["stack.yml:4:5: services.web.shm_size: not supported yet; ignored"]
    );
    assert_eq!(err.diagnostics().len(), 1);
}
