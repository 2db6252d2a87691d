//! Tests of the loader through its public API.

use super::{Diagnostic, LoadError, LoadOptions, Loaded, SourceFile, load};
use crate::model::ServiceSpec;

mod autoscale;
mod compat;
mod errors;
mod files;
mod interpolation;
mod keys;
mod merge;
mod networks;
mod robust;
mod shapes;
mod swarm;

/// One file named `stack.yml`.
fn files(text: &str) -> Vec<SourceFile> {
    vec![SourceFile { name: "stack.yml".into(), text: text.into() }]
}

/// No variables, no `.env`.
fn no_vars() -> LoadOptions {
    LoadOptions::default()
}

/// Loads `text` as the stack `shop`; panics with the rendered errors.
fn ok(text: &str) -> Loaded {
    match load("shop", &files(text), &no_vars()) {
        Ok(l) => l,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

/// The service `web` of `text`.
fn web(text: &str) -> ServiceSpec {
    ok(text).spec.services.get("web").cloned().expect("service web")
}

/// The rendered warnings of a valid `text`.
fn warnings(text: &str) -> Vec<String> {
    ok(text).warnings.iter().map(Diagnostic::to_string).collect()
}

/// The rendered errors of an invalid `text`.
fn errors(text: &str) -> Vec<String> {
    match load("shop", &files(text), &no_vars()) {
        Ok(_) => panic!("loaded, but errors were expected"),
        Err(LoadError::Invalid { errors: d, .. }) => d.iter().map(Diagnostic::to_string).collect(),
    }
}
