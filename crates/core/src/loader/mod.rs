//! Compose files → a [`StackSpec`], with every problem reported at
//! `file:line:column` and key path.
//!
//! The caller reads the files (core does no I/O) and passes their text:
//!
//! ```
//! use stackd_core::loader::{load, SourceFile};
//!
//! let file = SourceFile {
//!     name: "stack.yml".into(),
//!     text: "services:\n  web:\n    image: nginx:1.27\n    deploy:\n      replicas: 2\n".into(),
//! };
//! let loaded = load("shop", &[file]).expect("valid");
//! assert_eq!(loaded.spec.services["web"].task.image, "nginx:1.27");
//! ```
//!
//! # Layers
//!
//! 1. **Raw** (`yaml`): the text becomes a positioned tree of mappings,
//!    lists and scalars. Anchors, aliases and `<<` merge keys are resolved
//!    there; scalars stay text, so YAML 1.1 booleans (`yes`, `on`) never leak
//!    into string fields. Interpolation and multi-file merge will operate on
//!    this tree, before typing.
//!    For now the only interpolation (`interpolate`) is `$$` → `$`; a
//!    `${VAR}` is an error rather than a literal that would deploy as written.
//! 2. **Normalise** (`stack`, `service`, `deploy`, `mounts`, `values`): the tree is
//!    typed by hand into the model, field by field, so that every value has a
//!    position; short and long syntaxes converge, defaults are applied and
//!    volume names are namespaced.
//! 3. **Validate**: cross-field checks with positions (ports published twice,
//!    mounts on the same target, …), then [`validate::stack_spec`] as a last
//!    line of defence.
//!
//! Errors are collected, not stopped at: one run reports everything wrong,
//! sorted in file order. Unknown keys are warnings (Swarm-like): they are
//! returned in [`Loaded::warnings`].
//!
//! [`validate::stack_spec`]: crate::validate::stack_spec

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::StackSpec;
use crate::validate::is_valid_name;

mod ctx;
mod deploy;
mod interpolate;
mod mounts;
mod service;
mod stack;
mod values;
mod yaml;

#[cfg(test)]
mod tests;

pub use yaml::{MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES};

/// One stack file, as read by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The name as the user typed it (`stack.yml`, `deploy/prod.yml`); used in messages only.
    pub name: String,
    /// The file's contents.
    pub text: String,
}

/// A successfully loaded stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The normalised, validated stack.
    pub spec: StackSpec,
    /// Things that were ignored or dropped (unknown keys, unsupported
    /// sections, variables without a value), in file order.
    pub warnings: Vec<Diagnostic>,
}

/// A problem in a stack file, with where it is.
///
/// Displays as `stack.yml:14:7: services.web.deploy.replicas: must be a
/// non-negative integer, got -2`; the `:line:column` part is left out when
/// the position is unknown (0) and the `path: ` part when the path is empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file's name as given in [`SourceFile::name`] (empty when the
    /// problem is not in a file, e.g. an invalid stack name).
    pub file: String,
    /// Line, 1-based; 0 when unknown.
    pub line: usize,
    /// Column, 1-based and in characters; 0 when unknown.
    pub column: usize,
    /// Key path, like `services.web.deploy.replicas` or `services.web.ports[1]`.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut prefix = self.file.clone();
        if self.line > 0 {
            prefix = format!("{prefix}:{}:{}", self.line, self.column);
        }
        if !prefix.is_empty() {
            write!(f, "{prefix}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a stack could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Every error found, in file order; displayed one per line.
    #[error("{}", render_lines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl LoadError {
    /// The diagnostics carried by the error.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            LoadError::Invalid(d) => d,
        }
    }
}

fn render_lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(Diagnostic::to_string).collect::<Vec<_>>().join("\n")
}

/// Loads the stack `stack_name` from its compose file(s).
///
/// For now exactly one file is supported; several files (to be merged) are
/// refused with a diagnostic. The stack name must pass [`is_valid_name`].
///
/// # Errors
///
/// [`LoadError::Invalid`] with every problem found: YAML syntax, wrong types,
/// unsupported values, missing images, undefined volumes, and so on.
pub fn load(stack_name: &str, files: &[SourceFile]) -> Result<Loaded, LoadError> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if !is_valid_name(stack_name) {
        errors.push(Diagnostic {
            file: String::new(),
            line: 0,
            column: 0,
            path: String::new(),
            message: format!(
                "stack name {stack_name:?} is invalid: use letters, digits, '-', '_' and '.', starting with a letter or digit (63 at most)"
            ),
        });
    }
    let spec = match files {
        [] => {
            errors.push(Diagnostic {
                file: String::new(),
                line: 0,
                column: 0,
                path: String::new(),
                message: "no stack file given".to_string(),
            });
            None
        }
        [file] => {
            let mut cx = ctx::Ctx::new(&file.name);
            let spec = stack::load_file(&mut cx, stack_name, &file.text);
            errors.append(&mut cx.errors);
            warnings.append(&mut cx.warnings);
            spec
        }
        [_, second, ..] => {
            errors.push(Diagnostic {
                file: second.name.clone(),
                line: 0,
                column: 0,
                path: String::new(),
                message: "merging several files is not supported yet".to_string(),
            });
            None
        }
    };
    sort(&mut errors);
    sort(&mut warnings);
    match spec {
        Some(spec) if errors.is_empty() => Ok(Loaded { spec, warnings }),
        _ if errors.is_empty() => Err(LoadError::Invalid(vec![Diagnostic {
            file: files.first().map(|f| f.name.clone()).unwrap_or_default(),
            line: 0,
            column: 0,
            path: String::new(),
            message: "the stack could not be loaded".to_string(),
        }])),
        _ => Err(LoadError::Invalid(errors)),
    }
}

/// File order: unknown positions first, then by line and column (stable).
fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by_key(|d| (d.line, d.column));
}
