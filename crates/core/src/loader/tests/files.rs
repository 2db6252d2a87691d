//! Paths and the files a stack refers to: relative bind mounts, `env_file`,
//! service-level `tmpfs`, read through a [`MemoryFiles`] reader.

use std::collections::BTreeMap;

use super::{files, no_vars};
use crate::loader::{LoadError, LoadOptions, Loaded, MemoryFiles, SourceFile, load_with};
use crate::model::{Mount, MountKind};

fn reader(pairs: &[(&str, &str)]) -> MemoryFiles {
    MemoryFiles(pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect())
}

fn in_project() -> LoadOptions {
    LoadOptions {
        env: BTreeMap::from([("HOME".to_string(), "/home/ci".to_string())]),
        project_dir: Some("/srv/shop".into()),
        ..no_vars()
    }
}

fn load_in(name: &str, text: &str, options: &LoadOptions, fs: &MemoryFiles) -> Result<Loaded, LoadError> {
    load_with("shop", &[SourceFile { name: name.into(), text: text.into() }], options, fs)
}

fn rendered(e: LoadError) -> Vec<String> {
    e.diagnostics().iter().map(ToString::to_string).collect()
}

#[test]
fn relative_binds_resolve_against_the_project_directory() {
    let text = "services:\n  web:\n    image: x\n    volumes:\n      - ./conf:/etc/conf:ro\n      - .:/app\n      - ../shared:/shared\n      - ~/cache:/cache\n      - type: bind\n        source: ./data/\n        target: /data\n";
    let loaded = load_in("stack.yml", text, &in_project(), &MemoryFiles::default()).expect("loads");
    let sources: Vec<&str> = loaded.spec.services["web"].task.mounts.iter().map(|m| m.source.as_str()).collect();
    assert_eq!(sources, ["/srv/shop/conf", "/srv/shop", "/srv/shared", "/home/ci/cache", "/srv/shop/data"]);
}

#[test]
fn home_without_home_is_an_error() {
    let text = "services:\n  web:\n    image: x\n    volumes:\n      - ~/cache:/cache\n";
    let options = LoadOptions { project_dir: Some("/srv".into()), ..no_vars() };
    let err = load_in("stack.yml", text, &options, &MemoryFiles::default()).expect_err("no HOME");
    assert_eq!(
        rendered(err),
        ["stack.yml:5:9: services.web.volumes[0]: bind source \"~/cache\" starts with `~` but HOME is not set"]
    );
}

#[test]
fn env_files_in_order_then_environment() {
    let text = "services:\n  web:\n    image: x\n    env_file:\n      - common.env\n      - path: web.env\n      - path: missing.env\n        required: false\n      - path: raw.env\n        format: raw\n    environment:\n      LEVEL: debug\n";
    let fs = reader(&[
        ("deploy/common.env", "LEVEL=info\nNAME=common\nGREETING=\"hi ${WHO:-there}\"\n"),
        ("deploy/web.env", "# web\nNAME=web\n"),
        ("deploy/raw.env", "RAW=$NOT_INTERPOLATED \"quoted\"\n"),
    ]);
    let loaded = load_in("deploy/stack.yml", text, &no_vars(), &fs).expect("loads");
    assert_eq!(
        loaded.spec.services["web"].task.env,
        ["GREETING=hi there", "LEVEL=debug", "NAME=web", "RAW=$NOT_INTERPOLATED \"quoted\""]
    );
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "deploy/stack.yml:7:9: services.web.env_file[2]: optional file deploy/missing.env not read (No such file or directory); skipped"
        ]
    );
}

#[test]
fn env_file_errors_point_into_the_env_file() {
    let text =
        "services:\n  web:\n    image: x\n    env_file: web.env\n  api:\n    image: y\n    env_file: [gone.env]\n";
    let fs = reader(&[("web.env", "OK=1\n=nokey\n")]);
    let err = load_in("stack.yml", text, &no_vars(), &fs).expect_err("bad env files");
    assert_eq!(
        rendered(err),
        [
            "stack.yml:7:16: services.api.env_file[0]: cannot read gone.env: No such file or directory",
            "web.env:2:1: missing variable name before the `=`",
        ]
    );
}

