//! Typed access to the positioned tree, collecting diagnostics on the way.
//!
//! [`At`] is a value of the tree with its key path and the position errors
//! about it point to (the key for a mapping entry, the item itself for a list
//! item). [`Ctx`] collects errors and warnings for the files being loaded:
//! a value of a merged tree is reported in the file it came from.

use std::collections::{BTreeMap, BTreeSet};

use super::Diagnostic;
use super::keys::Place;
use super::values;
use super::yaml::{Entry, Kind, Node};

/// How files the stack refers to are read and where paths start.
pub(crate) struct Files<'r> {
    /// The caller's reader.
    pub reader: &'r dyn super::FileReader,
    /// The first stack file's directory as the user named it (may be empty).
    pub base: String,
    /// The first stack file's absolute directory, for bind mounts.
    pub project_dir: Option<String>,
}

/// Errors and warnings of the files being loaded.
pub(crate) struct Ctx<'r> {
    /// The files' names, by index ([`Node::file`]).
    files: Vec<String>,
    /// The file that [`error_at`](Self::error_at) and [`warn_at`](Self::warn_at)
    /// report in: the one being parsed and interpolated.
    pub file: usize,
    /// Errors, in the order found.
    pub errors: Vec<Diagnostic>,
    /// Warnings, in the order found.
    pub warnings: Vec<Diagnostic>,
    /// Paths already reported as unusable (e.g. a failed interpolation), by
    /// file: later errors at these paths or below, in that file, are
    /// consequences, not news.
    silenced: BTreeSet<(usize, String)>,
    /// The variables for interpolation and for `environment:` entries
    /// without a value (the caller's environment over `.env`).
    pub vars: BTreeMap<String, String>,
    /// Reading referenced files; `None` reads nothing.
    pub fs: Option<Files<'r>>,
    /// Services whose `extends` could not be resolved (reported): what
    /// their base would have given, such as `image:`, is not news.
    pub unresolved_bases: BTreeSet<String>,
}

