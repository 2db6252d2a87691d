//! Interpolation and `.env` files, through `load`.

use std::collections::BTreeMap;

use super::{errors, files, web};
use crate::loader::{Diagnostic, LoadError, LoadOptions, Loaded, SourceFile, load};
use crate::model::{ServiceMode, ServiceSpec};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Options with the environment `pairs` and, if given, a `.env` file.
fn options(pairs: &[(&str, &str)], dotenv: Option<&str>) -> LoadOptions {
    LoadOptions {
        env: env(pairs),
        env_file: dotenv.map(|text| SourceFile { name: ".env".into(), text: text.into() }),
        project_dir: None,
        profiles: Vec::new(),
    }
}

fn load_with(text: &str, opts: &LoadOptions) -> Result<Loaded, LoadError> {
    load("shop", &files(text), opts)
}

/// Loads `text` with the variables `pairs`; panics with the errors.
fn ok_with(text: &str, pairs: &[(&str, &str)]) -> Loaded {
    load_with(text, &options(pairs, None)).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

/// The service `web` of `text`, loaded with the variables `pairs`.
fn web_with(text: &str, pairs: &[(&str, &str)]) -> ServiceSpec {
    ok_with(text, pairs).spec.services.get("web").cloned().expect("service web")
}

/// The image of `web` when written as `image`, with the variables `pairs`.
fn image(written: &str, pairs: &[(&str, &str)]) -> String {
    web_with(&format!("services:\n  web:\n    image: \"{written}\"\n"), pairs).task.image
}

fn rendered(d: &[Diagnostic]) -> Vec<String> {
    d.iter().map(Diagnostic::to_string).collect()
}

/// The rendered errors of an invalid `text` with `opts`.
fn errors_with(text: &str, opts: &LoadOptions) -> Vec<String> {
    match load_with(text, opts) {
        Ok(_) => panic!("loaded, but errors were expected"),
        Err(e) => rendered(e.diagnostics()),
    }
}

const VARS: &[(&str, &str)] = &[("TAG", "1.4"), ("EMPTY", ""), ("REGISTRY", "registry.example.com")];

#[test]
fn dollar_name() {
    assert_eq!(image("app:$TAG", VARS), "app:1.4");
    assert_eq!(image("$REGISTRY/app:$TAG", VARS), "registry.example.com/app:1.4");
}

#[test]
fn braced() {
    assert_eq!(image("app:${TAG}", VARS), "app:1.4");
    assert_eq!(image("${REGISTRY}/app:${TAG}-alpine", VARS), "registry.example.com/app:1.4-alpine");
}

#[test]
fn default_when_unset_or_empty() {
    assert_eq!(image("app:${NOPE:-latest}", VARS), "app:latest");
    assert_eq!(image("app:${EMPTY:-latest}", VARS), "app:latest");
    assert_eq!(image("app:${TAG:-latest}", VARS), "app:1.4");
}

#[test]
fn default_when_unset() {
    assert_eq!(image("app:${NOPE-latest}", VARS), "app:latest");
    assert_eq!(image("app${EMPTY-:latest}", VARS), "app");
    assert_eq!(image("app:${TAG-latest}", VARS), "app:1.4");
}

#[test]
fn required_when_unset_or_empty() {
    assert_eq!(image("app:${TAG:?set TAG}", VARS), "app:1.4");
    let text = "services:\n  web:\n    image: x\n    environment:\n      - A=1\n      - B=${EMPTY:?B needs a value}\n";
    assert_eq!(
        errors_with(text, &options(VARS, None)),
        ["stack.yml:6:9: services.web.environment[1]: required variable EMPTY is missing a value: B needs a value"]
    );
    assert_eq!(
        errors("services:\n  web:\n    image: app:${TAG:?}\n"),
        ["stack.yml:3:5: services.web.image: required variable TAG is missing a value"]
    );
}

#[test]
fn required_when_unset() {
    assert_eq!(image("app${EMPTY?set EMPTY}", VARS), "app");
    assert_eq!(
        errors("services:\n  web:\n    image: app:${TAG?set TAG to the commit's tag}\n"),
        ["stack.yml:3:5: services.web.image: required variable TAG is missing a value: set TAG to the commit's tag"]
    );
}

#[test]
fn alternative_when_set() {
    assert_eq!(image("app${TAG:+:$TAG}", VARS), "app:1.4");
    assert_eq!(image("app${EMPTY:+:x}", VARS), "app");
    assert_eq!(image("app${NOPE:+:x}", VARS), "app");
    assert_eq!(image("app${EMPTY+:set}", VARS), "app:set");
    assert_eq!(image("app${NOPE+:set}", VARS), "app");
}

#[test]
fn nested_defaults() {
    assert_eq!(image("app:${NOPE:-${TAG:-x}}", VARS), "app:1.4");
    assert_eq!(image("app:${NOPE:-${ALSO_NOPE:-x}}", VARS), "app:x");
    assert_eq!(image("app:${TAG:-${NOPE:?not evaluated}}", VARS), "app:1.4");
    assert_eq!(
        errors("services:\n  web:\n    image: app:${NOPE:-${ALSO:?one of NOPE or ALSO}}\n"),
        ["stack.yml:3:5: services.web.image: required variable ALSO is missing a value: one of NOPE or ALSO"]
    );
}

#[test]
fn double_dollar_is_a_literal_dollar() {
    let s = web_with(
        "services:\n  web:\n    image: x\n    command: sh -c 'echo $$HOSTNAME $${TAG} $$$TAG'\n    environment:\n      PRICE: $$5\n",
        VARS,
    );
    assert_eq!(s.task.command, Some(vec!["sh".into(), "-c".into(), "echo $HOSTNAME ${TAG} $1.4".into()]));
    assert_eq!(s.task.env, ["PRICE=$5"]);
}

#[test]
fn other_dollars_are_kept_as_compose_keeps_them() {
    let s = web("services:\n  web:\n    image: x\n    command: [sh, -c, 'echo 5$ $(date) $1']\n");
    assert_eq!(s.task.command, Some(vec!["sh".into(), "-c".into(), "echo 5$ $(date) $1".into()]));
}

#[test]
fn unset_variable_is_blank_with_one_warning_per_variable_and_position() {
    let text = "services:\n  web:\n    image: app:${TAG}\n    environment:\n      - A=$NOPE$NOPE\n      - B=$NOPE\n      - C=${NOPE:-x}${NOPE-y}${NOPE:+z}\n";
    let loaded = ok_with(text, &[]);
    assert_eq!(loaded.spec.services["web"].task.image, "app:");
    assert_eq!(loaded.spec.services["web"].task.env, ["A=", "B=", "C=xy"]);
    assert_eq!(
        rendered(&loaded.warnings),
        [
            "stack.yml:3:5: services.web.image: variable \"TAG\" is not set, defaulting to a blank string",
            "stack.yml:5:9: services.web.environment[0]: variable \"NOPE\" is not set, defaulting to a blank string",
            "stack.yml:6:9: services.web.environment[1]: variable \"NOPE\" is not set, defaulting to a blank string",
        ]
    );
}

#[test]
fn values_copied_by_aliases_warn_once() {
    let text = "services:\n  web: &svc\n    image: app:${TAG}\n  worker: *svc\n";
    let loaded = ok_with(text, &[]);
    assert_eq!(loaded.spec.services["worker"].task.image, "app:");
    assert_eq!(
        rendered(&loaded.warnings),
        ["stack.yml:3:5: services.web.image: variable \"TAG\" is not set, defaulting to a blank string"]
    );
}

#[test]
fn syntax_errors_have_positions_and_paths() {
    let text = "services:\n  web:\n    image: \"app:${\"\n    user: ${UID\n    hostname: ${:-x}\n    working_dir: ${1DIR}\n    stop_signal: ${SIG:=TERM}\n    labels:\n      ok: ${TAG:-}\n      bad: '${A B}'\n";
    assert_eq!(
        errors(text),
        [
            "stack.yml:3:5: services.web.image: invalid interpolation \"${\": missing closing `}`",
            "stack.yml:4:5: services.web.user: invalid interpolation \"${UID\": missing closing `}`",
            "stack.yml:5:5: services.web.hostname: invalid interpolation \"${:-x}\": missing variable name",
            "stack.yml:6:5: services.web.working_dir: invalid interpolation \"${1DIR}\": \"1DIR\" is not a valid variable name (letters, digits and `_`, not starting with a digit)",
            "stack.yml:7:5: services.web.stop_signal: invalid interpolation \"${SIG:=TERM}\": unsupported operator \":=\"; use :-, -, :?, ?, :+ or +",
            "stack.yml:10:7: services.web.labels.bad: invalid interpolation \"${A B}\": \"A B\" is not a valid variable name (letters, digits and `_`, not starting with a digit)",
        ]
    );
}

#[test]
fn list_items_report_at_the_item() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    ports:\n      - \"80:80\"\n      - \"${PORT:?set PORT}:81\"\n"),
        ["stack.yml:6:9: services.web.ports[1]: required variable PORT is missing a value: set PORT"]
    );
}

