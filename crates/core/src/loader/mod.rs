//! Compose files → a [`StackSpec`], with every problem reported at
//! `file:line:column` and key path.
//!
//! The caller reads the files (core does no I/O) and passes their text,
//! with the variables for interpolation in [`LoadOptions`]:
//!
//! ```
//! use std::collections::BTreeMap;
//!
//! use stackd_core::loader::{load, LoadOptions, SourceFile};
//! use stackd_core::model::ServiceMode;
//!
//! let file = SourceFile {
//!     name: "stack.yml".into(),
//!     text: "services:\n  web:\n    image: nginx:${TAG:-1.27}\n    deploy:\n      replicas: ${N}\n".into(),
//! };
//! let options = LoadOptions {
//!     // The process environment, as the caller read it: it wins over `.env`.
//!     env: BTreeMap::from([("N".to_string(), "2".to_string())]),
//!     // The `.env` file's text, if the caller found one.
//!     env_file: Some(SourceFile { name: ".env".into(), text: "TAG=1.28\nN=5\n".into() }),
//!     // Where relative bind mounts start: the first file's absolute directory.
//!     project_dir: Some("/srv/shop".into()),
//!     // No profile enabled: services with `profiles:` are left out.
//!     profiles: Vec::new(),
//! };
//! let loaded = load("shop", &[file], &options).expect("valid");
//! assert_eq!(loaded.spec.services["web"].task.image, "nginx:1.28");
//! assert_eq!(loaded.spec.services["web"].mode, ServiceMode::Replicated { replicas: 2 });
//! ```
//!
//! Files the stack refers to (`env_file:`, `label_file:`, `extends.file`,
//! and the `file:` of configs and secrets) are read through a [`FileReader`] given to [`load_with`]; core
//! itself never touches the filesystem. Their paths are resolved against
//! the first stack file's directory, as compose does; relative bind mounts
//! against [`LoadOptions::project_dir`].
//!
//! # Layers
//!
//! 1. **Raw** (`yaml`): the text becomes a positioned tree of mappings,
//!    lists and scalars. Anchors, aliases and `<<` merge keys are resolved
//!    there; scalars stay text, so YAML 1.1 booleans (`yes`, `on`) never leak
//!    into string fields.
//! 2. **Interpolate** (`interpolate`, with `dotenv` for the `.env` file):
//!    every scalar value of the tree (not the keys) goes through compose's
//!    `$VAR`, `${VAR:-default}`, `${VAR:?error}`, … before typing, so an
//!    interpolated `replicas: ${N}` is checked like a written one.
//! 3. **Merge** (`merge`), with several files: the interpolated trees are
//!    merged in order by compose's rules (later files override; lists such
//!    as `ports` and `volumes` by identity; `environment` and `labels` by
//!    key, list or mapping), each value keeping its file and position.
//!    Then `extends` resolves `extends:`: a service's keys are merged over
//!    its base's by the same rules (the base may come from another file,
//!    read through the reader).
//! 4. **Normalise** (`stack`, `service`, `deploy`, `mounts`, `networks`,
//!    `objects` for configs and secrets, `envfile` for `env_file:` and
//!    `label_file:`, `compat` for compose-only keys such as `restart`,
//!    `scale` and `network_mode`, `depends` for `profiles:` and
//!    `depends_on:`, `autoscale` for `x-stackd-autoscale`, `paths` for
//!    relative paths, `values`): the tree is
//!    typed by hand into the model, field by field, so that every value has a
//!    position; short and long syntaxes converge, defaults are applied and
//!    volume and network names are namespaced (services without `networks:`
//!    join the implicit `default` network).
//! 5. **Validate**: cross-field checks with positions (ports published twice,
//!    mounts on the same target, …), then [`validate::stack_spec`] as a last
//!    line of defence.
//!
//! Errors are collected, not stopped at: one run reports everything wrong,
//! the `.env` file's first, then each stack file's in file order. Unknown
//! keys are errors with a "did you mean" (`keys`), as `docker stack deploy`
//! refuses a key its schema does not have; compose keys stackd does not apply
//! and variables without a value are warnings: they are returned in
//! [`Loaded::warnings`], or with the errors in [`LoadError::Invalid`].
//!
//! [`validate::stack_spec`]: crate::validate::stack_spec

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::StackSpec;
use crate::validate::is_valid_name;

