//! Fuzz target for the stack-file loader (`stackd_core::loader::load`).
//!
//! The input bytes are read as UTF-8 (lossily) and split at NUL bytes:
//! - no NUL: the whole text is one stack file;
//! - `stack \0 env`: a stack file and the `.env` file;
//! - `stack \0 env \0 more \0 …`: the parts after the second NUL are further
//!   stack files, merged over the first (`-c a.yml -c b.yml …`); an empty
//!   `env` part means no `.env` file.
//!
//! The caller's environment is a small fixed set of variables, so that
//! interpolation meets set, empty and unset variables. The profile `debug`
//! is enabled. Files the stack refers to are read from memory: `common.yml`
//! (for `extends.file`) is the first override part, `web.env` (for
//! `env_file` and `label_file`) the `.env` part, `secret.txt` a fixed text.
//!
//! Checked:
//! - `load` never panics (nor overflows: run with debug assertions, `-a`),
//!   whatever it is given;
//! - when it succeeds, the stack written back as compose
//!   (`compose::document`, serialised with `serde_saphyr::to_string`, as
//!   `stackctl config` does) loads again, without variables, to the same
//!   `StackSpec`: normalising a normalised stack changes nothing.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use stackd_core::compose;
use stackd_core::loader::{LoadOptions, MemoryFiles, SourceFile, load, load_with};

fn env() -> BTreeMap<String, String> {
    [("A", "1"), ("EMPTY", ""), ("TAG", "1.27"), ("N", "2"), ("HOME", "/root"), ("DOLLAR", "$x"), ("PORT", "8080")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let mut files = vec![SourceFile { name: "stack.yml".into(), text: parts.next().unwrap_or_default().into() }];
    let env_file = match parts.next() {
        Some(dotenv) if !dotenv.is_empty() => Some(SourceFile { name: ".env".into(), text: dotenv.into() }),
        _ => None,
    };
    files
        .extend(parts.enumerate().map(|(i, t)| SourceFile { name: format!("override-{}.yml", i + 1), text: t.into() }));
    let mut reader = BTreeMap::from([("secret.txt".to_string(), b"s3cret".to_vec())]);
    if let Some(common) = files.get(1) {
        reader.insert("common.yml".into(), common.text.as_bytes().to_vec());
    }
    if let Some(env) = &env_file {
        reader.insert("web.env".into(), env.text.as_bytes().to_vec());
    }
    let options = LoadOptions { env: env(), env_file, project_dir: Some("/srv".into()), profiles: vec!["debug".into()] };
    let Ok(loaded) = load_with("fuzz", &files, &options, &MemoryFiles(reader)) else { return };

    // Round trip: the normalised stack as compose, loaded again.
    let spec = &loaded.spec;
    let doc = compose::document(spec);
    let yaml = match serde_saphyr::to_string(&doc) {
        Ok(y) => y,
        Err(e) => panic!("the normalised stack does not serialise as YAML: {e}\n{doc:#}"),
    };
    let again = [SourceFile { name: "config.yml".into(), text: yaml.clone() }];
    match load(&spec.name, &again, &LoadOptions::default()) {
        Ok(l) => assert!(
            l.spec == *spec,
            "loading the normalised stack changed it\n--- input\n{text}\n--- emitted\n{yaml}\n--- first\n{spec:#?}\n--- again\n{:#?}",
            l.spec
        ),
        Err(e) => panic!("the normalised stack does not load again:\n{e}\n--- input\n{text}\n--- emitted\n{yaml}"),
    }
});
