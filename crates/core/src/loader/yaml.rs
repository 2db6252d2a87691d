//! The raw layer: YAML text → a positioned tree ([`Node`]).
//!
//! The tree is built from the events of `granit_parser` (re-exported by
//! serde-saphyr), so every key and every value keeps its line and column.
//! Anchors and aliases are resolved (an alias is a copy of its anchored node)
//! and `<<` merge keys are applied, so later layers never see either.
//!
//! Scalars keep their source text: nothing is typed here. That keeps YAML 1.1
//! surprises out (`yes` stays the string `yes`, `22:22` is not base 60, `0755`
//! keeps its zero) and leaves typing to the layer that knows the field.
//!
//! Two local tags of compose's merge rules are kept on the node they tag
//! ([`MergeTag`]): `!reset` and `!override`. The merge layer acts on them;
//! every other tag but `!!str` is ignored, as before.
//!
//! Limits keep hostile input cheap: [`MAX_FILE_BYTES`], [`MAX_DEPTH`] and
//! [`MAX_NODES`] (which also bounds alias expansion, the "billion laughs").

use std::collections::{HashMap, HashSet};

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// Largest stack file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Deepest nesting of mappings and lists accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes one file may expand to, aliases included.
pub const MAX_NODES: usize = 1_000_000;

/// A value of the tree, with the position where it starts (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    /// What the value is.
    pub kind: Kind,
    /// The file it was written in: an index into the files being loaded.
    pub file: usize,
    /// Line (1-based).
    pub line: usize,
    /// Column (1-based, in characters).
    pub col: usize,
    /// For a list item, its index in the list it was written in (key paths
    /// name it so even after lists of several files are merged); else 0.
    pub index: usize,
    /// `!reset` or `!override`, when the value carries one.
    pub tag: Option<MergeTag>,
    /// Levels of nesting in this value (1 for a scalar), aliases included.
    pub height: usize,
}

/// The tags of compose's merge rules (compose 2.24+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MergeTag {
    /// `!reset`: the key is removed, from this file and from the files before.
    Reset,
    /// `!override`: the value replaces the one of the files before, unmerged.
    Override,
}

impl MergeTag {
    /// The tag as written.
    pub fn as_str(self) -> &'static str {
        match self {
            MergeTag::Reset => "!reset",
            MergeTag::Override => "!override",
        }
    }
}

/// The merge tag a YAML tag stands for, if any.
fn merge_tag(tag: Option<&Tag>) -> Option<MergeTag> {
    let tag = tag?;
    if tag.handle() != "!" {
        return None;
    }
    match tag.suffix() {
        "reset" => Some(MergeTag::Reset),
        "override" => Some(MergeTag::Override),
        _ => None,
    }
}

/// The shape of a [`Node`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `~`, `null`, or nothing at all (`key:`).
    Null,
    /// A scalar's text; `quoted` when it was quoted, a block scalar or tagged `!!str`.
    Scalar {
        /// The text after YAML escape processing.
        text: String,
        /// Whether the author wrote it as an explicit string.
        quoted: bool,
    },
    /// A mapping, in source order, merge keys applied.
    Map(Vec<Entry>),
    /// A sequence.
    Seq(Vec<Node>),
}

/// One key of a mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The key's text.
    pub key: String,
    /// The file the key was written in.
    pub file: usize,
    /// Line of the key.
    pub line: usize,
    /// Column of the key.
    pub col: usize,
    /// The value.
    pub value: Node,
}

impl Node {
    /// A short description for messages: `-2`, `"abc"`, `a mapping`, …
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "null".to_string(),
            Kind::Scalar { text, quoted } => {
                let short: String = if text.chars().count() > 60 {
                    text.chars().take(57).chain("...".chars()).collect()
                } else {
                    text.clone()
                };
                if *quoted || short.is_empty() || short.contains(char::is_whitespace) {
                    format!("{short:?}")
                } else {
                    short
                }
            }
            Kind::Map(_) => "a mapping".to_string(),
            Kind::Seq(_) => "a list".to_string(),
        }
    }

    /// Number of nodes in this subtree.
    fn weight(&self) -> usize {
        match &self.kind {
            Kind::Null | Kind::Scalar { .. } => 1,
            Kind::Map(entries) => 1 + entries.iter().map(|e| 1 + e.value.weight()).sum::<usize>(),
            Kind::Seq(items) => 1 + items.iter().map(Node::weight).sum::<usize>(),
        }
    }
}

/// A problem found while building the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TreeError {
    /// Line (1-based; 0 when unknown).
    pub line: usize,
    /// Column (1-based; 0 when unknown).
    pub col: usize,
    /// Key path of the offending value (may be empty).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The result of parsing one file: the root (absent when the YAML is broken