mod autoscale;
mod compat;
mod ctx;
mod depends;
mod deploy;
mod dotenv;
mod envfile;
mod extends;
mod interpolate;
mod keys;
mod merge;
mod mounts;
mod networks;
mod objects;
mod paths;
mod placement;
mod runtime;
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

/// What the stack files are loaded with: the variables for interpolation.
///
/// A variable's value is taken from [`env`](Self::env) first, then from
/// [`env_file`](Self::env_file), as docker compose does. The same values fill
/// `environment:` entries written without one (`- HOME`, `TOKEN:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The caller's variables, normally the process environment.
    pub env: BTreeMap<String, String>,
    /// A `.env` file (compose syntax), as read by the caller; `None` when
    /// there is none. Its problems are reported like a stack file's, with
    /// its name and line.
    pub env_file: Option<SourceFile>,
    /// The absolute directory of the first stack file (compose's project
    /// directory): relative bind mounts (`./data:/data`) are resolved
    /// against it. `None` makes a relative bind mount an error.
    pub project_dir: Option<String>,
    /// The enabled profiles (`--profile`): services with `profiles:` are
    /// deployed only when one of theirs is enabled (`*` enables all). Empty:
    /// the variable `COMPOSE_PROFILES` (comma-separated) decides, as in compose.
    pub profiles: Vec<String>,
}

/// Reads the files a stack refers to: `env_file:` and `label_file:`
/// entries, `extends.file`, and the `file:` of top-level configs and secrets.
///
/// The loader passes the path resolved against the first stack file's
/// directory as the user named it (`deploy/web.env` for `web.env` next to
/// `deploy/stack.yml`), so a reader on a real filesystem reads it relative
/// to the current directory.
pub trait FileReader {
    /// The contents of the file at `path`, or why it cannot be read
    /// (`No such file or directory`, …).
    fn read(&self, path: &str) -> Result<Vec<u8>, String>;
}

/// A [`FileReader`] that reads nothing: every stack that refers to a file
/// fails to load, saying so.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoFiles;

impl FileReader for NoFiles {
    fn read(&self, _path: &str) -> Result<Vec<u8>, String> {
        Err("files cannot be read here".to_string())
    }
}

/// A [`FileReader`] over files held in memory, by path (tests, fuzzing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryFiles(pub BTreeMap<String, Vec<u8>>);

impl FileReader for MemoryFiles {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        self.0.get(path).cloned().ok_or_else(|| "No such file or directory".to_string())
    }
}

/// A successfully loaded stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The normalised, validated stack.
    pub spec: StackSpec,
    /// Things that were ignored or dropped (compose keys stackd does not apply, unsupported
    /// sections, variables without a value): the `.env` file's first, then
    /// each stack file's in file order.
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
    /// Every error found, in file order; displayed one per line. The
    /// warnings found on the way are kept too: a file with errors may also
    /// have keys that would be ignored, and the user sees both at once.
    #[error("{}", render_lines(errors))]
    Invalid {
        /// The errors.
        errors: Vec<Diagnostic>,
        /// The warnings, as [`Loaded::warnings`] would have them.
        warnings: Vec<Diagnostic>,
    },
}

impl LoadError {
    /// The errors carried by the error.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            LoadError::Invalid { errors, .. } => errors,
        }
    }

    /// The warnings found besides the errors.
    pub fn warnings(&self) -> &[Diagnostic] {
        match self {
            LoadError::Invalid { warnings, .. } => warnings,
        }
    }
}

fn render_lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(Diagnostic::to_string).collect::<Vec<_>>().join("\n")
}

/// Loads the stack `stack_name` from its compose file(s), interpolating
/// variables from `options`, without reading any other file: a stack with
/// `env_file:` or file-based configs and secrets fails (see [`load_with`]).
///
/// # Errors
///
/// As [`load_with`].
pub fn load(stack_name: &str, files: &[SourceFile], options: &LoadOptions) -> Result<Loaded, LoadError> {
    load_with(stack_name, files, options, &NoFiles)
}

