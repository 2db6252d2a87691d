//! The status page's HTML, pure: a [`View`] of the applied state in, a
//! string out. Every value from the state goes through [`escape`]; the only
//! markup is this module's own. No script; the style is inline.

use std::fmt::Write;

use stackd_core::model::{Service, ServiceMode, Task, TaskState, UpdateState, rfc3339};
use stackd_core::orchestrator::service_counts;
use stackd_core::state::{Action, Event, ObjectKind};
use stackd_core::{ClusterState, metrics};

/// Failed tasks shown, newest first.
pub(crate) const FAILED_SHOWN: usize = 50;
/// Events shown, newest first.
pub(crate) const EVENTS_SHOWN: usize = 50;

/// What one status page shows.
pub(crate) struct View<'a> {
    /// The applied state read.
    pub state: &'a ClusterState,
    /// The leader's node id, if one is known.
    pub leader: Option<&'a str>,
    /// The name of the manager serving the page.
    pub served_by: &'a str,
    /// Set when the read was not confirmed by the leader: why the page may
    /// show an older state.
    pub may_lag: Option<&'a str>,
    /// The latest kept events, oldest first.
    pub events: &'a [Event],
    /// Who is signed in: the token's name and role.
    pub viewer: (&'a str, &'a str),
    /// When the page is made (ms since the epoch).
    pub now: u64,
}

/// `text` safe in HTML text and in a quoted attribute value.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f2f2f2}.bad{color:#b00020;font-weight:600}.warn{color:#8a5a00}.ok{color:#1b6e20}\
.note{background:#fff4d6;border:1px solid #e0c060;padding:.5em}.err{white-space:pre-wrap;color:#b00020}\
header form{display:inline}small{color:#666}";

/// A whole page: head, `body`.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head>\
         <body>\n{body}</body></html>\n",
        escape(title)
    )
}

/// The login form; `message` (escaped) says why the last try failed.
pub(crate) fn login_page(message: Option<&str>) -> String {
    let mut body = String::from("<h1>stackd status</h1>\n");
    if let Some(m) = message {
        let _ = writeln!(body, "<p class=\"bad\" id=\"login-error\">{}</p>", escape(m));
    }
    body.push_str(
        "<form method=\"post\" action=\"/login\" id=\"login\">\n\
         <p><label for=\"token\">Client token (as for stackctl: <code>STKC-1-…</code>; a viewer token is enough)</label><br>\n\
         <input type=\"password\" name=\"token\" id=\"token\" size=\"60\" autocomplete=\"off\" required autofocus></p>\n\
         <p><button type=\"submit\" id=\"sign-in\">Sign in</button></p>\n</form>\n\
         <p><small>The token stays on the server side: the browser keeps a session cookie only.</small></p>\n",
    );
    page("stackd status: sign in", &body)
}

fn mode(m: &ServiceMode) -> &'static str {
    match m {
        ServiceMode::Replicated { .. } => "replicated",
        ServiceMode::Global => "global",
        ServiceMode::ReplicatedJob { .. } => "replicated-job",
        ServiceMode::GlobalJob => "global-job",
    }
}

fn kind(k: ObjectKind) -> &'static str {
    match k {
        ObjectKind::Stack => "stack",
        ObjectKind::Service => "service",
        ObjectKind::Task => "task",
        ObjectKind::Node => "node",
        ObjectKind::Config => "config",
        ObjectKind::Secret => "secret",
        ObjectKind::Snapshot => "snapshot",
    }
}

fn action(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update => "update",
        Action::Remove => "remove",
    }
}

/// A `<td>` of escaped text, with a class when given.
fn td(out: &mut String, class: &str, text: &str) {
    if class.is_empty() {
        let _ = write!(out, "<td>{}</td>", escape(text));
    } else {
        let _ = write!(out, "<td class=\"{class}\">{}</td>", escape(text));
    }
}

