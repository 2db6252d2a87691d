//! Tables and JSON. A listing is a slice of serde rows: JSON prints them as
//! they are; a table prints the chosen fields, headed by the same names in
//! upper case. Fields ending in `_at` (Unix ms) show as ages in tables.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
use serde_json::Value;

use crate::args::Output;

/// Standard output is gone (a closed pipe) or failed: nothing more is written.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// Standard output failed for another reason than a closed pipe.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes to standard output (what [`out!`] calls). When the reader has
/// gone away (`stackctl ps | head`), the rest of the output is dropped
/// quietly and the command goes on to its normal end and exit code, as
/// `out!` would not (it panics). Any other write error is said once on
/// standard error and makes a successful command exit 1 ([`final_code`]).
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, Ordering::Relaxed);
            eprintln!("error: cannot write to standard output: {e}");
        }
    }
}

/// The exit code of a command that returned `code`: an error writing
/// standard output (other than a closed pipe) turns success into 1.
pub fn final_code(code: i32) -> i32 {
    if code == crate::EXIT_OK && STDOUT_FAILED.load(Ordering::Relaxed) { crate::EXIT_ERROR } else { code }
}

/// The name a value has in JSON (its serde name), so that tables, progress
/// lines and JSON spell states the same way (`rolling_back`, `drain`, …).
pub fn name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// "5 seconds ago", "3 minutes ago", …
pub fn age(at_ms: u64) -> String {
    if at_ms == 0 {
        return "-".into();
    }
    let s = now_ms().saturating_sub(at_ms) / 1000;
    let (n, unit) = match s {
        0..=59 => (s, "second"),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn cell(key: &str, v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if key.ends_with("_at") => age(n.as_u64().unwrap_or(0)),
        Some(other) => other.to_string(),
    }
}

/// Prints a document (not a listing): YAML unless JSON is asked for.
pub fn print_document<T: Serialize>(doc: &T, output: Output) -> Result<()> {
    match output {
        Output::Json => out!("{}", serde_json::to_string_pretty(doc)?),
        Output::Table | Output::Yaml => write_stdout(format_args!("{}", serde_saphyr::to_string(doc)?)),
    }
    Ok(())
}

/// Prints `rows` as a table of `columns`, or as JSON or YAML.
pub fn print_rows<T: Serialize>(rows: &[T], columns: &[&str], output: Output) -> Result<()> {
    print_listing(rows, || rows, columns, output)
}

/// Prints `rows` as JSON or YAML, or, for a table, the rows `drawn` makes of
/// them (for people: tree glyphs, joined lists, cut text) as a table of
/// `columns`. JSON is data: it never carries what only a table draws.
pub fn print_listing<T: Serialize, D: Serialize>(
    rows: &[T],
    drawn: impl FnOnce() -> D,
    columns: &[&str],
    output: Output,
) -> Result<()> {
    match output {
        Output::Json => out!("{}", serde_json::to_string_pretty(rows)?),
        Output::Yaml => write_stdout(format_args!("{}", serde_saphyr::to_string(&rows)?)),
        Output::Table => out!("{}", table(&drawn(), columns)?),
    }
    Ok(())
}

/// The table of `rows` (a serde sequence) with `columns`.
fn table<D: Serialize>(rows: &D, columns: &[&str]) -> Result<Table> {
    let mut table = Table::new();
    table.load_style(NOTHING);
    table.set_header(columns.iter().map(|c| c.to_uppercase()));
    if let Value::Array(rows) = serde_json::to_value(rows)? {
        for v in rows {
            table.add_row(columns.iter().map(|c| cell(c, v.get(*c))));
        }
    }
    Ok(table)
}

/// Most characters of an error a table shows (`--no-trunc`: all).
pub const ERROR_WIDTH: usize = 60;

/// Text for one table cell: its lines (a health check's output, a daemon's
/// message) joined with spaces, runs of blanks made one, and, when `width`
/// is given, cut to that many characters with an ellipsis.
pub fn one_line(text: &str, width: Option<usize>) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match width {
        Some(w) if joined.chars().count() > w => {
            let mut cut: String = joined.chars().take(w.saturating_sub(1)).collect();
            cut.truncate(cut.trim_end().len());
            cut.push('…');
            cut
        }
        _ => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells() {
        assert_eq!(cell("name", Some(&Value::String("web".into()))), "web");
        assert_eq!(cell("error", Some(&Value::String(String::new()))), "-");
        assert_eq!(cell("exit_code", Some(&Value::Null)), "-");
        assert_eq!(cell("replicas", Some(&serde_json::json!(3))), "3");
        assert_eq!(cell("updated_at", Some(&serde_json::json!(0))), "-");
    }

    #[test]
    fn one_line_joins_lines_and_cuts_with_an_ellipsis() {
        let probe = "wget: server returned error: HTTP/1.1 500\n\n  Internal   Server Error\r\n";
        assert_eq!(one_line(probe, None), "wget: server returned error: HTTP/1.1 500 Internal Server Error");
        let cut = one_line(probe, Some(20));
        assert_eq!(cut, "wget: server return…");
        assert_eq!(cut.chars().count(), 20);
        assert_eq!(one_line("short", Some(20)), "short");
        assert_eq!(one_line("ab cd", Some(4)), "ab…");
        assert_eq!(one_line("", Some(4)), "");
    }

    #[test]
    fn a_table_row_stays_one_line() {
        #[derive(Serialize)]
        struct Row {
            name: &'static str,
            error: String,
        }
        let rows = vec![
            Row { name: "a", error: one_line("line one\nline two\nline three", Some(ERROR_WIDTH)) },
            Row { name: "b", error: String::new() },
        ];
        let text = table(&rows, &["name", "error"]).expect("table").to_string();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.contains("line one line two line three"), "{text}");
    }
}
