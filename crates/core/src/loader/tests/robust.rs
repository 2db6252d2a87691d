//! Arbitrary input never panics, and every diagnostic points at a line.
//! Also the regression tests of what fuzzing found (fuzz/, docs/fuzzing.md).

use proptest::prelude::*;

use super::{files, no_vars, ok};
use crate::compose;
use crate::loader::{LoadError, LoadOptions, SourceFile, load};

/// Loads `text`; checks that each diagnostic has a position.
fn check(text: &str) -> Result<(), TestCaseError> {
    if let Err(LoadError::Invalid { errors: diags, .. }) = load("shop", &files(text), &no_vars()) {
        prop_assert!(!diags.is_empty());
        for d in &diags {
            prop_assert!(d.line > 0 && d.column > 0, "no position: {d} in {text:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn yaml_like_noise(text in "[a-z0-9:\\- \n\\[\\]{},&*<>'\"#!|$.~/=]{0,300}") {
        check(&text)?;
    }

    #[test]
    fn compose_shaped(
        key in prop::sample::select(vec![
            "image", "command", "environment", "labels", "volumes", "ports", "deploy", "healthcheck",
            "stop_grace_period", "init", "read_only", "user", "build", "x-a", "zzz",
        ]),
        value in prop::sample::select(vec![
            "x", "-1", "1.5", "yes", "~", "[]", "{}", "[a, 1]", "{a: 1}", "'80:80'", "1m", "$$x", "${V}",
            "[{type: bind, source: /a, target: /b}]", "{replicas: 2, mode: global}", "{test: [CMD, x]}",
            "[data:/d]", "[\"8080:80\", {target: 81}]", "{mode: host}", "&a [*a]",
        ]),
    ) {
        check(&format!("services:\n  web:\n    image: app\n    {key}: {value}\nvolumes:\n  data:\n"))?;
    }
}

/// `text` loads, and its normalised form (`stackctl config`) loads again to
/// the same stack: the fuzz target's invariant.
fn round_trips(text: &str) {
    let spec = ok(text).spec;
    let yaml = serde_saphyr::to_string(&compose::document(&spec)).expect("serialise YAML");
    let again = [SourceFile { name: "config.yml".into(), text: yaml.clone() }];
    match load(&spec.name, &again, &LoadOptions::default()) {
        Ok(l) => assert_eq!(l.spec, spec, "emitted:\n{yaml}"),
        Err(e) => panic!("the normalised stack does not load again:\n{e}\n---\n{yaml}"),
    }
}

/// Fuzzing (minimised): a healthcheck without `test` (the image's test is
/// kept) was written back as `test: []`, which does not load.
#[test]
fn a_healthcheck_without_test_round_trips() {
    round_trips("services:\n d: \n    image: a\n    healthcheck:\n     g: ");
    round_trips("services:\n  web:\n    image: a\n    healthcheck:\n      interval: 10s\n      retries: 3\n");
}