#[test]
fn env_file_without_a_reader_is_an_error() {
    let err =
        crate::loader::load("shop", &files("services:\n  web:\n    image: x\n    env_file: web.env\n"), &no_vars())
            .expect_err("no reader");
    assert_eq!(rendered(err), ["stack.yml:4:5: services.web.env_file: cannot read web.env: files cannot be read here"]);
}

#[test]
fn service_tmpfs_short_forms() {
    let text = "services:\n  web:\n    image: x\n    tmpfs:\n      - /run\n      - /cache:size=64m,mode=1777,noexec\n      - /ro:ro\n  api:\n    image: x\n    tmpfs: /tmp\n    volumes:\n      - type: tmpfs\n        target: /big\n        tmpfs:\n          size: 1g\n          mode: 0o700\n";
    let loaded = load_in("stack.yml", text, &no_vars(), &MemoryFiles::default()).expect("loads");
    let t = |target: &str, size, mode, read_only| Mount {
        kind: MountKind::Tmpfs,
        source: String::new(),
        target: target.into(),
        read_only,
        tmpfs_size_bytes: size,
        tmpfs_mode: mode,
    };
    assert_eq!(
        loaded.spec.services["web"].task.mounts,
        [t("/run", 0, 0, false), t("/cache", 64 << 20, 0o1777, false), t("/ro", 0, 0, true)]
    );
    assert_eq!(loaded.spec.services["api"].task.mounts, [t("/big", 1 << 30, 0o700, false), t("/tmp", 0, 0, false)]);
}

#[test]
fn tmpfs_errors() {
    let text = "services:\n  web:\n    image: x\n    volumes:\n      - /data\n      - type: volume\n        target: /v\n        tmpfs:\n          mode: 999\n    tmpfs:\n      - /data\n      - relative\n      - /big:size=lots\n";
    let err = load_in("stack.yml", text, &no_vars(), &MemoryFiles::default()).expect_err("bad tmpfs");
    assert_eq!(
        rendered(err),
        [
            "stack.yml:8:9: services.web.volumes[1].tmpfs: only applies to `type: tmpfs`",
            "stack.yml:9:11: services.web.volumes[1].tmpfs.mode: invalid mode \"999\": expected octal permission bits like 1777 or 0644",
            "stack.yml:11:9: services.web.tmpfs[0]: \"/data\" is mounted twice",
            "stack.yml:12:9: services.web.tmpfs[1]: target \"relative\" must be an absolute path",
            "stack.yml:13:9: services.web.tmpfs[2]: \"lots\" is not a byte size: unknown unit \"lots\" (use b, k, m or g)",
        ]
    );
}

const OBJECTS: &str = "services:
  web:
    image: x
    configs:
      - site
      - source: site
        target: /etc/site.conf
        mode: 0440
    secrets:
      - db_password
      - source: api_key
        target: api.key
        uid: \"1000\"
        gid: \"1000\"
        mode: 0400
configs:
  site:
    content: |
      listen 80
secrets:
  db_password:
    file: ./secrets/db.txt
  api_key:
    environment: API_KEY
  shared:
    external: true
    name: org_shared
";

