//! Variable interpolation per the compose specification, on the raw tree,
//! before typing.
//!
//! Every scalar value (never a key) is a template:
//!
//! | written | result |
//! | --- | --- |
//! | `$VAR`, `${VAR}` | the value; unset: empty, with a warning |
//! | `${VAR:-word}` | `word` when VAR is unset or empty |
//! | `${VAR-word}` | `word` when VAR is unset |
//! | `${VAR:?msg}` | an error naming VAR (with `msg`) when VAR is unset or empty |
//! | `${VAR?msg}` | an error naming VAR (with `msg`) when VAR is unset |
//! | `${VAR:+word}` | `word` when VAR is set and not empty, else empty |
//! | `${VAR+word}` | `word` when VAR is set, else empty |
//! | `$$` | a literal `$` |
//!
//! `word` is a template itself, so defaults nest (`${A:-${B:-x}}`); it is
//! only evaluated when it is used. `msg` is kept as written. A `$` followed
//! by anything else (`5$`, `$(date)`, `$1`) is kept as written, as compose
//! does. Names are `[A-Za-z_][A-Za-z0-9_]*`.
//!
//! The whole value is parsed before anything is looked up, so a syntax
//! error is reported even in a branch that is not used.
//!
//! Values under `x-*` keys at the top level and directly in a service are
//! not interpolated: they are templates for anchors, and what an alias
//! copies from them is interpolated where it is used. Everywhere else the
//! whole tree is, as compose does, and so is stackd's own service key
//! `x-stackd-autoscale`, which is read like any other.

use std::collections::BTreeSet;

use super::ctx::Ctx;
use super::yaml::{Kind, Node};

/// Why a value cannot be interpolated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InterpolationError {
    /// `${` without the `}` that closes it.
    #[error("invalid interpolation {0:?}: missing closing `}}`")]
    Unclosed(String),
    /// `${}` or `${:-word}`: no variable name.
    #[error("invalid interpolation {0:?}: missing variable name")]
    NoName(String),
    /// A name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error(
        "invalid interpolation {template:?}: {name:?} is not a valid variable name (letters, digits and `_`, not starting with a digit)"
    )]
    BadName {
        /// The `${…}` written.
        template: String,
        /// The name written.
        name: String,
    },
    /// An operator other than `:-`, `-`, `:?`, `?`, `:+`, `+` (e.g. `:=`).
    #[error("invalid interpolation {template:?}: unsupported operator {op:?}; use :-, -, :?, ?, :+ or +")]
    BadOperator {
        /// The `${…}` written.
        template: String,
        /// The operator written.
        op: String,
    },
    /// Defaults nested deeper than [`MAX_NESTING`].
    #[error("invalid interpolation {0:?}: nested more than {MAX_NESTING} levels deep")]
    TooDeep(String),
    /// `${VAR:?msg}` or `${VAR?msg}` and the variable has no value.
    #[error("required variable {name} is missing a value{}", if .message.is_empty() { String::new() } else { format!(": {}", .message) })]
    Required {
        /// The variable.
        name: String,
        /// The author's message, as written (may be empty).
        message: String,
    },
}

/// What `${NAME<op>word}` does when NAME is unset (and, with `:`, empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `$NAME`, `${NAME}`.
    Plain,
    /// `-`, `:-`: use the word.
    Default,
    /// `?`, `:?`: fail with the word.
    Required,
    /// `+`, `:+`: the word when set, else empty.
    Alternative,
}

/// One part of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece<'a> {
    /// Text taken as is (`$$` already unescaped).
    Text(String),
    /// A variable reference.
    Var {
        /// The variable's name.
        name: &'a str,
        /// The operator.
        op: Op,
        /// Whether the operator had a `:` (empty counts as unset).
        colon: bool,
        /// The word after the operator, parsed.
        word: Vec<Piece<'a>>,
        /// The word as written (the message of `?`).
        raw_word: &'a str,
    },
}

/// Deepest nesting of `${…}` inside defaults accepted (keeps hostile input
/// from exhausting the stack).
pub(crate) const MAX_NESTING: usize = 32;

/// At most this many characters of a template are quoted in a message.
const SNIPPET_CHARS: usize = 60;

