//! Errors: exact messages, positions and key paths.

use super::{errors, files, no_vars};
use crate::loader::{Diagnostic, LoadError, SourceFile, load};

#[test]
fn invalid_yaml() {
    assert_eq!(
        errors("services:\n  web:\n    image: [nginx\n    ports: 80\n"),
        ["stack.yml:4:10: services.web.image[0]: illegal placement of ':' indicator"]
    );
    assert_eq!(
        errors("services:\n  web:\n   image: x\n  bad\n"),
        ["stack.yml:4:3: services.web: simple key expected ':'"]
    );
}

/// Syntax errors point where serde-saphyr points.
#[test]
fn syntax_errors_match_serde_saphyr_locations() {
    for text in [
        "a: [1, 2\nb: 3\n",
        "a: b: c\n",
        "a:\n  - x\n  y: 1\n",
        "a: 'open\n",
        "a: *nope\n",
        "a: [1, 2]]\n",
        "services:\n  web:\n    image: \"x\n",
    ] {
        let saphyr = serde_saphyr::from_str::<serde::de::IgnoredAny>(text).expect_err(text);
        let loc = saphyr.location().expect("a location");
        let ours = match load("shop", &files(text), &no_vars()) {
            Err(LoadError::Invalid { errors, .. }) => errors,
            Ok(_) => panic!("loaded {text:?}"),
        };
        assert_eq!(ours.len(), 1, "{ours:?}");
        let (line, column) = (u64::try_from(ours[0].line).ok(), u64::try_from(ours[0].column).ok());
        assert_eq!((line, column), (Some(loc.line()), Some(loc.column())), "{text:?}: {saphyr} vs {}", ours[0]);
    }
}

#[test]
fn service_without_image() {
    assert_eq!(
        errors("services:\n  web:\n    command: echo\n"),
        ["stack.yml:2:3: services.web: service web has no `image:`; every service needs one"]
    );
    assert_eq!(
        errors("services:\n  web:\n"),
        ["stack.yml:2:3: services.web: service web has no `image:`; every service needs one"]
    );
}

#[test]
fn build_only_service() {
    assert_eq!(
        errors("services:\n  api:\n    build: ./api\n    ports: [\"80:80\"]\n"),
        [
            "stack.yml:2:3: services.api: has `build:` but no `image:`; stackd does not build images — build and push it, then set image"
        ]
    );
}

#[test]
fn replicas_must_be_a_non_negative_integer() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    deploy:\n      replicas: -2\n"),
        ["stack.yml:5:7: services.web.deploy.replicas: must be a non-negative integer, got -2"]
    );
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    deploy:\n      replicas: three\n"),
        ["stack.yml:5:7: services.web.deploy.replicas: must be a non-negative integer, got three"]
    );
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    deploy:\n      replicas: 20000\n"),
        ["stack.yml:5:7: services.web.deploy.replicas: at most 10000, got 20000"]
    );
}

#[test]
fn replicas_with_global() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    deploy:\n      mode: global\n      replicas: 2\n"),
        ["stack.yml:6:7: services.web.deploy.replicas: replicas cannot be used with mode: global"]
    );
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    deploy:\n      replicas: 2\n      mode: global-job\n"),
        ["stack.yml:5:7: services.web.deploy.replicas: replicas cannot be used with mode: global-job"]
    );
}

#[test]
fn unknown_deploy_mode() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    deploy:\n      mode: batch\n"),
        [
            "stack.yml:5:7: services.web.deploy.mode: mode \"batch\" is not a deploy mode; use replicated, global, replicated-job or global-job"
        ]
    );
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    deploy:\n      mode: [global]\n"),
        [
            "stack.yml:5:7: services.web.deploy.mode: must be replicated, global, replicated-job or global-job, got a list"
        ]
    );
}

#[test]
fn rollback_config_cannot_roll_back() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    deploy:\n      rollback_config:\n        parallelism: 2\n        failure_action: rollback\n        max_failure_ratio: 2\n        order: sideways\n"
        ),
        [
            "stack.yml:7:9: services.web.deploy.rollback_config.failure_action: rollback is not a failure action of a rollback: a failed rollback can pause or continue",
            "stack.yml:8:9: services.web.deploy.rollback_config.max_failure_ratio: must be between 0 and 1, got 2",
            "stack.yml:9:9: services.web.deploy.rollback_config.order: must be one of `stop-first`, `start-first`, got sideways",
        ]
    );
}