/// A table's head row.
fn head(out: &mut String, id: &str, columns: &[&str]) {
    let _ = write!(out, "<table id=\"{id}\"><tr>");
    for c in columns {
        let _ = write!(out, "<th>{c}</th>");
    }
    out.push_str("</tr>\n");
}

fn node_name<'a>(state: &'a ClusterState, task: &'a Task) -> &'a str {
    match &task.node_id {
        Some(id) => state.nodes.get(id).map_or(id.as_str(), |n| n.name.as_str()),
        None => "",
    }
}

/// Whether a task ended badly: failed, rejected, or with an error message.
pub(crate) fn failed(task: &Task) -> bool {
    matches!(task.status.state, TaskState::Failed | TaskState::Rejected) || !task.status.err.is_empty()
}

fn nodes(out: &mut String, v: &View<'_>) {
    let _ = writeln!(out, "<h2>Nodes ({})</h2>", v.state.nodes.len());
    head(out, "nodes", &["name", "role", "state", "availability", "leader", "address", "engine"]);
    for n in v.state.nodes.values() {
        out.push_str("<tr>");
        td(out, "", &n.name);
        td(out, "", n.role.as_str());
        let state = metrics::node_state(n.state);
        td(out, if state == "ready" { "ok" } else { "bad" }, state);
        td(out, if n.availability.as_str() == "active" { "" } else { "warn" }, n.availability.as_str());
        td(out, "", if v.leader == Some(n.id.as_str()) { "leader" } else { "" });
        td(out, "", &n.addr);
        td(out, "", &n.engine_version);
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn stacks(out: &mut String, v: &View<'_>) {
    let _ = writeln!(out, "<h2>Stacks ({})</h2>", v.state.stacks.len());
    head(out, "stacks", &["name", "services", "tasks (running/desired)", "deployed"]);
    for st in v.state.stacks.values() {
        let services: Vec<&Service> = v.state.services.values().filter(|s| s.stack == st.name).collect();
        let (running, desired) = services
            .iter()
            .map(|s| service_counts(v.state, s))
            .fold((0, 0), |a, c| (a.0 + c.running, a.1 + c.desired.saturating_sub(c.completed)));
        out.push_str("<tr>");
        td(out, "", &st.name);
        td(out, "", &services.len().to_string());
        td(out, if running < desired { "warn" } else { "" }, &format!("{running}/{desired}"));
        td(out, "", &rfc3339(st.updated_at));
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn services(out: &mut String, v: &View<'_>) {
    let _ = writeln!(out, "<h2>Services ({})</h2>", v.state.services.len());
    head(out, "services", &["name", "mode", "replicas (running/desired)", "image", "revision", "rollout", "failures"]);
    for s in v.state.services.values() {
        let c = service_counts(v.state, s);
        let replicas = if s.spec.mode.is_job() {
            format!("{}/{} ({} completed)", c.running, c.desired, c.completed)
        } else {
            format!("{}/{}", c.running, c.desired)
        };
        let rollout = metrics::rollout_state(s.update.state);
        let rollout_text =
            if s.update.message.is_empty() { rollout.to_string() } else { format!("{rollout}: {}", s.update.message) };
        let rollout_class = match s.update.state {
            UpdateState::Completed => "",
            UpdateState::Updating | UpdateState::RollingBack => "warn",
            _ => "bad",
        };
        out.push_str("<tr>");
        td(out, "", &s.name);
        td(out, "", mode(&s.spec.mode));
        td(out, if c.running + c.completed < c.desired { "warn" } else { "" }, &replicas);
        td(out, "", &s.spec.task.image);
        td(out, "", &s.revision.to_string());
        td(out, rollout_class, &rollout_text);
        td(out, if s.task_failures > 0 { "bad" } else { "" }, &s.task_failures.to_string());
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn tasks(out: &mut String, v: &View<'_>) {
    let current: Vec<&Task> = v.state.tasks.values().filter(|t| t.occupies_slot()).collect();
    let _ = writeln!(out, "<h2>Tasks ({})</h2>", current.len());
    head(out, "tasks", &["service", "slot", "node", "state", "health", "since", "message"]);
    for t in current {
        let message = if !t.unplaceable.is_empty() {
            format!("pending: {}", t.unplaceable)
        } else if !t.status.err.is_empty() {
            t.status.err.clone()
        } else {
            t.status.message.clone()
        };
        let state = t.status.state.as_str();
        out.push_str("<tr>");
        td(out, "", &t.service_name);
        td(out, "", &if t.slot == 0 { "global".to_string() } else { t.slot.to_string() });
        td(out, "", node_name(v.state, t));
        td(
            out,
            if t.is_up() {
                "ok"
            } else if failed(t) {
                "bad"
            } else {
                "warn"
            },
            state,
        );
        td(out, "", &t.status.health);
        td(out, "", &rfc3339(t.status.timestamp));
        td(out, "", &message);
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");

    let mut bad: Vec<&Task> = v.state.tasks.values().filter(|t| failed(t)).collect();
    bad.sort_by_key(|t| std::cmp::Reverse(t.status.timestamp));
    let _ = writeln!(out, "<h2>Failed tasks ({})</h2>", bad.len());
    if bad.is_empty() {
        out.push_str("<p id=\"failed-tasks\">None.</p>\n");
        return;
    }
    if bad.len() > FAILED_SHOWN {
        let _ = writeln!(out, "<p><small>The newest {FAILED_SHOWN}; `stackctl ps` lists them all.</small></p>");
    }
    head(out, "failed-tasks", &["service", "slot", "node", "state", "when", "exit code", "error"]);
    for t in bad.into_iter().take(FAILED_SHOWN) {
        out.push_str("<tr>");
        td(out, "", &t.service_name);
        td(out, "", &if t.slot == 0 { "global".to_string() } else { t.slot.to_string() });
        td(out, "", node_name(v.state, t));
        td(out, "bad", t.status.state.as_str());
        td(out, "", &rfc3339(t.status.timestamp));
        td(out, "", &t.status.exit_code.map(|c| c.to_string()).unwrap_or_default());
        let err = if t.status.err.is_empty() { &t.status.message } else { &t.status.err };
        td(out, "err", err);
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn events(out: &mut String, v: &View<'_>) {
    let _ = writeln!(out, "<h2>Recent events</h2>");
    if v.events.is_empty() {
        out.push_str("<p id=\"events\">None kept.</p>\n");
        return;
    }
    head(out, "events", &["time", "kind", "action", "name", "stack", "message"]);
    for e in v.events.iter().rev().take(EVENTS_SHOWN) {
        out.push_str("<tr>");
        td(out, "", &rfc3339(e.at));
        td(out, "", kind(e.kind));
        td(out, "", action(e.action));
        td(out, "", &e.name);
        td(out, "", &e.stack);
        td(out, "", &e.message);
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// The status page of `v`.
pub(crate) fn status_page(v: &View<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<header><h1>stackd status</h1><p>Cluster <code>{}</code>, served by manager <b>{}</b> at {} \
         · signed in as <b id=\"viewer\">{}</b> ({}) \
         · <a href=\"/\">refresh</a> \
         · <form method=\"post\" action=\"/logout\"><button type=\"submit\" id=\"sign-out\">Sign out</button></form></p></header>",
        escape(&v.state.cluster_id),
        escape(v.served_by),
        escape(&rfc3339(v.now)),
        escape(v.viewer.0),
        escape(v.viewer.1),
    );
    if v.leader.is_none() {
        out.push_str("<p class=\"note\">No leader is known: the cluster may have lost its quorum.</p>\n");
    }
    if let Some(why) = v.may_lag {
        let _ = writeln!(
            out,
            "<p class=\"note\" id=\"may-lag\">This manager's own state, which may lag: {}</p>",
            escape(why)
        );
    }
    nodes(&mut out, v);
    stacks(&mut out, v);
    services(&mut out, v);
    tasks(&mut out, v);
    events(&mut out, v);
    page("stackd status", &out)
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