fn snippet(s: &str) -> String {
    if s.chars().count() > SNIPPET_CHARS {
        s.chars().take(SNIPPET_CHARS - 1).chain(['…']).collect()
    } else {
        s.to_string()
    }
}

fn is_name_start(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphabetic()
}

fn is_name_char(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphanumeric()
}

/// A recursive-descent parser over one template. Every byte it stops at is
/// ASCII, so every slice falls on a character boundary.
struct Parser<'a> {
    s: &'a str,
    i: usize,
    /// `${` open around the current position.
    depth: usize,
}

impl<'a> Parser<'a> {
    /// Parses until the end, or (`nested`) until a `}` that closes the
    /// enclosing `${`, which is left unconsumed.
    fn sequence(&mut self, nested: bool) -> Result<Vec<Piece<'a>>, InterpolationError> {
        let b = self.s.as_bytes();
        let mut out = Vec::new();
        let mut lit = String::new();
        let mut start = self.i;
        // Bare `{` inside a word, waiting for their `}` (compose counts them too).
        let mut depth = 0usize;
        while self.i < b.len() {
            match b[self.i] {
                b'$' => {
                    lit.push_str(&self.s[start..self.i]);
                    let dollar = self.i;
                    match b.get(dollar + 1) {
                        Some(b'$') => {
                            lit.push('$');
                            self.i += 2;
                        }
                        Some(b'{') => {
                            if !lit.is_empty() {
                                out.push(Piece::Text(std::mem::take(&mut lit)));
                            }
                            out.push(self.braced(dollar)?);
                        }
                        Some(&c) if is_name_start(c) => {
                            if !lit.is_empty() {
                                out.push(Piece::Text(std::mem::take(&mut lit)));
                            }
                            let len = b[dollar + 1..].iter().take_while(|&&c| is_name_char(c)).count();
                            let name = &self.s[dollar + 1..dollar + 1 + len];
                            out.push(Piece::Var { name, op: Op::Plain, colon: false, word: Vec::new(), raw_word: "" });
                            self.i = dollar + 1 + len;
                        }
                        // `5$`, `$(cmd)`, `$1`: kept as written, as compose does.
                        _ => {
                            lit.push('$');
                            self.i += 1;
                        }
                    }
                    start = self.i;
                }
                b'{' if nested => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' if nested => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                    self.i += 1;
                }
                _ => self.i += 1,
            }
        }
        lit.push_str(&self.s[start..self.i]);
        if !lit.is_empty() {
            out.push(Piece::Text(lit));
        }
        Ok(out)
    }

    /// Parses `${…}` starting at the `$` at `dollar`.
    fn braced(&mut self, dollar: usize) -> Result<Piece<'a>, InterpolationError> {
        let b = self.s.as_bytes();
        let from_dollar = &self.s[dollar..];
        // What was written, up to the first `}`: for messages.
        let written = || snippet(from_dollar.find('}').map_or(from_dollar, |end| &from_dollar[..=end]));
        let name_start = dollar + 2;
        let name_len = b[name_start..].iter().take_while(|&&c| !matches!(c, b'}' | b':' | b'-' | b'?' | b'+')).count();
        let name_end = name_start + name_len;
        let Some(&next) = b.get(name_end) else {
            return Err(InterpolationError::Unclosed(snippet(from_dollar)));
        };
        let name = &self.s[name_start..name_end];
        if name.is_empty() {
            return Err(InterpolationError::NoName(written()));
        }
        if !is_name_start(name.as_bytes()[0]) || !name.bytes().all(is_name_char) {
            return Err(InterpolationError::BadName { template: written(), name: name.to_string() });
        }
        if next == b'}' {
            self.i = name_end + 1;
            return Ok(Piece::Var { name, op: Op::Plain, colon: false, word: Vec::new(), raw_word: "" });
        }
        let colon = next == b':';
        let op_at = if colon { name_end + 1 } else { name_end };
        let op = match b.get(op_at) {
            Some(b'-') => Op::Default,
            Some(b'?') => Op::Required,
            Some(b'+') => Op::Alternative,
            None => return Err(InterpolationError::Unclosed(snippet(from_dollar))),
            Some(_) => {
                // `:` followed by something else, such as `:=` or `:}`.
                let op = self.s[name_end..].chars().take(2).collect();
                return Err(InterpolationError::BadOperator { template: written(), op });
            }
        };
        self.i = op_at + 1;
        if self.depth >= MAX_NESTING {
            return Err(InterpolationError::TooDeep(snippet(from_dollar)));
        }
        let word_start = self.i;
        self.depth += 1;
        let word = self.sequence(true)?;
        self.depth -= 1;
        if self.i >= b.len() {
            return Err(InterpolationError::Unclosed(snippet(from_dollar)));
        }
        let raw_word = &self.s[word_start..self.i];
        self.i += 1; // the closing `}`
        Ok(Piece::Var { name, op, colon, word, raw_word })
    }
}

