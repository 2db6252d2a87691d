//! Tables and JSON. A listing is a slice of serde rows: JSON prints them as
//! they are; a table prints the chosen fields, headed by the same names in
//! upper case. Fields ending in `_at` (Unix ms) show as ages in tables.

use anyhow::Result;
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
use serde_json::Value;

use crate::args::Output;

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
        Output::Json => println!("{}", serde_json::to_string_pretty(doc)?),
        Output::Table | Output::Yaml => print!("{}", serde_saphyr::to_string(doc)?),
    }
    Ok(())
}

/// Prints `rows` as a table of `columns`, or as JSON or YAML.
pub fn print_rows<T: Serialize>(rows: &[T], columns: &[&str], output: Output) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(rows)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&rows)?),
        Output::Table => {
            let mut table = Table::new();
            table.load_style(NOTHING);
            table.set_header(columns.iter().map(|c| c.to_uppercase()));
            for row in rows {
                let v = serde_json::to_value(row)?;
                table.add_row(columns.iter().map(|c| cell(c, v.get(*c))));
            }
            println!("{table}");
        }
    }
    Ok(())
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
}