#[test]
fn endpoint_mode_is_vip_or_dnsrr() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    deploy:\n      endpoint_mode: roundrobin\n"),
        ["stack.yml:5:7: services.web.deploy.endpoint_mode: must be one of `vip`, `dnsrr`, got roundrobin"]
    );
}

#[test]
fn dnsrr_with_ingress_ports() {
    // Swarm: "port published with ingress mode can't be used with dnsrr mode".
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    ports:\n      - \"8080:80\"\n      - target: 53\n        published: 53\n        protocol: udp\n        mode: host\n    deploy:\n      endpoint_mode: dnsrr\n"
        ),
        [
            "stack.yml:11:7: services.web.deploy.endpoint_mode: dnsrr can't be used with port 8080/tcp published in ingress mode: publish it with `mode: host`, or use endpoint_mode: vip"
        ]
    );
}

#[test]
fn bad_ports() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    ports:\n      - \"80:http\"\n      - 3000-3005:3000-3004\n      - 70000\n      - target: 80\n        published: 8000-8010\n"
        ),
        [
            "stack.yml:5:9: services.web.ports[0]: invalid port \"80:http\": target port must be a number 1-65535, got \"http\"",
            "stack.yml:6:9: services.web.ports[1]: invalid port \"3000-3005:3000-3004\": the published and target ranges must have the same length",
            "stack.yml:7:9: services.web.ports[2]: invalid port \"70000\": target port must be a number 1-65535, got \"70000\"",
            "stack.yml:9:9: services.web.ports[3].published: a published port range is only allowed in the short syntax, like \"8000-8002:80-82\", got \"8000-8010\"",
        ]
    );
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    ports:\n      - published: 80\n      - target: 81\n        protocol: icmp\n      - 8080:80\n      - 8080:81\n"
        ),
        [
            "stack.yml:5:9: services.web.ports[0]: a long-syntax port needs `target:`",
            "stack.yml:7:9: services.web.ports[1].protocol: protocol must be tcp, udp or sctp, got \"icmp\"",
            "stack.yml:9:9: services.web.ports[3]: port 8080/tcp is published twice",
        ]
    );
}

#[test]
fn too_many_restart_attempts() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    deploy:\n      restart_policy:\n        max_attempts: 1000000\n"),
        ["stack.yml:6:9: services.web.deploy.restart_policy.max_attempts: at most 100, got 1000000 (0 means no limit)"]
    );
}

#[test]
fn bad_durations() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    stop_grace_period: 10\n    healthcheck:\n      interval: 5 minutes\n"
        ),
        [
            "stack.yml:4:5: services.web.stop_grace_period: must be a duration with a unit (like 10s), got 10",
            "stack.yml:6:7: services.web.healthcheck.interval: must be a duration like 10s, 1m30s or 500ms, got \"5 minutes\"",
        ]
    );
}

#[test]
fn undefined_volume_and_relative_bind() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    volumes:\n      - data:/data\n      - ./conf:/etc/conf:ro\n      - type: volume\n        source: other\n        target: /other\n"
        ),
        [
            "stack.yml:5:9: services.web.volumes[0]: service web refers to undefined volume data",
            "stack.yml:6:9: services.web.volumes[1]: relative bind path \"./conf\" needs the stack file's directory, which is not known here",
            "stack.yml:8:9: services.web.volumes[2].source: service web refers to undefined volume other",
        ]
    );
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    volumes:\n      - /a:/data\n      - /b:/data\n      - /c:relative\n"
        ),
        [
            "stack.yml:6:9: services.web.volumes[1]: \"/data\" is mounted twice",
            "stack.yml:7:9: services.web.volumes[2]: target \"relative\" must be an absolute path",
        ]
    );
}

