//! `.env` files in compose's syntax, parsed from the text the caller read.
//!
//! - `KEY=VALUE`, `export KEY=VALUE`, and `KEY: VALUE` (compose accepts it
//!   too); spaces around the key are ignored. A key is letters, digits,
//!   `_`, `.`, `-`, `[` and `]`.
//! - Blank lines and lines starting with `#` are skipped.
//! - Unquoted values are trimmed; a `#` after whitespace starts a comment.
//! - `'single quoted'` values are literal, and may span lines.
//! - `"double quoted"` values may span lines, understand `\n`, `\t`, `\r`,
//!   `\\`, `\"`, `\'` and `\$` (a literal `$`; other escapes stay as written),
//!   and are interpolated.
//! - Unquoted and double-quoted values are interpolated like stack files
//!   ([`super::interpolate`]): a variable comes from the caller's environment
//!   first, then from the lines above.
//! - `KEY` alone takes KEY from the caller's environment, if it is set there.
//! - A key given twice: the last one wins.
//!
//! Every problem is a [`Diagnostic`] at the `.env` file's line and column,
//! with the key as its path; the lines without problems still count.

use std::collections::BTreeMap;

use super::interpolate::{self, InterpolationError};
use super::{Diagnostic, SourceFile};

/// What is wrong with a line of a `.env` file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DotEnvError {
    /// `=value` or `: value`: no key before the separator.
    #[error("missing variable name before the `=`")]
    NoKey,
    /// A key with a character that is not allowed.
    #[error("invalid variable name {0:?}: use letters, digits, `_`, `.` and `-`")]
    BadKey(String),
    /// A quoted value whose closing quote never comes.
    #[error("unterminated quoted value: missing closing {0}")]
    Unterminated(char),
    /// Something other than a comment after a quoted value.
    #[error("unexpected text after the closing quote: {0:?}")]
    Trailing(String),
    /// An invalid or failed interpolation in the value.
    #[error(transparent)]
    Interpolation(#[from] InterpolationError),
}

/// The variables of a `.env` file, and its problems.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DotEnv {
    /// The variables defined.
    pub vars: BTreeMap<String, String>,
    /// Errors, in file order.
    pub errors: Vec<Diagnostic>,
    /// Warnings (variables used without a value), in file order.
    pub warnings: Vec<Diagnostic>,
}

/// Column (1-based, in characters) of `rest`, a suffix of `line`.
fn column(line: &str, rest: &str) -> usize {
    line.get(..line.len().saturating_sub(rest.len())).map_or(0, |s| s.chars().count()) + 1
}

fn is_key_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '[' | ']')
}

