//! Following a rollout (`deploy --wait`, `service update|rollback --wait`)
//! until every service it touches has converged or failed, and showing its
//! progress: a live bar per service on a terminal, one plain line per change
//! otherwise, one JSON object per event with `--output json` (the fields are
//! documented in docs/gitlab-ci.md and stay stable).
//!
//! The managers are asked for the services and their tasks at each event
//! of the stack (a burst of events makes one look) and once a second; the
//! progress of each service is a pure function of what they answer
//! ([`progress::of_service`]). With several managers, a broken event stream
//! is watched again on the next one, and the lists taken again: nothing is
//! missed.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use stackd_core::model::UpdateState;
use stackd_proto::v1;
use tokio_stream::StreamExt;

use crate::args::Output;
use crate::client::{Conn, status};
use crate::inspect::summary;
use crate::progress::{self, Progress};
use crate::{EXIT_ERROR, EXIT_OK, EXIT_PAUSED, EXIT_ROLLED_BACK, EXIT_TIMEOUT};

/// What [`follow`] waits for.
pub(crate) struct Following<'a> {
    /// The stack.
    pub stack: &'a str,
    /// Only this service of it (full name); `None`: every service.
    pub only: Option<&'a str>,
    /// A rollout that ends rolled back is what was asked for (`service
    /// rollback`), not a failure.
    pub rollback_is_success: bool,
}

/// How progress is shown.
pub(crate) enum Display {
    /// A bar per service, redrawn in place (standard output is a terminal).
    Live(Live),
    /// One line per service each time its progress changes.
    Lines,
    /// One JSON object per line and event (`--output json`).
    Json,
}

impl Display {
    /// The display for `output` on this process's standard output.
    pub(crate) fn new(output: Output) -> Display {
        match output {
            Output::Json => Display::Json,
            _ if std::io::stdout().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb") => {
                Display::Live(Live::default())
            }
            _ => Display::Lines,
        }
    }

    /// Prints a line of text (a JSON object with `--output json`, as
    /// `{"type": "info", "message": …}`).
    pub(crate) fn info(&self, text: &str) {
        match self {
            Display::Json => json_line(&Info { kind: "info", message: text }),
            Display::Live(live) => live.multi.suspend(|| out!("{text}")),
            Display::Lines => out!("{text}"),
        }
    }

    /// Prints a warning on standard error (a JSON object on standard output
    /// with `--output json`).
    pub(crate) fn warn(&self, text: &str) {
        match self {
            Display::Json => json_line(&Info { kind: "warning", message: text }),
            Display::Live(live) => live.multi.suspend(|| eprintln!("{text}")),
            Display::Lines => eprintln!("{text}"),
        }
    }

    fn progress(&mut self, p: &Progress) {
        match self {
            Display::Json => json_line(&Tagged { kind: "progress", body: p }),
            Display::Lines => out!("{}: {}", p.service, p.line()),
            Display::Live(live) => live.show(p),
        }
    }

    fn event(&self, e: &v1::Event) {
        if let Display::Json = self {
            json_line(&Tagged { kind: "event", body: &EventLine::from(e) });
        }
    }

    fn finish(&mut self) {
        if let Display::Live(live) = self {
            // As they stand: a bar is full only when its service converged.
            for bar in live.bars.values() {
                bar.abandon();
            }
        }
    }
}

/// The live bars.
#[derive(Default)]
pub(crate) struct Live {
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
}

