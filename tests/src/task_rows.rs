//! The task rows of `stackctl ps -o json` (and `node ps`), as the cluster
//! tests read them: a field, whether a task should run, whether it is up.

use serde_json::Value;

/// The string field `key` of a task row (empty if it has none).
pub fn s<'a>(t: &'a Value, key: &str) -> &'a str {
    t[key].as_str().unwrap_or_default()
}

/// Whether a task is up: running, and past its health check's start
/// (healthy if it has a check).
pub fn up(t: &Value) -> bool {
    s(t, "current_state") == "running" && !matches!(s(t, "health"), "starting" | "unhealthy")
}

/// Whether a task should run.
pub fn wanted(t: &Value) -> bool {
    s(t, "desired_state") == "running"
}