/// Evaluates parsed pieces into `out`; records variables used without a
/// value and without a default in `unset`.
fn evaluate<'a>(
    pieces: &[Piece<'a>],
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<&'a str>,
    out: &mut String,
) -> Result<(), InterpolationError> {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var { name, op, colon, word, raw_word } => {
                let value = lookup(name);
                // Whether the variable counts as having a value for the operator.
                let set = value.as_deref().is_some_and(|v| !(*colon && v.is_empty()));
                match op {
                    Op::Plain => match value {
                        Some(v) => out.push_str(&v),
                        None => unset.push(*name),
                    },
                    Op::Default if set => out.push_str(value.as_deref().unwrap_or_default()),
                    Op::Default => evaluate(word, lookup, unset, out)?,
                    Op::Required if set => out.push_str(value.as_deref().unwrap_or_default()),
                    Op::Required => {
                        return Err(InterpolationError::Required {
                            name: name.to_string(),
                            message: raw_word.to_string(),
                        });
                    }
                    Op::Alternative if set => evaluate(word, lookup, unset, out)?,
                    Op::Alternative => {}
                }
            }
        }
    }
    Ok(())
}

/// The result of interpolating one value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Interpolated {
    /// The value.
    pub text: String,
    /// Variables used without a value and without a default (each once, in
    /// order of appearance): they became empty strings.
    pub unset: Vec<String>,
}

/// Interpolates `text`, taking variables from `lookup`.
///
/// # Errors
///
/// An [`InterpolationError`] for invalid syntax anywhere in `text`, or for
/// the first `${VAR:?msg}` / `${VAR?msg}` whose variable has no value.
pub(crate) fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Interpolated, InterpolationError> {
    if !text.contains('$') {
        return Ok(Interpolated { text: text.to_string(), unset: Vec::new() });
    }
    let pieces = Parser { s: text, i: 0, depth: 0 }.sequence(false)?;
    let mut unset = Vec::new();
    let mut out = String::with_capacity(text.len());
    evaluate(&pieces, lookup, &mut unset, &mut out)?;
    let mut seen = BTreeSet::new();
    let unset = unset.into_iter().filter(|n| seen.insert(*n)).map(str::to_string).collect();
    Ok(Interpolated { text: out, unset })
}

/// The warning for a variable that is used without a value.
pub(crate) fn unset_warning(name: &str) -> String {
    format!("variable {name:?} is not set, defaulting to a blank string")
}

/// Where in the tree the walk is: `x-*` keys are skipped at the top level
/// and directly in a service (but `x-stackd-autoscale`), and nowhere else.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Services,
    Service,
    Other,
}

/// Interpolates every scalar value of `root` (keys stay as written) with
/// the variables of `cx`. Errors silence their path; a variable without a
/// value is warned about once per variable and position.
pub(crate) fn apply(cx: &mut Ctx, root: &mut Node) {
    let vars = std::mem::take(&mut cx.vars);
    let lookup = |name: &str| vars.get(name).cloned();
    let mut walk = Walk { cx, lookup: &lookup, warned: BTreeSet::new() };
    let (line, col) = (root.line, root.col);
    walk.node(Level::Root, "", line, col, root);
    cx.vars = vars;
}

/// One interpolation pass over a file's tree.
struct Walk<'c, 'l, 'r> {
    cx: &'c mut Ctx<'r>,
    lookup: &'l dyn Fn(&str) -> Option<String>,
    /// Variables already warned about: (name, line, column).
    warned: BTreeSet<(String, usize, usize)>,
}

