//! Interpolation, on the raw tree, before typing.
//!
//! For now there are no variables: `$$` becomes `$` (as compose does), and
//! any `${VAR}` or `$VAR` is an error — using it as written would deploy a
//! literal `${TAG}`. The next milestone replaces this with real interpolation
//! (`.env` and the caller's variables, `${VAR:-default}`, `${VAR:?error}`).
//! Extension (`x-*`) subtrees are left alone; what they share through anchors
//! is checked where it is used.

use super::ctx::Ctx;
use super::yaml::{Kind, Node};

/// Unescapes `$$` in every scalar value of `root`; reports variables.
pub(crate) fn apply(cx: &mut Ctx, root: &mut Node) {
    let (line, col) = (root.line, root.col);
    walk(cx, "", line, col, root);
}

fn walk(cx: &mut Ctx, path: &str, line: usize, col: usize, node: &mut Node) {
    match &mut node.kind {
        Kind::Null => {}
        Kind::Scalar { text, .. } => match unescape(text) {
            Ok(Some(new)) => *text = new,
            Ok(None) => {}
            Err(why) => cx.error_and_silence(line, col, path, why),
        },
        Kind::Map(entries) => {
            for e in entries.iter_mut().filter(|e| !e.key.starts_with("x-")) {
                let child = if path.is_empty() { e.key.clone() } else { format!("{path}.{}", e.key) };
                walk(cx, &child, e.line, e.col, &mut e.value);
            }
        }
        Kind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let (l, c) = (item.line, item.col);
                walk(cx, &format!("{path}[{i}]"), l, c, item);
            }
        }
    }
}

/// `Ok(None)` when `text` has no `$`; `Ok(Some(..))` with `$$` unescaped;
/// `Err` naming the first variable (or lone `$`).
pub(crate) fn unescape(text: &str) -> Result<Option<String>, String> {
    if !text.contains('$') {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if after.starts_with('{') {
            let var = after.find('}').map_or(after, |end| &after[..=end]);
            return Err(format!("${var} needs variable interpolation, which is not supported yet"));
        } else if after.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic()) {
            let len = after.find(|c: char| c != '_' && !c.is_ascii_alphanumeric()).unwrap_or(after.len());
            return Err(format!("${} needs variable interpolation, which is not supported yet", &after[..len]));
        } else {
            return Err("a lone `$` must be written `$$`".to_string());
        }
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::unescape;

    #[test]
    fn dollars() {
        assert_eq!(unescape("plain"), Ok(None));
        assert_eq!(unescape("a$$b $$(cat x)"), Ok(Some("a$b $(cat x)".into())));
        assert_eq!(
            unescape("TZ=${TIMEZONE:-UTC}!"),
            Err("${TIMEZONE:-UTC} needs variable interpolation, which is not supported yet".into())
        );
        assert_eq!(unescape("$HOME/x"), Err("$HOME needs variable interpolation, which is not supported yet".into()));
        assert_eq!(unescape("${open"), Err("${open needs variable interpolation, which is not supported yet".into()));
        assert_eq!(unescape("5$"), Err("a lone `$` must be written `$$`".into()));
    }
}