/// The byte index of the quote that closes a value opened by `quote`.
fn closing(s: &str, quote: char) -> Option<usize> {
    if quote == '\'' {
        return s.find('\'');
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// A double-quoted value's escapes, expanded into an interpolation
/// template (so `\$` becomes `$$`).
fn unescape_double(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('\'') => out.push('\''),
            Some('$') => out.push_str("$$"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// An unquoted value without its comment (a `#` after whitespace), trimmed.
fn strip_comment(s: &str) -> &str {
    let cut = s
        .char_indices()
        .find(|&(i, c)| c == '#' && s[..i].chars().next_back().is_some_and(char::is_whitespace))
        .map_or(s.len(), |(i, _)| i);
    s[..cut].trim()
}

/// Parses `file`; `env` is the caller's environment, which interpolation
/// in the file reads before the file's own variables.
pub(crate) fn parse(file: &SourceFile, env: &BTreeMap<String, String>) -> DotEnv {
    let text = file.text.strip_prefix('\u{feff}').unwrap_or(&file.text);
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let mut out = DotEnv::default();
    let diag = |line: usize, column: usize, path: &str, message: String| Diagnostic {
        file: file.name.clone(),
        line,
        column,
        path: path.to_string(),
        message,
    };
    let mut next = 0;
    while next < lines.len() {
        let (n, line) = (next + 1, lines[next]);
        next += 1;
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let body = match body.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => body,
        };
        let key_col = column(line, body);
        let sep = body.find(['=', ':']);
        let key = body[..sep.unwrap_or(body.len())].trim_end();
        if key.is_empty() {
            out.errors.push(diag(n, key_col, "", DotEnvError::NoKey.to_string()));
            continue;
        }
        if !key.chars().all(is_key_char) {
            out.errors.push(diag(n, key_col, "", DotEnvError::BadKey(key.to_string()).to_string()));
            continue;
        }
        let Some(sep) = sep else {
            // `KEY` alone: inherited from the environment, as compose does.
            if let Some(v) = env.get(key) {
                out.vars.insert(key.to_string(), v.clone());
            }
            continue;
        };
        let raw = &body[sep + 1..];
        let value = raw.trim_start_matches([' ', '\t']);
        let value_col = column(line, value);
        let template = match value.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                // The value runs to the closing quote, on this line or a later one.
                let mut content = String::new();
                let mut rest = &value[1..];
                let after = loop {
                    if let Some(end) = closing(rest, quote) {
                        content.push_str(&rest[..end]);
                        break Some(&rest[end + 1..]);
                    }
                    content.push_str(rest);
                    let Some(more) = lines.get(next) else { break None };
                    content.push('\n');
                    rest = more;
                    next += 1;
                };
                let Some(after) = after else {
                    out.errors.push(diag(n, value_col, key, DotEnvError::Unterminated(quote).to_string()));
                    break;
                };
                let after = after.trim();
                if !after.is_empty() && !after.starts_with('#') {
                    let e = DotEnvError::Trailing(after.to_string());
                    out.errors.push(diag(n, value_col, key, e.to_string()));
                    continue;
                }
                if quote == '\'' {
                    out.vars.insert(key.to_string(), content);
                    continue;
                }
                unescape_double(&content)
            }
            // `KEY= # comment` is empty: the `#` follows whitespace.
            _ => strip_comment(raw).to_string(),
        };
        let defined = &out.vars;
        let lookup = |name: &str| env.get(name).or_else(|| defined.get(name)).cloned();
        match interpolate::interpolate(&template, &lookup) {
            Ok(done) => {
                for name in &done.unset {
                    out.warnings.push(diag(n, value_col, key, interpolate::unset_warning(name)));
                }
                out.vars.insert(key.to_string(), done.text);
            }
            Err(e) => out.errors.push(diag(n, value_col, key, DotEnvError::from(e).to_string())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{DotEnv, parse};
    use crate::loader::SourceFile;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn run(text: &str, environment: &[(&str, &str)]) -> DotEnv {
        parse(&SourceFile { name: ".env".into(), text: text.into() }, &env(environment))
    }

    /// The variables of a valid file.
    fn vars(text: &str) -> BTreeMap<String, String> {
        let parsed = run(text, &[]);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        parsed.vars
    }

    fn errors(text: &str) -> Vec<String> {
        run(text, &[]).errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn keys_values_comments_and_blank_lines() {
        let text = "# a comment\n\nTAG=1.4\n  export  REGISTRY=registry.example.com \nexport=plain\nSPACED = a b  \nEMPTY=\nYAML: style\nDOTTED.KEY-1=x\r\nTAG=1.5\n";
        assert_eq!(
            vars(text),
            env(&[
                ("TAG", "1.5"),
                ("REGISTRY", "registry.example.com"),
                ("export", "plain"),
                ("SPACED", "a b"),
                ("EMPTY", ""),
                ("YAML", "style"),
                ("DOTTED.KEY-1", "x")
            ])
        );
    }

    #[test]
    fn inline_comments_only_after_whitespace() {
        assert_eq!(
            vars("A=value # comment\nB=val#ue\nC= # only a comment\nD=x\t# tab\nE=#start\n"),
            env(&[("A", "value"), ("B", "val#ue"), ("C", ""), ("D", "x"), ("E", "#start")])
        );
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(
            vars("A='  $HOME \\n # not a comment '\nB='two\nlines' # comment\n"),
            env(&[("A", "  $HOME \\n # not a comment "), ("B", "two\nlines")])
        );
    }

    #[test]
    fn double_quotes_have_escapes_and_interpolation() {
        let parsed = run(
            "USER=app\nA=\"a\\tb\\nc \\\"q\\\" \\\\ \\$HOME \\x\"\nB=\"$USER-${USER:-x}-$HOME\"\nC=\"multi\nline\" # c\n",
            &[("HOME", "/root")],
        );
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.vars["A"], "a\tb\nc \"q\" \\ $HOME \\x");
        assert_eq!(parsed.vars["B"], "app-app-/root");
        assert_eq!(parsed.vars["C"], "multi\nline");
    }

    #[test]
    fn unquoted_values_are_interpolated_environment_first() {
        let parsed = run("HOST=db\nURL=postgres://$HOST:${PORT:-5432}/$$x\nPORT=1\nUSE=$PORT\n", &[("PORT", "7")]);
        assert_eq!(parsed.vars["URL"], "postgres://db:7/$x");
        assert_eq!(parsed.vars["USE"], "7");
    }

    #[test]
    fn key_alone_is_inherited() {
        let parsed = run("HOME\nNOPE\n", &[("HOME", "/root")]);
        assert_eq!(parsed.vars, env(&[("HOME", "/root")]));
        assert!(parsed.errors.is_empty());
    }

    #[test]
    fn unset_variables_warn_at_the_value() {
        let parsed = run("A=x${NOPE}y\n", &[]);
        assert_eq!(parsed.vars["A"], "xy");
        let w: Vec<_> = parsed.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(w, [".env:1:3: A: variable \"NOPE\" is not set, defaulting to a blank string"]);
    }

    #[test]
    fn errors_have_lines_and_the_rest_still_counts() {
        let parsed =
            run("=x\nGOOD=1\nBAD KEY=2\n  ü-ok=3\nQ=\"x\" y\nR=${\nS=${NEED:?set S}\nT=\"open\nstill open\n", &[]);
        let e: Vec<_> = parsed.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            e,
            [
                ".env:1:1: missing variable name before the `=`",
                ".env:3:1: invalid variable name \"BAD KEY\": use letters, digits, `_`, `.` and `-`",
                ".env:5:3: Q: unexpected text after the closing quote: \"y\"",
                ".env:6:3: R: invalid interpolation \"${\": missing closing `}`",
                ".env:7:3: S: required variable NEED is missing a value: set S",
                ".env:8:3: T: unterminated quoted value: missing closing \"",
            ]
        );
        assert_eq!(parsed.vars, env(&[("GOOD", "1"), ("ü-ok", "3")]));
        assert_eq!(errors("A='x\n"), [".env:1:3: A: unterminated quoted value: missing closing '"]);
    }

    /// The example of docs/stack-files.md.
    #[test]
    fn documented_example() {
        let text = r#"# comment; blank lines are skipped
TAG=1.4.2
export REGISTRY=registry.example.com    # `export` is allowed; so is a comment after whitespace
GREETING='single quotes: literal, $TAG stays as written'
MOTD="double quotes: escapes \n \t \\ \" \$, and ${TAG} is replaced"
IMAGE=${REGISTRY}/shop:${TAG}
"#;
        let v = vars(text);
        assert_eq!(v["REGISTRY"], "registry.example.com");
        assert_eq!(v["GREETING"], "single quotes: literal, $TAG stays as written");
        assert_eq!(v["MOTD"], "double quotes: escapes \n \t \\ \" $, and 1.4.2 is replaced");
        assert_eq!(v["IMAGE"], "registry.example.com/shop:1.4.2");
    }

    #[test]
    fn byte_order_mark_and_empty_file() {
        assert_eq!(vars("\u{feff}A=1\n"), env(&[("A", "1")]));
        assert_eq!(vars(""), env(&[]));
    }
}