#[test]
fn configs_and_secrets_load_with_their_content() {
    let options = LoadOptions { env: BTreeMap::from([("API_KEY".to_string(), "k-123".to_string())]), ..no_vars() };
    let fs = reader(&[("deploy/secrets/db.txt", "s3cret\n")]);
    let loaded = load_in("deploy/stack.yml", OBJECTS, &options, &fs).expect("loads");
    let spec = &loaded.spec;
    assert_eq!(spec.configs["site"].name, "shop_site");
    assert_eq!(spec.configs["site"].data.0, b"listen 80\n");
    assert_eq!(spec.secrets["db_password"].data.0, b"s3cret\n");
    assert_eq!(spec.secrets["db_password"].origin, crate::model::ObjectOrigin::File("./secrets/db.txt".into()));
    assert_eq!(spec.secrets["api_key"].data.0, b"k-123");
    assert!(spec.secrets["shared"].external && spec.secrets["shared"].data.0.is_empty());
    assert_eq!(spec.secrets["shared"].name, "org_shared");
    let task = &spec.services["web"].task;
    let targets: Vec<(&str, &str, u32)> =
        task.configs.iter().map(|r| (r.name.as_str(), r.target.as_str(), r.mode)).collect();
    assert_eq!(targets, [("shop_site", "/site", 0o444), ("shop_site", "/etc/site.conf", 0o440)]);
    let secrets: Vec<(&str, &str, &str, u32)> =
        task.secrets.iter().map(|r| (r.name.as_str(), r.target.as_str(), r.uid.as_str(), r.mode)).collect();
    assert_eq!(
        secrets,
        [
            ("shop_db_password", "/run/secrets/db_password", "0", 0o444),
            ("shop_api_key", "/run/secrets/api.key", "1000", 0o400)
        ]
    );
    assert_eq!(task.secrets[0].digest, crate::model::digest(b"s3cret\n"));
    // The secret's content is in no debug output and no warning.
    assert!(!format!("{spec:?}").contains("s3cret"));
    assert!(!loaded.warnings.iter().any(|w| w.message.contains("s3cret")));
}

#[test]
fn normalised_output_names_the_source_never_the_secret() {
    let options = LoadOptions { env: BTreeMap::from([("API_KEY".to_string(), "k-123".to_string())]), ..no_vars() };
    let fs = reader(&[("deploy/secrets/db.txt", "s3cret\n")]);
    let loaded = load_in("deploy/stack.yml", OBJECTS, &options, &fs).expect("loads");
    let doc = crate::compose::document(&loaded.spec);
    let text = serde_json::to_string(&doc).expect("json");
    assert!(!text.contains("s3cret") && !text.contains("k-123"), "{text}");
    assert_eq!(doc["secrets"]["db_password"]["file"], "./secrets/db.txt");
    assert_eq!(doc["secrets"]["api_key"]["environment"], "API_KEY");
    // Loading the output again (same files, same variables) gives the same stack.
    let again = load_in("deploy/stack.yml", &text, &options, &fs).expect("loads again");
    assert_eq!(again.spec, loaded.spec);
}

#[test]
fn config_and_secret_errors() {
    let text = "services:
  web:
    image: x
    secrets:
      - missing
      - source: both
        uid: root
        mode: 999
    configs:
      - c1
      - source: c1
        target: /c1
configs:
  c1:
    content: x
secrets:
  both:
    file: a.txt
    environment: A
  none:
    labels: {a: b}
  inline:
    content: nope
  unset:
    environment: NOT_SET
  gone:
    file: gone.txt
  driven:
    driver: vault
";
    let err = load_in("stack.yml", text, &no_vars(), &reader(&[("a.txt", "a")])).expect_err("invalid");
    assert_eq!(
        rendered(err),
        [
            "stack.yml:5:9: services.web.secrets[0]: service web refers to undefined secret missing",
            "stack.yml:6:9: services.web.secrets[1]: service web refers to undefined secret both",
            "stack.yml:7:9: services.web.secrets[1].uid: must be a numeric id, got \"root\"",
            "stack.yml:8:9: services.web.secrets[1].mode: invalid mode \"999\": expected octal permission bits like 1777 or 0644",
            "stack.yml:11:9: services.web.configs[1]: \"/c1\" is the target of two configs",
            "stack.yml:19:5: secrets.both.environment: variable A is not set in the environment or .env",
            "stack.yml:19:5: secrets.both.environment: secret both sets file and environment: use exactly one",
            "stack.yml:20:3: secrets.none: secret none needs one of file:, environment: or external: true",
            "stack.yml:23:5: secrets.inline.content: a secret cannot be written in the stack file: use file: or environment:",
            "stack.yml:25:5: secrets.unset.environment: variable NOT_SET is not set in the environment or .env",
            "stack.yml:27:5: secrets.gone.file: cannot read gone.txt: No such file or directory",
            "stack.yml:29:5: secrets.driven.driver: secret drivers are not supported: the content must come from file:, environment: or external",
        ]
    );
}