impl Walk<'_, '_, '_> {
    /// Interpolates `node`, found at `path`, reported at `line`:`col`.
    fn node(&mut self, level: Level, path: &str, line: usize, col: usize, node: &mut Node) {
        match &mut node.kind {
            Kind::Null => {}
            Kind::Scalar { text, .. } => {
                if !text.contains('$') {
                    return;
                }
                match interpolate(text, self.lookup) {
                    Ok(done) => {
                        *text = done.text;
                        for name in done.unset {
                            if self.warned.insert((name.clone(), line, col)) {
                                self.cx.warn_at(line, col, path, unset_warning(&name));
                            }
                        }
                    }
                    Err(why) => self.cx.error_and_silence(line, col, path, why.to_string()),
                }
            }
            Kind::Map(entries) => {
                for e in entries.iter_mut() {
                    let ours = level == Level::Service && e.key == super::autoscale::KEY;
                    if matches!(level, Level::Root | Level::Service) && e.key.starts_with("x-") && !ours {
                        continue;
                    }
                    let next = match (level, e.key.as_str()) {
                        (Level::Root, "services") => Level::Services,
                        (Level::Services, _) => Level::Service,
                        _ => Level::Other,
                    };
                    let child = if path.is_empty() { e.key.clone() } else { format!("{path}.{}", e.key) };
                    self.node(next, &child, e.line, e.col, &mut e.value);
                }
            }
            Kind::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let (l, c) = (item.line, item.col);
                    self.node(Level::Other, &format!("{path}[{i}]"), l, c, item);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{InterpolationError, MAX_NESTING, interpolate};

    fn vars() -> BTreeMap<String, String> {
        [("TAG", "1.4"), ("EMPTY", ""), ("N", "3"), ("HOST", "db")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The value and the unset variables.
    fn run(text: &str) -> Result<(String, Vec<String>), InterpolationError> {
        let v = vars();
        interpolate(text, &|n| v.get(n).cloned()).map(|i| (i.text, i.unset))
    }

    fn value(text: &str) -> String {
        match run(text) {
            Ok((v, _)) => v,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn error(text: &str) -> String {
        match run(text) {
            Ok(v) => panic!("{text:?} gave {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(value("app:$TAG"), "app:1.4");
        assert_eq!(value("app:${TAG}-x"), "app:1.4-x");
        assert_eq!(value("$TAG.$N"), "1.4.3");
        assert_eq!(value("${HOST}:5432/$HOST"), "db:5432/db");
        assert_eq!(value("no variables"), "no variables");
        assert_eq!(value("é$TAG€"), "é1.4€");
    }

    #[test]
    fn unset_is_blank_and_reported_once() {
        assert_eq!(run("a${NOPE}b$NOPE${OTHER}"), Ok(("ab".into(), vec!["NOPE".into(), "OTHER".into()])));
        assert_eq!(run("${EMPTY}"), Ok((String::new(), vec![])));
    }

    #[test]
    fn defaults() {
        assert_eq!(value("${NOPE:-x}"), "x");
        assert_eq!(value("${EMPTY:-x}"), "x");
        assert_eq!(value("${TAG:-x}"), "1.4");
        assert_eq!(value("${NOPE-x}"), "x");
        assert_eq!(value("${EMPTY-x}"), "");
        assert_eq!(value("${TAG-x}"), "1.4");
        assert_eq!(value("${NOPE:-}"), "");
        assert_eq!(value("${NOPE:-a b:c-d}"), "a b:c-d");
        assert_eq!(run("${NOPE:-x}"), Ok(("x".into(), vec![])));
    }

    #[test]
    fn nested_defaults() {
        assert_eq!(value("${NOPE:-${TAG:-x}}"), "1.4");
        assert_eq!(value("${NOPE:-${ALSO:-x}}"), "x");
        assert_eq!(value("${NOPE:-${ALSO:-${N}}}!"), "3!");
        assert_eq!(value("${TAG:-${NOPE:?never evaluated}}"), "1.4");
        assert_eq!(value("${NOPE:-pre-$TAG-post}"), "pre-1.4-post");
        assert_eq!(value("${NOPE:-{a}}"), "{a}");
        assert_eq!(run("${NOPE:-${ALSO}}"), Ok((String::new(), vec!["ALSO".into()])));
    }

    #[test]
    fn required() {
        assert_eq!(value("${TAG:?set TAG}"), "1.4");
        assert_eq!(value("${EMPTY?set it}"), "");
        assert_eq!(
            error("${NOPE:?set NOPE to the tag}"),
            "required variable NOPE is missing a value: set NOPE to the tag"
        );
        assert_eq!(
            error("${EMPTY:?must not be empty}"),
            "required variable EMPTY is missing a value: must not be empty"
        );
        assert_eq!(error("${NOPE?}"), "required variable NOPE is missing a value");
        assert_eq!(error("${NOPE:?}"), "required variable NOPE is missing a value");
        assert_eq!(error("${NOPE:?$$5 or ${X}}"), "required variable NOPE is missing a value: $$5 or ${X}");
    }

    #[test]
    fn alternatives() {
        assert_eq!(value("${TAG:+set}"), "set");
        assert_eq!(value("${EMPTY:+set}"), "");
        assert_eq!(value("${NOPE:+set}"), "");
        assert_eq!(value("${TAG+set}"), "set");
        assert_eq!(value("${EMPTY+set}"), "set");
        assert_eq!(value("${NOPE+set}"), "");
        assert_eq!(value("${TAG:+--tag=$TAG}"), "--tag=1.4");
        assert_eq!(run("${NOPE:+x}"), Ok((String::new(), vec![])));
    }

    #[test]
    fn dollars() {
        assert_eq!(value("a$$b $$(cat x) $${TAG}"), "a$b $(cat x) ${TAG}");
        assert_eq!(value("$$$TAG"), "$1.4");
        assert_eq!(value("${NOPE:-$$}"), "$");
        // A `$` that starts nothing stays, as in compose.
        assert_eq!(value("5$ $(date) $1 $ $-"), "5$ $(date) $1 $ $-");
        assert_eq!(value("$"), "$");
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(error("${"), "invalid interpolation \"${\": missing closing `}`");
        assert_eq!(error("a ${TAG"), "invalid interpolation \"${TAG\": missing closing `}`");
        assert_eq!(error("${TAG:-x"), "invalid interpolation \"${TAG:-x\": missing closing `}`");
        assert_eq!(error("${TAG:"), "invalid interpolation \"${TAG:\": missing closing `}`");
        assert_eq!(error("${A:-${B:-x}"), "invalid interpolation \"${A:-${B:-x}\": missing closing `}`");
        assert_eq!(error("${}"), "invalid interpolation \"${}\": missing variable name");
        assert_eq!(error("${:-x}"), "invalid interpolation \"${:-x}\": missing variable name");
        assert_eq!(
            error("${1A}"),
            "invalid interpolation \"${1A}\": \"1A\" is not a valid variable name (letters, digits and `_`, not starting with a digit)"
        );
        assert_eq!(
            error("${A B}"),
            "invalid interpolation \"${A B}\": \"A B\" is not a valid variable name (letters, digits and `_`, not starting with a digit)"
        );
        assert_eq!(
            error("${A.B:-x}"),
            "invalid interpolation \"${A.B:-x}\": \"A.B\" is not a valid variable name (letters, digits and `_`, not starting with a digit)"
        );
        assert_eq!(
            error("${A:=x}"),
            "invalid interpolation \"${A:=x}\": unsupported operator \":=\"; use :-, -, :?, ?, :+ or +"
        );
        assert_eq!(
            error("${A:}"),
            "invalid interpolation \"${A:}\": unsupported operator \":}\"; use :-, -, :?, ?, :+ or +"
        );
        // Errors in a branch that is not used are still errors.
        assert_eq!(error("${TAG:-${}}"), "invalid interpolation \"${}\": missing variable name");
        let deep = format!("{}x{}", "${A:-".repeat(MAX_NESTING), "}".repeat(MAX_NESTING));
        assert_eq!(value(&deep), "x");
        let hostile = format!("{}x{}", "${A:-".repeat(100_000), "}".repeat(100_000));
        assert!(error(&hostile).ends_with("nested more than 32 levels deep"), "{}", error(&hostile));
        let long = format!("${{{}", "A".repeat(100));
        assert_eq!(error(&long).chars().filter(|&c| c == 'A').count(), 57);
    }
}