impl Live {
    fn show(&mut self, p: &Progress) {
        let multi = &self.multi;
        let bar = self.bars.entry(p.service.clone()).or_insert_with(|| {
            multi.set_draw_target(ProgressDrawTarget::stdout());
            let bar = multi.add(ProgressBar::new(p.desired));
            let style = ProgressStyle::with_template("{prefix:.bold} [{bar:20.green/blue}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(p.service.clone());
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        bar.set_length(p.desired.max(1));
        bar.set_position(p.running.min(p.desired));
        bar.set_message(p.line());
    }
}

#[derive(Serialize)]
struct Info<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// A cluster event as `--output json` prints it.
#[derive(Serialize)]
pub(crate) struct EventLine {
    pub index: u64,
    pub seq: u32,
    /// Command time, ms since the Unix epoch.
    pub at: u64,
    pub kind: String,
    pub action: String,
    pub id: String,
    pub name: String,
    pub stack: String,
    pub message: String,
}

impl From<&v1::Event> for EventLine {
    fn from(e: &v1::Event) -> Self {
        let kind = v1::ObjectKind::try_from(e.kind).map(|k| k.as_str_name()).unwrap_or("OBJECT_KIND_UNSPECIFIED");
        let action = v1::EventAction::try_from(e.action).map(|a| a.as_str_name()).unwrap_or("EVENT_ACTION_UNSPECIFIED");
        EventLine {
            index: e.index,
            seq: e.seq,
            at: e.at,
            kind: kind.trim_start_matches("OBJECT_KIND_").to_lowercase(),
            action: action.trim_start_matches("EVENT_ACTION_").to_lowercase(),
            id: e.id.clone(),
            name: e.name.clone(),
            stack: e.stack.clone(),
            message: e.message.clone(),
        }
    }
}

/// Prints one JSON object on a line.
pub(crate) fn json_line<T: Serialize>(v: &T) {
    match serde_json::to_string(v) {
        Ok(s) => out!("{s}"),
        Err(e) => eprintln!("error: cannot encode an event as JSON: {e}"),
    }
}

/// The last line of `--output json`: how it ended.
#[derive(Serialize)]
struct Outcome<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// `converged`, `rolled_back`, `paused`, `failed` or `timeout`.
    outcome: &'static str,
    exit_code: i32,
    stack: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    /// The services that did not converge, each with why.
    not_converged: Vec<NotConverged>,
}

#[derive(Serialize)]
struct NotConverged {
    service: String,
    why: String,
}

/// Where a rollout stands, decided from the services' progress.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Converged,
    Failed(Vec<(String, String)>),
    Paused(Vec<String>),
    RolledBack(Vec<String>),
    Going,
}

fn verdict(all: &[(Progress, UpdateState)], rollback_is_success: bool) -> Verdict {
    let mut going = false;
    let (mut failed, mut paused, mut rolled_back) = (Vec::new(), Vec::new(), Vec::new());
    for (p, state) in all {
        match state {
            UpdateState::Completed if p.converged => {}
            UpdateState::RolledBack if rollback_is_success && p.converged => {}
            UpdateState::Paused => paused.push(p.service.clone()),
            UpdateState::RolledBack if !rollback_is_success => rolled_back.push(p.service.clone()),
            UpdateState::Failed => failed.push((p.service.clone(), p.message.clone())),
            _ => going = true,
        }
    }
    if !failed.is_empty() {
        Verdict::Failed(failed)
    } else if !paused.is_empty() {
        Verdict::Paused(paused)
    } else if !going && !rolled_back.is_empty() {
        Verdict::RolledBack(rolled_back)
    } else if going {
        Verdict::Going
    } else {
        Verdict::Converged
    }
}

/// Follows the rollout of a stack's services (or one of them) until they
/// have converged (exit 0), paused (3), rolled back after a failure (2), a
/// job cannot complete (1), or `timeout` passed (4).
pub(crate) async fn follow(
    c: &mut Conn,
    watch: &v1::WatchEventsRequest,
    events: &mut tonic::Streaming<v1::Event>,
    what: Following<'_>,
    display: &mut Display,
    timeout: Duration,
) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    // What was last shown of each service: shown again when it changes.
    let mut last: BTreeMap<String, Progress> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let verb = if what.only.is_some() { "rollout" } else { "deploy" };
    loop {
        let all = look(c, &what).await?;
        for (p, _) in &all {
            if last.get(&p.service) != Some(p) {
                display.progress(p);
                last.insert(p.service.clone(), p.clone());
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (outcome, code) = match verdict(&all, what.rollback_is_success) {
            Verdict::Failed(failed) => {
                display.finish();
                for (job, why) in &failed {
                    display.warn(&format!("job {job} cannot complete: {why}"));
                }
                ("failed", EXIT_ERROR)
            }
            Verdict::Paused(paused) => {
                display.finish();
                display.warn(&format!("{verb} failed and paused: {}", paused.join(", ")));
                ("paused", EXIT_PAUSED)
            }
            Verdict::RolledBack(rolled_back) => {
                display.finish();
                display.warn(&format!("{verb} failed and was rolled back: {}", rolled_back.join(", ")));
                ("rolled_back", EXIT_ROLLED_BACK)
            }
            Verdict::Converged => {
                display.finish();
                let jobs = if all.iter().any(|(p, _)| p.job) { ", every job completed" } else { "" };
                match what.only {
                    Some(service) => display.info(&format!("Service {service} converged{jobs}")),
                    None => display.info(&format!("Stack {} deployed: every service converged{jobs}", what.stack)),
                }
                ("converged", EXIT_OK)
            }
            Verdict::Going if remaining.is_zero() => {
                display.finish();
                let subject = match what.only {
                    Some(service) => format!("service {service}"),
                    None => format!("stack {}", what.stack),
                };
                display.warn(&format!("timed out after {timeout:?} waiting for {subject} to converge"));
                // With --output json, the result below names them.
                if !matches!(display, Display::Json) {
                    for (p, _) in all.iter().filter(|(p, _)| !p.converged) {
                        display.warn(&format!("  {}: {}", p.service, p.why_not()));
                    }
                }
                ("timeout", EXIT_TIMEOUT)
            }
            Verdict::Going => {
                wait_for_news(c, watch, events, display, &what, deadline, &mut tick).await?;
                continue;
            }
        };
        if let Display::Json = display {
            let not_converged = all
                .iter()
                .filter(|(p, _)| !p.converged)
                .map(|(p, _)| NotConverged { service: p.service.clone(), why: p.why_not() })
                .collect();
            json_line(&Outcome {
                kind: "result",
                outcome,
                exit_code: code,
                stack: what.stack,
                service: what.only,
                not_converged,
            });
        }
        return Ok(code);
    }
}

/// The progress of each followed service, from the services and tasks the
/// managers list.
async fn look(c: &mut Conn, what: &Following<'_>) -> Result<Vec<(Progress, UpdateState)>> {
    let stack = what.stack.to_string();
    let services = c
        .read(|mut c| {
            let stack = stack.clone();
            async move { c.list_services(v1::ListServicesRequest { stack, stale: false }).await }
        })
        .await
        .map_err(status)?
        .into_inner()
        .services;
    let req = v1::ListTasksRequest { stack, ..Default::default() };
    let (tasks, _) = crate::inspect::fetch_tasks(c, req).await?;
    let mut out = Vec::new();
    for s in services {
        let (svc, counts) = summary(s)?;
        if what.only.is_some_and(|only| only != svc.name) {
            continue;
        }
        out.push((progress::of_service(&svc, counts, &tasks), svc.update.state));
    }
    Ok(out)
}

/// Waits for an event of the stack (then a little longer, so that a burst
/// makes one look), the next tick, or the deadline. A broken stream is
/// watched again on the next manager that answers.
async fn wait_for_news(
    c: &mut Conn,
    watch: &v1::WatchEventsRequest,
    events: &mut tonic::Streaming<v1::Event>,
    display: &Display,
    what: &Following<'_>,
    deadline: Instant,
    tick: &mut tokio::time::Interval,
) -> Result<()> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let shown = |e: &v1::Event| what.only.is_none_or(|only| e.name == only);
    let broken = tokio::select! {
        e = events.next() => match e {
            Some(Ok(e)) => {
                if shown(&e) {
                    display.event(&e);
                }
                // Gather the rest of a burst for a moment.
                let until = tokio::time::Instant::now() + Duration::from_millis(150);
                loop {
                    match tokio::time::timeout_at(until, events.next()).await {
                        Ok(Some(Ok(e))) => if shown(&e) { display.event(&e) },
                        Ok(Some(Err(s))) => break Some(format!("watching events failed: {}", s.message())),
                        Ok(None) => break Some("the manager closed the event stream".to_string()),
                        Err(_) => break None,
                    }
                }
            }
            Some(Err(s)) => Some(format!("watching events failed: {}", s.message())),
            None => Some("the manager closed the event stream".to_string()),
        },
        _ = tick.tick() => None,
        _ = tokio::time::sleep(remaining) => None,
    };
    if let Some(why) = broken {
        // Watch again (on the next manager that answers), then list again:
        // what happened meanwhile is not missed.
        let verb = if what.only.is_some() { "rollout" } else { "deploy" };
        display.warn(&format!("{why}; following the {verb} through another manager"));
        *events = rewatch(c, watch, deadline).await?;
    }
    Ok(())
}

/// Opens the event stream of a stack.
pub(crate) async fn watch_events(
    c: &mut Conn,
    req: &v1::WatchEventsRequest,
) -> Result<tonic::Streaming<v1::Event>, tonic::Status> {
    c.read(|mut c| {
        let req = req.clone();
        async move { c.watch_events(req).await }
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Watches again after the event stream broke: on the next manager that
/// answers (the same one when it is the only one), once a second until
/// `deadline`.
pub(crate) async fn rewatch(
    c: &mut Conn,
    req: &v1::WatchEventsRequest,
    deadline: Instant,
) -> Result<tonic::Streaming<v1::Event>> {
    loop {
        let error = match c.next().await {
            Ok(()) => match watch_events(c, req).await {
                Ok(stream) => return Ok(stream),
                // A refusal (the token, the stack) will not change by waiting.
                Err(s) if !crate::client::manager_gone(&s) => return Err(status(s)),
                Err(s) => status(s),
            },
            Err(e) => e,
        };
        if Instant::now() + Duration::from_secs(1) >= deadline {
            return Err(error.context("lost the managers while following"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(service: &str, converged: bool) -> Progress {
        Progress {
            service: service.into(),
            revision: 1,
            running: 1,
            starting: 0,
            desired: 1,
            job: false,
            state: String::new(),
            message: "why".into(),
            waiting: String::new(),
            last_failure: String::new(),
            converged,
        }
    }

    #[test]
    fn the_verdict_waits_for_every_service() {
        use UpdateState::*;
        assert_eq!(verdict(&[(p("a", true), Completed), (p("b", true), Completed)], false), Verdict::Converged);
        assert_eq!(verdict(&[(p("a", true), Completed), (p("b", false), Updating)], false), Verdict::Going);
        // A rolled-back service waits for the others before the deploy says so.
        assert_eq!(verdict(&[(p("a", true), RolledBack), (p("b", false), Updating)], false), Verdict::Going);
        assert_eq!(verdict(&[(p("a", true), RolledBack)], false), Verdict::RolledBack(vec!["a".into()]));
        assert_eq!(verdict(&[(p("a", true), RolledBack)], true), Verdict::Converged);
        assert_eq!(verdict(&[(p("a", false), RolledBack)], true), Verdict::Going);
        assert_eq!(
            verdict(&[(p("a", false), Paused), (p("b", false), Updating)], false),
            Verdict::Paused(vec!["a".into()])
        );
        assert_eq!(
            verdict(&[(p("a", false), Failed), (p("b", false), Paused)], false),
            Verdict::Failed(vec![("a".into(), "why".into())])
        );
        // A service completed but not all running is not converged yet.
        assert_eq!(verdict(&[(p("a", false), Completed)], false), Verdict::Going);
    }
}