#[test]
fn interpolated_values_are_typed_like_written_ones() {
    let text = "services:\n  web:\n    image: x\n    init: ${INIT}\n    stop_grace_period: ${GRACE:-1m}\n    ports:\n      - ${PUBLISHED}:80\n    deploy:\n      replicas: ${N}\n";
    let s = web_with(text, &[("N", "3"), ("INIT", "yes"), ("PUBLISHED", "8080")]);
    assert_eq!(s.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(s.task.init, Some(true));
    assert_eq!(s.task.stop_grace_period_ms, 60_000);
    assert_eq!(s.task.ports[0].published, Some(8080));
    assert_eq!(
        errors_with(text, &options(&[("N", "abc"), ("INIT", "maybe"), ("GRACE", "10"), ("PUBLISHED", "x")], None)),
        [
            "stack.yml:4:5: services.web.init: must be true or false, got maybe",
            "stack.yml:5:5: services.web.stop_grace_period: must be a duration with a unit (like 10s), got 10",
            "stack.yml:7:9: services.web.ports[0]: invalid port \"x:80\": published port must be a number 1-65535, got \"x\"",
            "stack.yml:9:7: services.web.deploy.replicas: must be a non-negative integer, got abc",
        ]
    );
    // Unset: blank, which is no integer either.
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    deploy:\n      replicas: ${N}\n"),
        ["stack.yml:5:7: services.web.deploy.replicas: must be a non-negative integer, got \"\""]
    );
}