#[test]
fn several_errors_are_reported_together_in_file_order() {
    let text = "services:\n  api:\n    build: .\n  web:\n    image: x\n    deploy:\n      replicas: -1\n      update_config:\n        max_failure_ratio: 2\n        order: random\n    ports: [\"99999\"]\n  db:\n    image: [postgres]\n";
    assert_eq!(
        errors(text),
        [
            "stack.yml:2:3: services.api: has `build:` but no `image:`; stackd does not build images — build and push it, then set image",
            "stack.yml:7:7: services.web.deploy.replicas: must be a non-negative integer, got -1",
            "stack.yml:9:9: services.web.deploy.update_config.max_failure_ratio: must be between 0 and 1, got 2",
            "stack.yml:10:9: services.web.deploy.update_config.order: must be one of `stop-first`, `start-first`, got random",
            "stack.yml:11:13: services.web.ports[0]: invalid port \"99999\": target port must be a number 1-65535, got \"99999\"",
            "stack.yml:13:5: services.db.image: must be a string, got a list",
        ]
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    environment:\n      A: {b: 1}\n    init: maybe\n    command: {a: 1}\n"
        ),
        [
            "stack.yml:5:7: services.web.environment.A: must be a string, got a mapping",
            "stack.yml:6:5: services.web.init: must be true or false, got maybe",
            "stack.yml:7:5: services.web.command: must be a string or a list of strings, got a mapping",
        ]
    );
    assert_eq!(
        errors("- a\n- b\n"),
        ["stack.yml:1:1: a stack file must be a mapping (services:, volumes:, …), got a list"]
    );
    assert_eq!(errors("services: {}\n"), ["stack.yml:1:1: services: the stack has no services"]);
    assert_eq!(
        errors("volumes: {}\n"),
        ["stack.yml:1:1: services: the stack has no services: add a `services:` section"]
    );
    assert_eq!(errors(""), ["stack.yml:1:1: the file is empty: it needs a `services:` section"]);
}

#[test]
fn duplicate_keys() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    image: y\n"),
        ["stack.yml:4:5: services.web.image: duplicate key (first defined at line 3, column 5)"]
    );
}

#[test]
fn healthcheck_errors() {
    assert_eq!(
        errors(
            "services:\n  web:\n    image: x\n    healthcheck:\n      test: [\"curl\", \"-f\"]\n      retries: -1\n"
        ),
        [
            "stack.yml:5:7: services.web.healthcheck.test: a test list must start with CMD, CMD-SHELL or NONE, got \"curl\"",
            "stack.yml:6:7: services.web.healthcheck.retries: must be a non-negative integer, got -1",
        ]
    );
}

#[test]
fn top_level_volume_errors() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\nvolumes:\n  ext:\n    external: true\n    driver: local\n  _bad:\n"),
        [
            "stack.yml:7:5: volumes.ext.driver: cannot be set on an external volume (volume ext is not managed by stackd)",
            "stack.yml:8:3: volumes._bad: volume name is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit",
        ]
    );
}

#[test]
fn stack_name_and_file_count() {
    let err = load("Bad Name!", &files("services:\n  web:\n    image: x\n"), &no_vars()).expect_err("invalid name");
    assert_eq!(
        err.to_string(),
        "stack name \"Bad Name!\" is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit (63 at most)"
    );
    let two = [
        SourceFile { name: "a.yml".into(), text: "services: {}".into() },
        SourceFile { name: "b.yml".into(), text: "services: {}".into() },
    ];
    // Several files are merged; the merged stack still needs a service.
    assert_eq!(
        load("shop", &two, &no_vars()).expect_err("no service in either file").to_string(),
        "a.yml:1:1: services: the stack has no services"
    );
    assert_eq!(load("shop", &[], &no_vars()).expect_err("no file").to_string(), "no stack file given");
}

#[test]
fn display_of_diagnostics_and_errors() {
    let d = |line, column, path: &str| Diagnostic {
        file: "stack.yml".into(),
        line,
        column,
        path: path.into(),
        message: "must be a non-negative integer, got -2".into(),
    };
    assert_eq!(
        d(14, 7, "services.web.deploy.replicas").to_string(),
        "stack.yml:14:7: services.web.deploy.replicas: must be a non-negative integer, got -2"
    );
    assert_eq!(d(0, 0, "services.web").to_string(), "stack.yml: services.web: must be a non-negative integer, got -2");
    assert_eq!(d(3, 1, "").to_string(), "stack.yml:3:1: must be a non-negative integer, got -2");
    let err = LoadError::Invalid { errors: vec![d(1, 1, "a"), d(2, 2, "b")], warnings: Vec::new() };
    assert_eq!(
        err.to_string(),
        "stack.yml:1:1: a: must be a non-negative integer, got -2\nstack.yml:2:2: b: must be a non-negative integer, got -2"
    );
    assert_eq!(err.diagnostics().len(), 2);
}

#[test]
fn alias_bombs_and_deep_nesting_are_refused() {
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for c in 'b'..='j' {
        bomb.push_str(&format!(
            "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
        prev = c;
    }
    let errs = errors(&bomb);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("expands to more than 1000000 values"), "{errs:?}");
    let deep = format!("services:\n  web:\n    image: x\n    labels: {}{}\n", "{a: ".repeat(80), "}".repeat(80));
    let errs = errors(&deep);
    assert!(errs[0].contains("nested more than 64 levels deep"), "{errs:?}");
}