/// Loads the stack `stack_name` from its compose file(s), interpolating
/// variables from `options` and reading the files the stack refers to
/// through `reader`.
///
/// Several files are merged in order, each over the ones before, as docker
/// compose merges them (see the `merge` module): every value keeps the file,
/// line and column it was written at, so problems are reported in the right
/// file. The variables apply to every file. The stack name must pass
/// [`is_valid_name`].
///
/// # Errors
///
/// [`LoadError::Invalid`] with every problem found: `.env` syntax, YAML
/// syntax, invalid or failed interpolation (`${VAR:?msg}`), wrong types,
/// unsupported values, missing images, undefined volumes or networks, and so on.
pub fn load_with(
    stack_name: &str,
    files: &[SourceFile],
    options: &LoadOptions,
    reader: &dyn FileReader,
) -> Result<Loaded, LoadError> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    // The variables: `.env`'s, then the caller's environment over them.
    let mut vars = BTreeMap::new();
    if let Some(file) = &options.env_file {
        let mut parsed = dotenv::parse(file, &options.env);
        vars = parsed.vars;
        errors.append(&mut parsed.errors);
        warnings.append(&mut parsed.warnings);
    }
    vars.extend(options.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    // compose's: `--profile` flags, else COMPOSE_PROFILES (environment or `.env`).
    let profiles: Vec<String> = if options.profiles.is_empty() {
        let listed = vars.get("COMPOSE_PROFILES").map(String::as_str).unwrap_or_default();
        listed.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect()
    } else {
        options.profiles.clone()
    };
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
    let spec = if files.is_empty() {
        errors.push(Diagnostic {
            file: String::new(),
            line: 0,
            column: 0,
            path: String::new(),
            message: "no stack file given".to_string(),
        });
        None
    } else {
        let mut cx = ctx::Ctx::new(files.iter().map(|f| f.name.clone()).collect(), vars);
        cx.fs = Some(ctx::Files {
            reader,
            base: files.first().map(|f| paths::dirname(&f.name).to_string()).unwrap_or_default(),
            project_dir: options.project_dir.clone(),
        });
        // Each file parsed and interpolated on its own, then merged over the
        // ones before; a file that cannot be read stops the typing (its
        // errors and the other files' are still reported).
        let mut merged: Option<yaml::Node> = None;
        let mut usable = true;
        for (i, file) in files.iter().enumerate() {
            cx.file = i;
            match stack::parse_file(&mut cx, &file.text, i == 0) {
                Some(root) if usable => {
                    merged = Some(match merged.take() {
                        None => merge::first(&mut cx, root),
                        Some(base) => merge::merge(&mut cx, base, root),
                    });
                }
                Some(_) => {}
                None => usable = false,
            }
        }
        let spec = merged.filter(|_| usable).map(|mut root| {
            extends::resolve(&mut cx, &mut root);
            stack::convert(&mut cx, stack_name, &root, &profiles)
        });
        errors.append(&mut cx.errors);
        warnings.append(&mut cx.warnings);
        spec
    };
    let order: Vec<&str> = options.env_file.iter().chain(files).map(|f| f.name.as_str()).collect();
    sort(&mut errors, &order);
    sort(&mut warnings, &order);
    match spec {
        Some(spec) if errors.is_empty() => Ok(Loaded { spec, warnings }),
        _ if errors.is_empty() => Err(LoadError::Invalid {
            errors: vec![Diagnostic {
                file: files.first().map(|f| f.name.clone()).unwrap_or_default(),
                line: 0,
                column: 0,
                path: String::new(),
                message: "the stack could not be loaded".to_string(),
            }],
            warnings,
        }),
        _ => Err(LoadError::Invalid { errors, warnings }),
    }
}

/// Diagnostics without a file first, then file by file in `order` (the
/// `.env` file, then the stack files); in a file, unknown positions first,
/// then by line and column (stable; each key computed once: the file lookup
/// is linear in the number of files).
fn sort(diagnostics: &mut [Diagnostic], order: &[&str]) {
    diagnostics.sort_by_cached_key(|d| {
        let file =
            if d.file.is_empty() { 0 } else { 1 + order.iter().position(|f| *f == d.file).unwrap_or(order.len()) };
        (file, d.line, d.column)
    });
}
