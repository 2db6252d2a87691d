//! Loads every compose file of the awesome-compose corpus: the loader must
//! never panic, and every file either loads or fails with diagnostics that
//! point at a line. Run with `--nocapture` for the summary.

use std::collections::BTreeMap;

use stackd_core::loader::{LoadError, LoadOptions, SourceFile, load};

mod common;

#[test]
fn awesome_compose_corpus() {
    let corpus = common::corpus_files();
    let count = corpus.len();
    let (mut loaded, mut failed, mut warnings) = (0, 0, 0);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad_positions = Vec::new();
    for file in corpus {
        let name = file.name.clone();
        let files = [file];
        let result = std::panic::catch_unwind(|| load("corpus", &files, &LoadOptions::default()));
        let Ok(result) = result else { panic!("the loader panicked on {name}") };
        match result {
            Ok(l) => {
                loaded += 1;
                warnings += l.warnings.len();
                println!("ok    {name}: {} services, {} warnings", l.spec.services.len(), l.warnings.len());
                for w in &l.warnings {
                    println!("        warning: {w}");
                }
            }
            Err(LoadError::Invalid(diags)) => {
                failed += 1;
                println!("error {name}:");
                for d in &diags {
                    println!("        {d}");
                    if d.line == 0 {
                        bad_positions.push(d.to_string());
                    }
                    *reasons.entry(reason(&d.message)).or_default() += 1;
                }
            }
        }
    }
    println!("\n{} files: {loaded} loaded ({warnings} warnings), {failed} refused", count);
    for (why, n) in &reasons {
        println!("  {n:3} × {why}");
    }
    assert!(bad_positions.is_empty(), "diagnostics without a position: {bad_positions:#?}");
    // Interpolation never refuses a corpus file: variables without a value
    // are blank, with a warning, as in docker compose.
    let interpolation: Vec<_> =
        reasons.keys().filter(|r| r.contains("interpolation") || r.contains("variable")).collect();
    assert!(interpolation.is_empty(), "refused because of variables: {interpolation:#?}");
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
    let options = LoadOptions { env: vars(&[("PLEX_MEDIA_PATH", "/srv/media")]), env_file: None };
    let loaded = load_one("plex.yaml", plex, &options);
    assert_eq!(loaded.spec.services["plex"].task.mounts[0].source, "/srv/media");

    let text = read("postgresql-pgadmin.yaml").expect("corpus file");
    let dotenv = "POSTGRES_USER=yourUser\nPOSTGRES_PW=changeit\nPOSTGRES_DB=yourDatabase\nPGADMIN_MAIL=your@email.com\nPGADMIN_PW=changeit\n";
    let options = LoadOptions {
        env: vars(&[("POSTGRES_PW", "from-env")]),
        env_file: Some(SourceFile { name: ".env".into(), text: dotenv.into() }),
    };
    let loaded = load_one("postgresql-pgadmin.yaml", text, &options);
    assert_eq!(
        loaded.spec.services["postgres"].task.env,
        ["POSTGRES_DB=yourDatabase", "POSTGRES_PASSWORD=from-env", "POSTGRES_USER=yourUser"]
    );
    assert!(!loaded.warnings.iter().any(|w| w.message.contains("not set")), "{:#?}", loaded.warnings);

    for (name, pairs) in [
        ("wireguard.yaml", &[("TIMEZONE", "Europe/Paris"), ("VPN_SERVER_URL", "vpn.example.com")][..]),
        ("pihole-cloudflared-DoH.yaml", &[("TIMEZONE", "Europe/Paris"), ("PIHOLE_PW", "changeit")][..]),
    ] {
        let text = read(name).expect("corpus file");
        let loaded = load_one(name, text, &LoadOptions { env: vars(pairs), env_file: None });
        let env: Vec<_> = loaded.spec.services.values().flat_map(|s| s.task.env.iter()).collect();
        assert!(env.iter().any(|e| *e == "TZ=Europe/Paris"), "{name}: {env:?}");
    }
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
