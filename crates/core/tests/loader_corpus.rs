//! Loads every compose file of the awesome-compose corpus, as `stackctl`
//! would from the corpus folder (relative paths against it, the variables
//! the files use set, `db/password.txt` readable):
//!
//! - the loader never panics, and every diagnostic points at a line;
//! - a file whose services all have an `image:` loads without error;
//! - a file with a `build:`-only service is refused, naming each such
//!   service, and for nothing else.
//!
//! Run with `--nocapture` for the summary.

use std::collections::BTreeMap;

use stackd_core::loader::{LoadError, LoadOptions, MemoryFiles, SourceFile, load, load_with};

mod common;

/// What the corpus files refer to: the secret file some of them read.
fn corpus_reader() -> MemoryFiles {
    MemoryFiles(BTreeMap::from([("db/password.txt".to_string(), b"changeit".to_vec())]))
}

/// The names of the services that have `build:` but no `image:`.
fn build_only(text: &str) -> Vec<String> {
    let doc: serde_json::Value = serde_saphyr::from_str(text).expect("corpus YAML");
    let mut names: Vec<String> = doc["services"]
        .as_object()
        .map(|s| {
            s.iter()
                .filter(|(_, v)| v.get("build").is_some() && v.get("image").is_none())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Files refused because they fix addresses themselves (a subnet, a
/// task's address that another service refers to): stackd gives the
/// addresses, and would silently break what they reach.
const ADDRESS_REFUSALS: [(&str, &str); 2] = [
    ("pihole-cloudflared-DoH.yaml", "networks.dns-net.ipam"),
    ("pihole-cloudflared-DoH.yaml", "services.cloudflared.networks.dns-net.ipv4_address"),
];

#[test]
fn awesome_compose_corpus() {
    let corpus = common::corpus_files();
    let count = corpus.len();
    let mut env = common::corpus_env();
    env.insert("HOME".into(), "/home/ci".into());
    let options = LoadOptions {
        env,
        env_file: None,
        project_dir: Some(common::corpus_dir().display().to_string()),
        profiles: Vec::new(),
    };
    let reader = corpus_reader();
    let (mut loaded, mut refused, mut warnings) = (0, 0, 0);
    let mut problems = Vec::new();
    for file in corpus {
        let name = file.name.clone();
        let expected_refusals = build_only(&file.text);
        let files = [file];
        let result = std::panic::catch_unwind(|| load_with("corpus", &files, &options, &reader));
        let Ok(result) = result else { panic!("the loader panicked on {name}") };
        match result {
            Ok(l) => {
                loaded += 1;
                warnings += l.warnings.len();
                println!("ok    {name}: {} services, {} warnings", l.spec.services.len(), l.warnings.len());
                for w in &l.warnings {
                    println!("        warning: {w}");
                    if w.line == 0 {
                        problems.push(format!("warning without a position: {w}"));
                    }
                }
                if !expected_refusals.is_empty() {
                    problems.push(format!("{name}: loaded, but {expected_refusals:?} have only `build:`"));
                }
            }
            Err(LoadError::Invalid { errors: diags, .. }) => {
                refused += 1;
                println!("error {name}:");
                let mut named = Vec::new();
                for d in &diags {
                    println!("        {d}");
                    if d.line == 0 {
                        problems.push(format!("error without a position: {d}"));
                    }
                    match d.path.strip_prefix("services.") {
                        Some(service) if d.message.starts_with("has `build:` but no `image:`") => {
                            named.push(service.to_string());
                        }
                        _ if ADDRESS_REFUSALS.contains(&(name.as_str(), d.path.as_str())) => {}
                        _ => problems.push(format!("{name}: refused for something other than build-only: {d}")),
                    }
                }
                named.sort();
                if named != expected_refusals {
                    problems.push(format!("{name}: refused naming {named:?}, expected {expected_refusals:?}"));
                }
            }
        }
    }
    println!("\n{count} files: {loaded} loaded ({warnings} warnings), {refused} refused (build-only services)");
    assert!(problems.is_empty(), "{problems:#?}");
    // The corpus has 13 files that load, 25 with build-only services and one
    // that fixes its addresses; a change in any count is a change to look at.
    assert_eq!((loaded, refused), (13, 26), "loaded and refused corpus files");
}

/// A build-only service is refused with a message naming it, and the
/// message says what to do.
#[test]
fn build_only_services_are_named() {
    let text = std::fs::read_to_string(common::corpus_dir().join("nginx-nodejs-redis.yaml")).expect("corpus file");
    let files = [SourceFile { name: "nginx-nodejs-redis.yaml".into(), text }];
    let err = load("corpus", &files, &LoadOptions::default()).expect_err("build-only services");
    let messages: Vec<String> = err.diagnostics().iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "nginx-nodejs-redis.yaml:7:3: services.web1: has `build:` but no `image:`; stackd does not build images — build and push it, then set image",
            "nginx-nodejs-redis.yaml:13:3: services.web2: has `build:` but no `image:`; stackd does not build images — build and push it, then set image",
            "nginx-nodejs-redis.yaml:19:3: services.nginx: has `build:` but no `image:`; stackd does not build images — build and push it, then set image",
        ]
    );
}

/// The corpus files that use `${VAR}` load with the variables they expect,
/// given in the environment or in a `.env` file (the environment wins).
#[test]
fn corpus_files_with_variables() {
    let dir = common::corpus_dir();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let plex = read("plex.yaml").expect("plex.yaml in the corpus");
    let vars = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let load_one = |name: &str, text: String, options: &LoadOptions| {
        load("corpus", &[SourceFile { name: name.into(), text }], options)
            .unwrap_or_else(|e| panic!("{name} did not load:\n{e}"))
    };

    // Without the variable the bind source is blank, which is an error.
    let files = [SourceFile { name: "plex.yaml".into(), text: plex.clone() }];
    let err = load("corpus", &files, &LoadOptions::default()).expect_err("blank bind source");
    assert_eq!(
        err.to_string(),
        "plex.yaml:10:9: services.plex.volumes[0]: invalid volume \":/media/\": expected [SOURCE:]TARGET[:MODE]"
    );
    let options = LoadOptions {
        env: vars(&[("PLEX_MEDIA_PATH", "/srv/media")]),
        env_file: None,
        project_dir: None,
        profiles: Vec::new(),
    };
    let loaded = load_one("plex.yaml", plex, &options);
    assert_eq!(loaded.spec.services["plex"].task.mounts[0].source, "/srv/media");

    let text = read("postgresql-pgadmin.yaml").expect("corpus file");
    let dotenv = "POSTGRES_USER=yourUser\nPOSTGRES_PW=changeit\nPOSTGRES_DB=yourDatabase\nPGADMIN_MAIL=your@email.com\nPGADMIN_PW=changeit\n";
    let options = LoadOptions {
        env: vars(&[("POSTGRES_PW", "from-env")]),
        env_file: Some(SourceFile { name: ".env".into(), text: dotenv.into() }),
        project_dir: None,
        profiles: Vec::new(),
    };
    let loaded = load_one("postgresql-pgadmin.yaml", text, &options);
    assert_eq!(
        loaded.spec.services["postgres"].task.env,
        ["POSTGRES_DB=yourDatabase", "POSTGRES_PASSWORD=from-env", "POSTGRES_USER=yourUser"]
    );
    assert!(!loaded.warnings.iter().any(|w| w.message.contains("not set")), "{:#?}", loaded.warnings);

    let (name, pairs) = ("wireguard.yaml", &[("TIMEZONE", "Europe/Paris"), ("VPN_SERVER_URL", "vpn.example.com")][..]);
    let text = read(name).expect("corpus file");
    let loaded = load_one(
        name,
        text,
        &LoadOptions { env: vars(pairs), env_file: None, project_dir: None, profiles: Vec::new() },
    );
    let env: Vec<_> = loaded.spec.services.values().flat_map(|s| s.task.env.iter()).collect();
    assert!(env.iter().any(|e| *e == "TZ=Europe/Paris"), "{name}: {env:?}");
    // The file that fixes its addresses is refused, saying why.
    let text = read("pihole-cloudflared-DoH.yaml").expect("corpus file");
    let files = [SourceFile { name: "pihole-cloudflared-DoH.yaml".into(), text }];
    let err = load("corpus", &files, &LoadOptions::default()).expect_err("fixed addresses");
    assert!(err.to_string().contains("stackd gives each task its address"), "{err}");
}

/// Every corpus file cut short at many points: still no panic, and every
/// diagnostic still has a position.
#[test]
fn truncated_corpus_files() {
    let mut cuts = 0;
    for file in common::corpus_files() {
        let (name, text) = (file.name, file.text);
        for cut in (0..text.len()).step_by(23).filter(|&c| text.is_char_boundary(c)) {
            cuts += 1;
            let files = [SourceFile { name: "cut.yml".into(), text: text[..cut].to_string() }];
            let result = std::panic::catch_unwind(|| load("corpus", &files, &LoadOptions::default()));
            let Ok(result) = result else { panic!("the loader panicked on {name} cut at {cut}") };
            if let Err(e) = result {
                for d in e.diagnostics() {
                    assert!(d.line > 0, "{name} cut at {cut}: no position: {d}");
                }
            }
        }
    }
    println!("{cuts} truncated files loaded without a panic");
}

/// The kind of an error, for the summary.
#[allow(dead_code)]
fn reason(message: &str) -> String {
    if message.starts_with("has `build:`") {
        "build-only service".into()
    } else if message.starts_with("relative bind paths") {
        "relative bind path".into()
    } else if message.contains("not supported yet") {
        "unsupported feature".into()
    } else {
        message.to_string()
    }
}