#[test]
fn keys_are_not_interpolated() {
    let s = web_with("services:\n  web:\n    image: x\n    labels:\n      $TAG: ${TAG}\n", VARS);
    assert_eq!(s.task.labels, BTreeMap::from([("$TAG".to_string(), "1.4".to_string())]));
}

#[test]
fn extension_templates_are_interpolated_where_they_are_used() {
    let text = "x-unused: ${NOPE:?never checked}\nx-app: &app\n  image: app:${TAG:?set TAG}\nservices:\n  web:\n    <<: *app\n    x-note: ${ALSO_NOPE}\n";
    let loaded = ok_with(text, VARS);
    assert_eq!(loaded.spec.services["web"].task.image, "app:1.4");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(errors(text), ["stack.yml:3:3: services.web.image: required variable TAG is missing a value: set TAG"]);
    // Deeper extension keys are interpolated, as compose does.
    let w = rendered(&ok_with("services:\n  web:\n    image: x\n    deploy:\n      x-d: $NOPE\n", &[]).warnings);
    assert_eq!(
        w,
        ["stack.yml:5:7: services.web.deploy.x-d: variable \"NOPE\" is not set, defaulting to a blank string"]
    );
    // A service whose name starts with `x-` is a service, and interpolated.
    let loaded = ok_with("services:\n  x-web:\n    image: app:$TAG\n", VARS);
    assert_eq!(loaded.spec.services["x-web"].task.image, "app:1.4");
}

#[test]
fn a_failed_value_reports_one_error() {
    assert_eq!(
        errors("services:\n  web:\n    image: x\n    deploy:\n      replicas: ${N:?set N}\n"),
        ["stack.yml:5:7: services.web.deploy.replicas: required variable N is missing a value: set N"]
    );
}

