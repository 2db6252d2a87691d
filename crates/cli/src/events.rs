//! `stackctl events [--stack S] [--since D] [-f]`: the cluster's events
//! (deploys, service revisions and rollouts, task states, nodes) as text,
//! or one JSON object per line with `-o json`.
//!
//! The managers keep the last 10,000 events, the same on each of them
//! (`stackd_core::journal`). Without `-f`, those kept (of the last `--since`)
//! are printed; with `-f`, new ones follow as they happen, and when the
//! manager watched goes away the watch resumes on another one right after
//! the last event printed: none lost, none twice.

use std::time::Duration;

use anyhow::Result;
use stackd_proto::v1;
use tokio_stream::StreamExt;

use crate::EXIT_OK;
use crate::args::{EventsArgs, Global, Output};
use crate::client::{connect, manager_gone, status};
use crate::follow::{EventLine, json_line, watch_events};
use crate::output::now_ms;

/// Runs `stackctl events`.
pub async fn events(g: &Global, args: &EventsArgs) -> Result<i32> {
    let mut c = connect(g).await?;
    let since_at = args.since.map(|d| now_ms().saturating_sub(d.as_millis() as u64));
    let started = now_ms();
    let mut req = v1::WatchEventsRequest {
        stack: args.stack.clone().unwrap_or_default(),
        // -f alone follows new events only; otherwise the kept ones first.
        history: !args.follow || since_at.is_some(),
        since_at: since_at.unwrap_or(0),
        kept_only: !args.follow,
        ..Default::default()
    };
    // The place of the last event printed: where a new watch resumes.
    let mut last: Option<(u64, u32, u64)> = None;
    loop {
        let why = match watch_events(&mut c, &req).await {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Some(Ok(e)) => {
                        print(&e, g.output);
                        last = Some((e.index, e.seq, e.at));
                    }
                    None if !args.follow => return Ok(EXIT_OK),
                    None => break "the manager closed the event stream".to_string(),
                    Some(Err(s)) if args.follow && manager_gone(&s) => break s.message().to_string(),
                    Some(Err(s)) if matches!(s.code(), tonic::Code::OutOfRange | tonic::Code::DataLoss) => {
                        // Events were dropped before they could be sent:
                        // say so, and go on from the oldest kept after the last one printed.
                        eprintln!("warning: some events were lost: {}", s.message());
                        req = v1::WatchEventsRequest {
                            history: true,
                            resume: false,
                            since_at: last.map_or(req.since_at, |(_, _, at)| at),
                            ..req.clone()
                        };
                        break String::new();
                    }
                    Some(Err(s)) => return Err(status(s)),
                }
            },
            Err(s) if args.follow && manager_gone(&s) => s.message().to_string(),
            Err(s) => return Err(status(s)),
        };
        if !why.is_empty() {
            eprintln!("warning: {why}; following the events through another manager");
            req = match last {
                Some((index, seq, _)) => v1::WatchEventsRequest {
                    resume: true,
                    after_index: index,
                    after_seq: seq,
                    history: false,
                    ..req.clone()
                },
                // Nothing printed yet: what happened since the start.
                None => v1::WatchEventsRequest {
                    history: true,
                    since_at: req.since_at.max(started.saturating_sub(1_000)),
                    ..req.clone()
                },
            };
            reconnect(&mut c).await;
        }
    }
}

/// Moves to the next manager that answers, once a second, until one does.
async fn reconnect(c: &mut crate::client::Conn) {
    let mut said = false;
    while let Err(e) = c.next().await {
        if !said {
            eprintln!("warning: no manager answers ({e:#}); trying again every second");
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print(e: &v1::Event, output: Output) {
    let line = EventLine::from(e);
    match output {
        Output::Json | Output::Yaml => json_line(&line),
        Output::Table => out!("{}", text(&line)),
    }
}

/// `2026-12-07T08:12:10.123Z task update app_web 0k3x9q2m7v1a: running`.
fn text(e: &EventLine) -> String {
    let id = if e.id == e.name { String::new() } else { format!(" {}", stackd_core::model::prefix(&e.id, 12)) };
    let message = if e.message.is_empty() { String::new() } else { format!(": {}", e.message) };
    format!("{} {} {} {}{id}{message}", stackd_core::model::rfc3339(e.at), e.kind, e.action, e.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_event() {
        let e = v1::Event {
            index: 7,
            seq: 1,
            kind: v1::ObjectKind::Task as i32,
            action: v1::EventAction::Update as i32,
            id: "0k3x9q2m7v1a5b".into(),
            name: "app_web".into(),
            stack: "app".into(),
            message: "running".into(),
            at: 0,
        };
        assert_eq!(text(&EventLine::from(&e)), "1970-01-01T00:00:00.000Z task update app_web 0k3x9q2m7v1a: running");
        let node = v1::Event { kind: v1::ObjectKind::Stack as i32, id: "app".into(), name: "app".into(), ..e };
        assert_eq!(text(&EventLine::from(&node)), "1970-01-01T00:00:00.000Z stack update app: running");
    }
}