impl Ctx<'_> {
    /// A context for the files named `files` (in load order), with the
    /// variables `vars`; [`file`](Self::file) is the first.
    pub fn new(files: Vec<String>, vars: BTreeMap<String, String>) -> Self {
        Self {
            files,
            file: 0,
            errors: Vec::new(),
            warnings: Vec::new(),
            silenced: BTreeSet::new(),
            vars,
            fs: None,
            unresolved_bases: BTreeSet::new(),
        }
    }

    /// Registers another file (one that `extends.file` names) and returns
    /// its index, for its nodes and diagnostics.
    pub fn add_file(&mut self, name: String) -> usize {
        self.files.push(name);
        self.files.len() - 1
    }

    /// Reads the file at `path` (as written in the stack file, `~` expanded),
    /// which `at` refers to. Returns the path as the reader saw it and the
    /// contents; `None` with an error recorded when it cannot be read.
    pub fn read_file(&mut self, at: &At<'_>, path: &str) -> Option<(String, Vec<u8>)> {
        self.read_file_if(at, path, true)
    }

    /// As [`read_file`](Self::read_file); when not `required`, a file that
    /// cannot be read is a warning, not an error.
    pub fn read_file_if(&mut self, at: &At<'_>, path: &str, required: bool) -> Option<(String, Vec<u8>)> {
        let Some(expanded) = super::paths::expand_home(path, self.vars.get("HOME").map(String::as_str)) else {
            self.error(at, format!("cannot read {path:?}: HOME is not set, so `~` cannot be expanded"));
            return None;
        };
        let Some(fs) = &self.fs else {
            self.error(at, format!("cannot read {path:?}: files cannot be read here"));
            return None;
        };
        let resolved = super::paths::join(&fs.base, &expanded);
        match fs.reader.read(&resolved) {
            Ok(bytes) => Some((resolved, bytes)),
            Err(why) if required => {
                self.error(at, format!("cannot read {resolved}: {why}"));
                None
            }
            Err(why) => {
                self.warn(at, format!("optional file {resolved} not read ({why}); skipped"));
                None
            }
        }
    }

    /// The absolute host path of the bind source `path` (relative to the
    /// project directory, `~` expanded); `None` with an error recorded when
    /// it cannot be resolved.
    pub fn host_path(&mut self, at: &At<'_>, path: &str) -> Option<String> {
        let Some(expanded) = super::paths::expand_home(path, self.vars.get("HOME").map(String::as_str)) else {
            self.error(at, format!("bind source {path:?} starts with `~` but HOME is not set"));
            return None;
        };
        if expanded.starts_with('/') {
            return Some(super::paths::join("/", &expanded));
        }
        match self.fs.as_ref().and_then(|f| f.project_dir.as_deref()) {
            Some(dir) => Some(super::paths::join(dir, &expanded)),
            None => {
                self.error(
                    at,
                    format!("relative bind path {path:?} needs the stack file's directory, which is not known here"),
                );
                None
            }
        }
    }

    fn diag(&self, file: usize, line: usize, column: usize, path: &str, message: String) -> Diagnostic {
        let file = self.files.get(file).cloned().unwrap_or_default();
        Diagnostic { file, line, column, path: path.to_string(), message }
    }

    /// Records an error at a position of the current file.
    pub fn error_at(&mut self, line: usize, col: usize, path: &str, message: impl Into<String>) {
        self.error_in(self.file, line, col, path, message);
    }

    /// Records an error at a position of the file `file`.
    pub fn error_in(&mut self, file: usize, line: usize, col: usize, path: &str, message: impl Into<String>) {
        // `path` itself or any ancestor (cut before a `.` or `[`) silenced?
        let silenced = |p: &str| self.silenced.contains(&(file, p.to_string()));
        let consequence = !self.silenced.is_empty()
            && (silenced(path) || path.match_indices(['.', '[']).any(|(i, _)| silenced(&path[..i])));
        if !consequence {
            let d = self.diag(file, line, col, path, message.into());
            self.errors.push(d);
        }
    }

    /// Records an error in the current file, then ignores further errors at
    /// `path` or below in that file.
    pub fn error_and_silence(&mut self, line: usize, col: usize, path: &str, message: impl Into<String>) {
        self.error_at(line, col, path, message);
        self.silenced.insert((self.file, path.to_string()));
    }

    /// Records an error about `at`.
    pub fn error(&mut self, at: &At<'_>, message: impl Into<String>) {
        self.error_in(at.file, at.line, at.col, &at.path, message);
    }

    /// Records a warning about `at`.
    pub fn warn(&mut self, at: &At<'_>, message: impl Into<String>) {
        self.warn_in(at.file, at.line, at.col, &at.path, message);
    }

    /// Records a warning at a position of the current file.
    pub fn warn_at(&mut self, line: usize, col: usize, path: &str, message: impl Into<String>) {
        self.warn_in(self.file, line, col, path, message);
    }

    /// Records a warning at a position of the file `file`.
    pub fn warn_in(&mut self, file: usize, line: usize, col: usize, path: &str, message: impl Into<String>) {
        let d = self.diag(file, line, col, path, message.into());
        self.warnings.push(d);
    }

    /// Records a warning about no file (the command line's options).
    pub fn warn_global(&mut self, message: impl Into<String>) {
        self.warnings.push(Diagnostic {
            file: String::new(),
            line: 0,
            column: 0,
            path: String::new(),
            message: message.into(),
        });
    }

    /// The key `at`, which the mapping of `place` has but stackd does not
    /// read: a warning when compose has it there (stackd does not apply
    /// it), nothing for an `x-` key where compose allows them, else an error
    /// with a "did you mean" (see [`keys`](super::keys)).
    pub fn unknown_key(&mut self, at: &At<'_>, place: &Place) {
        let key = at.key;
        if key.starts_with("x-") && place.extensions {
            return;
        }
        if place.keys.contains(&key) {
            self.warn(at, "not supported yet; ignored");
        } else {
            self.error(at, super::keys::unknown(key, place));
        }
    }
}

/// A value of the tree, with its path and the position to report.
#[derive(Clone, Debug)]
pub(crate) struct At<'a> {
    /// The value.
    pub node: &'a Node,
    /// The mapping key this value is under (empty for list items and the root).
    pub key: &'a str,
    /// Key path, like `services.web.ports[0]`.
    pub path: String,
    /// File to report in.
    pub file: usize,
    /// Line to report.
    pub line: usize,
    /// Column to report.
    pub col: usize,
}

impl<'a> At<'a> {
    /// The root of a document.
    pub fn root(node: &'a Node) -> Self {
        At { node, key: "", path: String::new(), file: node.file, line: node.line, col: node.col }
    }

    /// The value of a mapping entry, reported at its key.
    pub fn entry(&self, e: &'a Entry) -> At<'a> {
        let path = if self.path.is_empty() { e.key.clone() } else { format!("{}.{}", self.path, e.key) };
        At { node: &e.value, key: &e.key, path, file: e.file, line: e.line, col: e.col }
    }

    /// An item of a list, reported at the item; its path has the index the
    /// item had in the file it was written in.
    pub fn item(&self, node: &'a Node) -> At<'a> {
        At {
            node,
            key: "",
            path: format!("{}[{}]", self.path, node.index),
            file: node.file,
            line: node.line,
            col: node.col,
        }
    }

    /// Whether the value is null (`key:`, `~`).
    pub fn is_null(&self) -> bool {
        self.node.kind == Kind::Null
    }

    /// The scalar text, if the value is a scalar.
    pub fn text(&self) -> Option<&'a str> {
        match &self.node.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    fn wrong(&self, cx: &mut Ctx, expected: &str) {
        cx.error(self, format!("must be {expected}, got {}", self.node.describe()));
    }

    /// The entries of a mapping (null counts as empty).
    pub fn map(&self, cx: &mut Ctx) -> Option<Vec<At<'a>>> {
        match &self.node.kind {
            Kind::Map(entries) => Some(entries.iter().map(|e| self.entry(e)).collect()),
            Kind::Null => Some(Vec::new()),
            _ => {
                self.wrong(cx, "a mapping");
                None
            }
        }
    }

    /// The items of a list (null counts as empty).
    pub fn list(&self, cx: &mut Ctx) -> Option<Vec<At<'a>>> {
        match &self.node.kind {
            Kind::Seq(items) => Some(items.iter().map(|n| self.item(n)).collect()),
            Kind::Null => Some(Vec::new()),
            _ => {
                self.wrong(cx, "a list");
                None
            }
        }
    }

