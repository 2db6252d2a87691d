//! A service's `env_file:`: files of variables for its containers, read
//! through the caller's reader and parsed like `.env` ([`super::dotenv`]).
//!
//! Forms: `env_file: web.env`, a list of paths, or a list of
//! `{path, required, format}` (`required: false` skips a missing file;
//! `format: raw` takes every `KEY=VALUE` line literally). Later files win
//! over earlier ones, and `environment:` wins over them all.

use std::collections::BTreeMap;

use super::SourceFile;
use super::ctx::{At, Ctx};
use super::dotenv;
use super::keys;
use super::yaml::Kind;

/// One `env_file` entry.
struct Entry<'a> {
    at: At<'a>,
    path: String,
    required: bool,
    raw: bool,
}

/// The variables of the service's env files, in order (later files win).
pub(crate) fn env_files(cx: &mut Ctx, at: &At<'_>) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    let entries = match &at.node.kind {
        Kind::Null => Vec::new(),
        Kind::Scalar { .. } => at.string(cx).map(|path| entry(at.clone(), path)).into_iter().collect(),
        Kind::Seq(_) => at.list(cx).unwrap_or_default().into_iter().filter_map(|item| long_entry(cx, item)).collect(),
        Kind::Map(_) => {
            cx.error(at, "must be a path or a list of paths");
            Vec::new()
        }
    };
    for e in entries {
        if e.path.trim().is_empty() {
            cx.error(&e.at, "the path must not be empty");
            continue;
        }
        let Some((name, bytes)) = cx.read_file_if(&e.at, &e.path, e.required) else { continue };
        let Ok(text) = String::from_utf8(bytes) else {
            cx.error(&e.at, format!("{name} is not UTF-8 text"));
            continue;
        };
        if e.raw {
            vars.extend(raw(&text));
            continue;
        }
        let parsed = dotenv::parse(&SourceFile { name, text }, &cx.vars);
        vars.extend(parsed.vars);
        cx.errors.extend(parsed.errors);
        cx.warnings.extend(parsed.warnings);
    }
    vars
}

fn entry(at: At<'_>, path: String) -> Entry<'_> {
    Entry { at, path, required: true, raw: false }
}

/// A list item: a path, or `{path, required, format}`.
fn long_entry<'a>(cx: &mut Ctx, item: At<'a>) -> Option<Entry<'a>> {
    if !matches!(item.node.kind, Kind::Map(_)) {
        let path = item.string(cx)?;
        return Some(entry(item, path));
    }
    let mut path = None;
    let mut required = true;
    let mut raw = false;
    for e in item.map(cx)? {
        match e.key {
            "path" => path = e.string(cx),
            "required" => required = e.boolean(cx).unwrap_or(true),
            "format" => raw = e.choice(cx, &["raw"]).is_some(),
            _ => cx.unknown_key(&e, &keys::ENV_FILE),
        }
    }
    match path {
        Some(path) => Some(Entry { at: item, path, required, raw }),
        None => {
            cx.error(&item, "an env_file entry needs `path:`");
            None
        }
    }
}

/// `format: raw`: every non-blank, non-comment line is `KEY=VALUE`, taken literally.
fn raw(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect()
}