/// or the document is empty) and the errors found.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// The document's root.
    pub root: Option<Node>,
    /// Errors; when one is a syntax error, `root` is `None`.
    pub errors: Vec<TreeError>,
}

/// A collection being built.
enum Frame {
    Map {
        line: usize,
        col: usize,
        anchor: usize,
        tag: Option<MergeTag>,
        entries: Vec<Entry>,
        seen: HashMap<String, (usize, usize)>,
        /// The key read, waiting for its value: (text, line, col, is a merge key).
        key: Option<(String, usize, usize, bool)>,
        /// Values of `<<` keys, in order.
        merges: Vec<Node>,
    },
    Seq {
        line: usize,
        col: usize,
        anchor: usize,
        tag: Option<MergeTag>,
        items: Vec<Node>,
    },
}

struct Builder {
    /// The file's index, stamped on every node.
    file: usize,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    root: Option<Node>,
    documents: usize,
    errors: Vec<TreeError>,
}

fn pos(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

/// Parses `text` as file 0.
#[cfg(test)]
pub(crate) fn parse(text: &str) -> Parsed {
    parse_in(0, text)
}

/// Parses `text`, the file with index `file`, into a tree. Never panics;
/// stops at the first syntax error.
pub(crate) fn parse_in(file: usize, text: &str) -> Parsed {
    if text.len() > MAX_FILE_BYTES {
        return Parsed {
            root: None,
            errors: vec![TreeError {
                line: 0,
                col: 0,
                path: String::new(),
                message: format!(
                    "the file is {} bytes; stack files are limited to {} MiB",
                    text.len(),
                    MAX_FILE_BYTES / (1024 * 1024)
                ),
            }],
        };
    }
    let options = serde_saphyr::granit_parser::options! {
        emit_comments: false,
        block_nesting_limit: MAX_DEPTH * 2,
        flow_nesting_limit: MAX_DEPTH * 2,
    };
    let mut b = Builder {
        file,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
        documents: 0,
        errors: Vec::new(),
    };
    for item in Parser::new_from_str_with_options(text, options) {
        let (event, span) = match item {
            Ok(pair) => pair,
            Err(e) => {
                let m = e.marker();
                b.fatal(m.line(), m.col() + 1, e.info());
                return b.finish_broken();
            }
        };
        if let Err(()) = b.event(event, &span) {
            return b.finish_broken();
        }
    }
    Parsed { root: b.root, errors: b.errors }
}

impl Builder {
    fn finish_broken(self) -> Parsed {
        Parsed { root: None, errors: self.errors }
    }

    fn fatal(&mut self, line: usize, col: usize, message: impl Into<String>) {
        let path = self.path();
        self.errors.push(TreeError { line, col, path, message: message.into() });
    }

    fn error(&mut self, line: usize, col: usize, path: String, message: impl Into<String>) {
        self.errors.push(TreeError { line, col, path, message: message.into() });
    }

    /// The key path of the value being read now.
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Map { key: Some((k, ..)), .. } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                }
                Frame::Map { .. } => {}
                Frame::Seq { items, .. } => path.push_str(&format!("[{}]", items.len())),
            }
        }
        path
    }

    fn count(&mut self, n: usize, line: usize, col: usize) -> Result<(), ()> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            self.fatal(line, col, format!("the file expands to more than {MAX_NODES} values (aliases included)"));
            return Err(());
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), ()> {
        let (line, col) = pos(span);
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    self.fatal(line, col, "several YAML documents in one file are not supported yet");
                    return Err(());
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, line, col)?;
                let is_str = tag.as_ref().is_some_and(|t| t.is_yaml_core_schema_tag("str"));
                let plain = style == ScalarStyle::Plain && !is_str;
                let kind = if plain && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                    Kind::Null
                } else {
                    Kind::Scalar { text: text.into_owned(), quoted: !plain }
                };
                let tag = merge_tag(tag.as_deref());
                let node = Node { kind, file: self.file, line, col, index: 0, tag, height: 1 };
                if anchor != 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
            Event::Alias(id) => {
                let Some(mut node) = self.anchors.get(&id).cloned() else {
                    self.fatal(line, col, "unknown anchor");
                    return Err(());
                };
                self.count(node.weight(), line, col)?;
                // An alias can nest a deep value deeper still: keep the whole
                // tree within the limit, so that every walk of it is shallow.
                if self.stack.len() + node.height > MAX_DEPTH {
                    self.fatal(
                        line,
                        col,
                        format!("values are nested more than {MAX_DEPTH} levels deep (aliases included)"),
                    );
                    return Err(());
                }
                node.line = line;
                node.col = col;
                self.push(node)?;
            }
            Event::MappingStart(_, anchor, ref tag) | Event::SequenceStart(_, anchor, ref tag) => {
                let tag = merge_tag(tag.as_deref());
                self.count(1, line, col)?;
                if self.stack.len() >= MAX_DEPTH {
                    self.fatal(line, col, format!("values are nested more than {MAX_DEPTH} levels deep"));
                    return Err(());
                }
                let frame = if matches!(event, Event::MappingStart(..)) {
                    Frame::Map {
                        line,
                        col,
                        anchor,
                        tag,
                        entries: Vec::new(),
                        seen: HashMap::new(),
                        key: None,
                        merges: Vec::new(),
                    }
                } else {
                    Frame::Seq { line, col, anchor, tag, items: Vec::new() }
                };
                self.stack.push(frame);
            }
            Event::MappingEnd => {
                let Some(Frame::Map { line, col, anchor, tag, entries, merges, .. }) = self.stack.pop() else {
                    self.fatal(line, col, "unbalanced mapping");
                    return Err(());
                };
                let entries = self.apply_merges(entries, merges);
                let height = 1 + entries.iter().map(|e| e.value.height).max().unwrap_or(0);
                let node = Node { kind: Kind::Map(entries), file: self.file, line, col, index: 0, tag, height };
                if anchor != 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
            Event::SequenceEnd => {
                let Some(Frame::Seq { line, col, anchor, tag, items }) = self.stack.pop() else {
                    self.fatal(line, col, "unbalanced sequence");
                    return Err(());
                };
                let height = 1 + items.iter().map(|n| n.height).max().unwrap_or(0);
                let node = Node { kind: Kind::Seq(items), file: self.file, line, col, index: 0, tag, height };
                if anchor != 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)?;
            }
            // Stream and document ends, comments, anchor metadata: nothing to build.
            _ => {}
        }
        Ok(())
    }

    /// Places a finished node in its parent (or as the root).
    fn push(&mut self, mut node: Node) -> Result<(), ()> {
        let path = self.path();
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                node.index = items.len();
                items.push(node);
                Ok(())
            }
            Some(Frame::Map { entries, seen, key, merges, .. }) => match key.take() {
                None => {
                    let (text, merge) = match node.kind {
                        Kind::Scalar { text, quoted } => {
                            let merge = !quoted && text == "<<";
                            (text, merge)
                        }
                        Kind::Null => (String::new(), false),
                        Kind::Map(_) | Kind::Seq(_) => {
                            self.fatal(node.line, node.col, "mapping keys must be plain values, not mappings or lists");
                            return Err(());
                        }
                    };
                    *key = Some((text, node.line, node.col, merge));
                    Ok(())
                }
                Some((text, kline, kcol, merge)) => {
                    if merge {
                        merges.push(node);
                        return Ok(());
                    }
                    if let Some(&(fline, fcol)) = seen.get(&text) {
                        let message = format!("duplicate key (first defined at line {fline}, column {fcol})");
                        self.error(kline, kcol, path, message);
                        return Ok(());
                    }
                    seen.insert(text.clone(), (kline, kcol));
                    entries.push(Entry { key: text, file: self.file, line: kline, col: kcol, value: node });
                    Ok(())
                }
            },
        }
    }

    /// Adds the keys of `<<` sources that the mapping does not set itself.
    /// Explicit keys win; among sources, the earlier wins.
    fn apply_merges(&mut self, mut entries: Vec<Entry>, merges: Vec<Node>) -> Vec<Entry> {
        if merges.is_empty() {
            return entries;
        }
        let mut present: HashSet<String> = entries.iter().map(|e| e.key.clone()).collect();
        let mut sources = Vec::new();
        for m in merges {
            match m.kind {
                Kind::Map(src) => sources.push(src),
                Kind::Seq(items) => {
                    for item in items {
                        match item.kind {
                            Kind::Map(src) => sources.push(src),
                            _ => self.merge_error(&item),
                        }
                    }
                }
                _ => self.merge_error(&m),
            }
        }
        for src in sources {
            for e in src {
                if present.insert(e.key.clone()) {
                    entries.push(e);
                }
            }
        }
        entries
    }

    fn merge_error(&mut self, node: &Node) {
        let path = self.path();
        let path = if path.is_empty() { "<<".to_string() } else { format!("{path}.<<") };
        let message = format!("a merge key `<<` takes a mapping or a list of mappings, got {}", node.describe());
        self.error(node.line, node.col, path, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        let p = parse(text);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        p.root.expect("root")
    }

    fn get<'a>(n: &'a Node, key: &str) -> &'a Entry {
        match &n.kind {
            Kind::Map(es) => es.iter().find(|e| e.key == key).expect("key"),
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn positions_of_keys_and_values() {
        let n = root("a:\n  b: 1\n  c: [x, 'y']\n");
        let a = get(&n, "a");
        assert_eq!((a.line, a.col), (1, 1));
        let b = get(&a.value, "b");
        assert_eq!((b.line, b.col, b.value.line, b.value.col), (2, 3, 2, 6));
        let c = get(&a.value, "c");
        let Kind::Seq(items) = &c.value.kind else { panic!() };
        assert_eq!((items[1].line, items[1].col), (3, 10));
        assert_eq!(items[1].kind, Kind::Scalar { text: "y".into(), quoted: true });
    }

    #[test]
    fn scalars_stay_text() {
        let n = root("a: yes\nb: 0755\nc: 22:22\nd:\ne: ~\nf: !!str null\n");
        assert_eq!(get(&n, "a").value.kind, Kind::Scalar { text: "yes".into(), quoted: false });
        assert_eq!(get(&n, "b").value.describe(), "0755");
        assert_eq!(get(&n, "c").value.describe(), "22:22");
        assert_eq!(get(&n, "d").value.kind, Kind::Null);
        assert_eq!(get(&n, "e").value.kind, Kind::Null);
        assert_eq!(get(&n, "f").value.kind, Kind::Scalar { text: "null".into(), quoted: true });
    }

    #[test]
    fn anchors_and_merges() {
        let n = root("base: &b {x: 1, y: 2}\nother: &o {z: 3}\nm:\n  <<: [*b, *o]\n  y: 5\nalias: *b\n");
        let m = get(&n, "m");
        let Kind::Map(es) = &m.value.kind else { panic!() };
        let keys: Vec<_> = es.iter().map(|e| (e.key.as_str(), e.value.describe())).collect();
        assert_eq!(keys, [("y", "5".to_string()), ("x", "1".into()), ("z", "3".into())]);
        let alias = get(&n, "alias");
        assert_eq!((alias.value.line, alias.value.col), (6, 8));
    }

    #[test]
    fn merge_tags_files_and_item_indexes() {
        let p = parse_in(3, "a: !reset []\nb: !override {c: 1}\nd: !custom x\ne: [x, !reset y]\nf: !!str z\n");
        let n = p.root.expect("root");
        assert_eq!(get(&n, "a").value.tag, Some(MergeTag::Reset));
        assert_eq!(get(&n, "b").value.tag, Some(MergeTag::Override));
        assert_eq!(get(&n, "d").value.tag, None);
        assert_eq!(get(&n, "f").value.tag, None);
        let Kind::Seq(items) = &get(&n, "e").value.kind else { panic!() };
        assert_eq!(items.iter().map(|i| (i.index, i.tag)).collect::<Vec<_>>(), [(0, None), (1, Some(MergeTag::Reset))]);
        assert_eq!((n.file, get(&n, "e").file, items[1].file), (3, 3, 3));
    }

    #[test]
    fn quoted_merge_key_is_literal() {
        let n = root("\"<<\": 1\n");
        assert_eq!(get(&n, "<<").value.describe(), "1");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let p = parse("a:\n  b: 1\n  b: 2\n");
        assert_eq!(
            p.errors,
            [TreeError {
                line: 3,
                col: 3,
                path: "a.b".into(),
                message: "duplicate key (first defined at line 2, column 3)".into()
            }]
        );
    }

    #[test]
    fn bad_merge_value() {
        let p = parse("a:\n  <<: 3\n  b: 1\n");
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].path, "a.<<");
        assert_eq!((p.errors[0].line, p.errors[0].col), (2, 7));
    }

    #[test]
    fn syntax_error_has_a_position() {
        let p = parse("a: [1, 2\nb: 3\n");
        assert!(p.root.is_none());
        assert_eq!(p.errors.len(), 1);
        assert!(p.errors[0].line > 0, "{:?}", p.errors);
    }

    #[test]
    fn limits() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        let p = parse(&deep);
        assert!(p.root.is_none());
        assert!(p.errors[0].message.contains("nested"), "{:?}", p.errors);

        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            bomb.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = c;
        }
        let p = parse(&bomb);
        assert!(p.root.is_none());
        assert!(p.errors[0].message.contains("expands"), "{:?}", p.errors);

        // Aliases nesting aliases: each level is shallow, the whole is not.
        let mut chain = String::from("a0: &a0 [[[[[[[[[[x]]]]]]]]]]\n");
        for i in 1..10 {
            chain.push_str(&format!("a{i}: &a{i} [[[[[[[[[[*a{}]]]]]]]]]]\n", i - 1));
        }
        let p = parse(&chain);
        assert!(p.root.is_none());
        assert!(p.errors[0].message.contains("aliases included"), "{:?}", p.errors);

        let big = "a: b\n".repeat(MAX_FILE_BYTES / 5 + 1);
        assert!(parse(&big).errors[0].message.contains("limited"));
    }

    #[test]
    fn several_documents() {
        let p = parse("a: 1\n---\nb: 2\n");
        assert!(p.errors[0].message.contains("several YAML documents"));
        assert_eq!(p.errors[0].line, 2);
    }
}
