//! Several stack files through the public API: a file merged over itself
//! is the file (every corpus file), and a merged stack written back as
//! compose (`stackctl config -c a.yml -c b.yml`) loads into the same stack.

use stackd_core::compose;
use stackd_core::loader::{LoadOptions, SourceFile, load};

mod common;
use common::{corpus_env, corpus_files};

#[test]
fn a_corpus_file_merged_over_itself_is_the_same_stack() {
    let options = LoadOptions { env: corpus_env(), env_file: None, project_dir: None, profiles: Vec::new() };
    let mut checked = 0;
    for file in corpus_files() {
        let name = file.name.clone();
        let once = load("corpus", std::slice::from_ref(&file), &options);
        let twice = load("corpus", &[file.clone(), file], &options);
        match (once, twice) {
            (Ok(once), Ok(twice)) => {
                assert_eq!(twice.spec, once.spec, "{name}: merging the file over itself changed the stack");
                checked += 1;
            }
            (Err(_), Err(_)) => {}
            (once, twice) => panic!("{name}: alone {:?}, merged over itself {:?}", once.is_ok(), twice.is_ok()),
        }
    }
    assert!(checked >= 5, "only {checked} corpus files loaded");
}

#[test]
fn a_merged_stack_round_trips_through_its_compose_form() {
    let base = "services:
  web:
    image: registry.example.com/web:1.4
    command: [serve, --port, '8080']
    environment: [MODE=dev, TZ=UTC]
    labels: {team: web}
    ports: ['8080:8080']
    volumes: ['data:/var/lib/web']
    deploy:
      replicas: 2
      update_config: {parallelism: 1, order: start-first}
  db:
    image: postgres:16
    volumes: ['pg:/var/lib/postgresql/data']
volumes:
  data:
  pg:
";
    let prod = "services:
  web:
    image: registry.example.com/web:1.5
    environment:
      MODE: prod
    ports:
      - target: 8080
        published: 8080
        mode: host
      - '8443:8443'
    deploy:
      replicas: 4
      restart_policy: {condition: on-failure}
  db:
    volumes: [{type: volume, source: pg, target: /var/lib/postgresql/data, read_only: false}]
";
    let hotfix = "services:
  web:
    image: registry.example.com/web:1.5.1
    command: [serve, --port, '8080', --verbose]
";
    let files = [
        SourceFile { name: "stack.yml".into(), text: base.into() },
        SourceFile { name: "prod.yml".into(), text: prod.into() },
        SourceFile { name: "hotfix.yml".into(), text: hotfix.into() },
    ];
    let loaded = load("shop", &files, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let web = &loaded.spec.services["web"];
    assert_eq!(web.task.image, "registry.example.com/web:1.5.1");
    assert_eq!(web.task.command.as_deref().map(<[String]>::len), Some(4));
    assert_eq!(web.task.env, ["MODE=prod", "TZ=UTC"]);
    assert_eq!(web.task.ports.len(), 2);
    assert_eq!(loaded.spec.services["db"].task.mounts.len(), 1);

    let yaml = serde_saphyr::to_string(&compose::document(&loaded.spec)).expect("serialise YAML");
    let again = load("shop", &[SourceFile { name: "config.yml".into(), text: yaml.clone() }], &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}\n---\n{yaml}"));
    assert_eq!(again.spec, loaded.spec);
}