    /// A string; numbers and booleans give their source text.
    pub fn string(&self, cx: &mut Ctx) -> Option<String> {
        match self.text() {
            Some(t) => Some(t.to_string()),
            None => {
                self.wrong(cx, "a string");
                None
            }
        }
    }

    /// A string, or `None` without error when the value is null.
    pub fn opt_string(&self, cx: &mut Ctx) -> Option<String> {
        if self.is_null() { None } else { self.string(cx) }
    }

    /// A boolean: `true`/`false`, and the YAML 1.1 spellings compose accepts
    /// (`yes`, `no`, `on`, `off`, `y`, `n`), any case.
    pub fn boolean(&self, cx: &mut Ctx) -> Option<bool> {
        let parsed = self.text().and_then(|t| match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Some(true),
            "false" | "no" | "n" | "off" => Some(false),
            _ => None,
        });
        if parsed.is_none() {
            self.wrong(cx, "true or false");
        }
        parsed
    }

    /// A non-negative integer (quoted digits are accepted too).
    pub fn uint(&self, cx: &mut Ctx) -> Option<u64> {
        let parsed = self.text().and_then(values::parse_uint);
        if parsed.is_none() {
            self.wrong(cx, "a non-negative integer");
        }
        parsed
    }

    /// A number (integer or decimal).
    pub fn float(&self, cx: &mut Ctx) -> Option<f64> {
        let parsed = self.text().and_then(|t| t.trim().parse::<f64>().ok()).filter(|f| f.is_finite());
        if parsed.is_none() {
            self.wrong(cx, "a number");
        }
        parsed
    }

    /// A duration in compose form (`1m30s`, `500ms`, `0`), in milliseconds.
    pub fn duration(&self, cx: &mut Ctx) -> Option<u64> {
        let Some(text) = self.text() else {
            self.wrong(cx, "a duration like 10s or 1m30s");
            return None;
        };
        match values::parse_duration(text) {
            Ok(ms) => Some(ms),
            Err(why) => {
                cx.error(self, why);
                None
            }
        }
    }

    /// One of `choices`, returned as written.
    pub fn choice<'c>(&self, cx: &mut Ctx, choices: &[&'c str]) -> Option<&'c str> {
        let found = self.text().and_then(|t| choices.iter().copied().find(|c| *c == t));
        if found.is_none() {
            let list = choices.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
            cx.error(self, format!("must be one of {list}, got {}", self.node.describe()));
        }
        found
    }

    /// A command: a string (split like a shell would) or a list of strings.
    pub fn command(&self, cx: &mut Ctx) -> Option<Vec<String>> {
        match &self.node.kind {
            Kind::Scalar { text, .. } => match values::split_shell(text) {
                Ok(words) => Some(words),
                Err(why) => {
                    cx.error(self, why);
                    None
                }
            },
            Kind::Seq(_) => self.string_list(cx),
            _ => {
                self.wrong(cx, "a string or a list of strings");
                None
            }
        }
    }

    /// A list of strings.
    pub fn string_list(&self, cx: &mut Ctx) -> Option<Vec<String>> {
        let items = self.list(cx)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in &items {
            match item.string(cx) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `KEY=VALUE` pairs given as a list (`KEY=VALUE` or `KEY`) or a mapping
    /// (`KEY: VALUE`, `KEY:`); each with the position of its item or key.
    /// A missing value is `None`.
    pub fn pairs(&self, cx: &mut Ctx) -> Vec<(At<'a>, String, Option<String>)> {
        let mut out = Vec::new();
        match &self.node.kind {
            Kind::Null => {}
            Kind::Seq(_) => {
                for item in self.list(cx).unwrap_or_default() {
                    let Some(text) = item.string(cx) else { continue };
                    let (k, v) = match text.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (text, None),
                    };
                    if k.is_empty() {
                        cx.error(&item, "must be KEY=VALUE, with a key");
                        continue;
                    }
                    out.push((item, k, v));
                }
            }
            Kind::Map(_) => {
                for e in self.map(cx).unwrap_or_default() {
                    let key = e.key.to_string();
                    let value = if e.is_null() { None } else { e.string(cx) };
                    if value.is_none() && !e.is_null() {
                        continue;
                    }
                    out.push((e, key, value));
                }
            }
            Kind::Scalar { .. } => self.wrong(cx, "a list of KEY=VALUE or a mapping"),
        }
        out
    }
}