#[test]
fn environment_entries_without_value_come_from_the_variables() {
    let text = "services:\n  web:\n    image: x\n    environment:\n      - HOME\n      - FROM_DOTENV\n      - A=1\n      - MISSING\n  db:\n    image: y\n    environment:\n      TOKEN:\n";
    let loaded = load_with(text, &options(&[("HOME", "/root"), ("TOKEN", "s3")], Some("FROM_DOTENV=yes\n")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.spec.services["web"].task.env, ["A=1", "FROM_DOTENV=yes", "HOME=/root"]);
    assert_eq!(loaded.spec.services["db"].task.env, ["TOKEN=s3"]);
    assert_eq!(
        rendered(&loaded.warnings),
        [
            "stack.yml:8:9: services.web.environment[3]: variable MISSING has no value here and is not set in the environment or .env; dropped"
        ]
    );
}

#[test]
fn dotenv_supplies_variables_and_the_environment_wins() {
    let text = "services:\n  web:\n    image: ${REGISTRY}/app:${TAG}\n    deploy:\n      replicas: ${N}\n";
    let dotenv = "# defaults\nREGISTRY=registry.example.com\nTAG=from-dotenv\nN=2\n";
    let loaded = load_with(text, &options(&[("TAG", "from-env")], Some(dotenv))).unwrap_or_else(|e| panic!("{e}"));
    let s = &loaded.spec.services["web"];
    assert_eq!(s.task.image, "registry.example.com/app:from-env");
    assert_eq!(s.mode, ServiceMode::Replicated { replicas: 2 });
    // An empty value in the environment still wins.
    let loaded = load_with(text, &options(&[("TAG", "")], Some(dotenv))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.spec.services["web"].task.image, "registry.example.com/app:");
    // `.env` reads the environment too.
    let loaded = load_with(text, &options(&[("V", "9")], Some("REGISTRY=r\nTAG=v$V\nN=${V}\n"))).expect("valid");
    assert_eq!(loaded.spec.services["web"].task.image, "r/app:v9");
    assert_eq!(loaded.spec.services["web"].mode, ServiceMode::Replicated { replicas: 9 });
}

#[test]
fn dotenv_quoting() {
    let text = "services:\n  web:\n    image: x\n    environment:\n      SINGLE: ${SINGLE}\n      DOUBLE: ${DOUBLE}\n      PLAIN: ${PLAIN}\n";
    let dotenv = "USER=app\nSINGLE='$USER # literal'\nDOUBLE=\"a\\tb $USER\"\nexport PLAIN=  spaced out   # comment\n";
    let loaded = load_with(text, &options(&[], Some(dotenv))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.spec.services["web"].task.env, ["DOUBLE=a\tb app", "PLAIN=spaced out", "SINGLE=$USER # literal"]);
}

#[test]
fn dotenv_errors_come_first_with_the_stack_file_errors() {
    let text = "services:\n  web:\n    image: ${IMAGE:?set IMAGE}\n    deploy:\n      replicas: -1\n";
    let opts = LoadOptions {
        env: BTreeMap::new(),
        env_file: Some(SourceFile { name: "deploy/.env".into(), text: "OK=1\nNOT A KEY\nIMAGE=\"app\n".into() }),
        project_dir: None,
        profiles: Vec::new(),
    };
    assert_eq!(
        errors_with(text, &opts),
        [
            "deploy/.env:2:1: invalid variable name \"NOT A KEY\": use letters, digits, `_`, `.` and `-`",
            "deploy/.env:3:7: IMAGE: unterminated quoted value: missing closing \"",
            "stack.yml:3:5: services.web.image: required variable IMAGE is missing a value: set IMAGE",
            "stack.yml:5:7: services.web.deploy.replicas: must be a non-negative integer, got -1",
        ]
    );
}

#[test]
fn dotenv_warnings_come_first() {
    let loaded = load_with("services:\n  web:\n    image: x$B\n", &options(&[], Some("A=$NOPE\n"))).expect("valid");
    assert_eq!(
        rendered(&loaded.warnings),
        [
            ".env:1:3: A: variable \"NOPE\" is not set, defaulting to a blank string",
            "stack.yml:3:5: services.web.image: variable \"B\" is not set, defaulting to a blank string",
        ]
    );
}

#[test]
fn corpus_style_file_loads_with_blank_values_and_warnings() {
    // From awesome-compose/postgresql-pgadmin: variables meant for a `.env`.
    let text = "services:\n  postgres:\n    image: postgres:latest\n    environment:\n      - POSTGRES_USER=${POSTGRES_USER}\n      - POSTGRES_DB=${POSTGRES_DB} #optional (specify default database instead of $POSTGRES_DB)\n";
    let loaded = load_with(text, &options(&[], Some("POSTGRES_USER=yourUser\n"))).expect("valid");
    assert_eq!(loaded.spec.services["postgres"].task.env, ["POSTGRES_DB=", "POSTGRES_USER=yourUser"]);
    assert_eq!(
        rendered(&loaded.warnings),
        [
            "stack.yml:6:9: services.postgres.environment[1]: variable \"POSTGRES_DB\" is not set, defaulting to a blank string"
        ]
    );
}
