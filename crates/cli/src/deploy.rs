//! `stackctl deploy`: load, validate, send, and with `--wait` follow the
//! rollout until every service of the stack has converged or failed. A job
//! (`replicated-job`, `global-job`) is done when its run completed; one that
//! cannot complete (its restart policy gave up on a failed task) makes the
//! deploy exit 1, with the task and its exit code in the message.
//!
//! The stack files are interpolated with the process environment and the
//! `.env` file (see `stackfile`). Nothing is sent when a stack file or the
//! `.env` file has an error: every error is printed with file:line:column
//! and key path, and the exit code is 1.
//!
//! With several managers in `--addr`, a manager that goes away is not fatal:
//! the deploy (idempotent) is sent to the next one, and `--wait` follows the
//! rollout on another manager when its event stream breaks (watch again,
//! list again) until the timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use stackd_core::model::UpdateState;
use stackd_proto::v1;
use tokio_stream::StreamExt;

use crate::args::{DeployArgs, Global};
use crate::client::{Conn, connect, status};
use crate::inspect::{replicas, summary};
use crate::output::name;
use crate::stackfile;
use crate::{EXIT_ERROR, EXIT_OK, EXIT_PAUSED, EXIT_ROLLED_BACK, EXIT_TIMEOUT};

/// Runs `stackctl deploy`.
pub async fn deploy(g: &Global, args: &DeployArgs) -> Result<i32> {
    let loaded = stackfile::load(&args.stack, &args.source)?;
    let mut c = connect(g).await?;
    if args.dry_run {
        return crate::dryrun::show(g, c.client(), &loaded.spec, args.prune).await;
    }
    // Watch before deploying so that no change is missed.
    let watch = v1::WatchEventsRequest { stack: args.stack.clone() };
    let mut events = if args.wait { Some(watch_events(&mut c, &watch).await.map_err(status)?) } else { None };
    // DeployStack is idempotent: it may go to the next manager even when the
    // first one applied it before failing (that one then reports "up to date").
    let req = v1::DeployStackRequest { spec: Some((&loaded.spec).into()), prune: args.prune };
    let resp = c
        .read(|mut c| {
            let req = req.clone();
            async move { c.deploy_stack(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    for s in &resp.created {
        out!("Creating service {s}");
    }
    for s in &resp.updated {
        out!("Updating service {s}");
    }
    for s in &resp.removed {
        out!("Removing service {s}");
    }
    if resp.created.is_empty() && resp.updated.is_empty() && resp.removed.is_empty() {
        out!("Stack {} is up to date", args.stack);
    }
    let Some(events) = events.as_mut() else { return Ok(EXIT_OK) };
    follow(
        &mut c,
        &watch,
        events,
        Following { stack: &args.stack, only: None, rollback_is_success: false },
        args.timeout,
    )
    .await
}

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

/// Follows the rollout of a stack's services (or one of them) until they
/// have converged (exit 0), paused (3), rolled back after a failure (2), a
/// job cannot complete (1), or `timeout` passed (4): one line per service
/// each time its progress changes.
pub(crate) async fn follow(
    c: &mut Conn,
    watch: &v1::WatchEventsRequest,
    events: &mut tonic::Streaming<v1::Event>,
    what: Following<'_>,
    timeout: Duration,
) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    // The last progress line printed for each service: a line is printed when it changes.
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let services = c
            .read(|mut c| async move {
                c.list_services(v1::ListServicesRequest { stack: what.stack.to_string(), stale: false }).await
            })
            .await
            .map_err(status)?
            .into_inner()
            .services;
        let mut all_done = true;
        let mut jobs = false;
        let mut paused = Vec::new();
        let mut rolled_back = Vec::new();
        let mut failed = Vec::new();
        for s in services {
            let (svc, counts) = summary(s)?;
            if what.only.is_some_and(|only| only != svc.name) {
                continue;
            }
            let job = svc.spec.mode.is_job();
            jobs |= job;
            let (state, message) = (svc.update.state, &svc.update.message);
            let tasks = if job {
                replicas(&svc.spec.mode, counts)
            } else {
                format!("{}/{} running", counts.running, counts.desired)
            };
            let msg = if message.is_empty() { String::new() } else { format!(": {message}") };
            let line = format!("{}: {tasks}, {}{msg}", svc.name, name(&state));
            if last.get(&svc.name) != Some(&line) {
                out!("{line}");
                last.insert(svc.name.clone(), line);
            }
            let converged = job || counts.running == counts.desired;
            match state {
                // A job is done when its run completed; its tasks no longer run.
                UpdateState::Completed if converged => {}
                UpdateState::RolledBack if what.rollback_is_success && converged => {}
                UpdateState::Paused => paused.push(svc.name.clone()),
                UpdateState::RolledBack if !what.rollback_is_success => rolled_back.push(svc.name.clone()),
                UpdateState::Failed => failed.push((svc.name.clone(), message.clone())),
                _ => all_done = false,
            }
        }
        let subject = match what.only {
            Some(service) => format!("service {service}"),
            None => format!("stack {}", what.stack),
        };
        if !failed.is_empty() {
            for (job, why) in &failed {
                eprintln!("job {job} cannot complete: {why}");
            }
            return Ok(EXIT_ERROR);
        }
        if !paused.is_empty() {
            let verb = if what.only.is_some() { "rollout" } else { "deploy" };
            eprintln!("{verb} failed and paused: {}", paused.join(", "));
            return Ok(EXIT_PAUSED);
        }
        if all_done && !rolled_back.is_empty() {
            let verb = if what.only.is_some() { "rollout" } else { "deploy" };
            eprintln!("{verb} failed and was rolled back: {}", rolled_back.join(", "));
            return Ok(EXIT_ROLLED_BACK);
        }
        if all_done {
            let jobs = if jobs { ", every job completed" } else { "" };
            match what.only {
                Some(service) => out!("Service {service} converged{jobs}"),
                None => out!("Stack {} deployed: every service converged{jobs}", what.stack),
            }
            return Ok(EXIT_OK);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            eprintln!("timed out after {timeout:?} waiting for {subject} to converge");
            return Ok(EXIT_TIMEOUT);
        }
        let broken = tokio::select! {
            e = events.next() => match e {
                Some(Ok(_)) => None,
                Some(Err(s)) => Some(format!("watching events failed: {}", s.message())),
                None => Some("the manager closed the event stream".to_string()),
            },
            _ = tick.tick() => None,
            _ = tokio::time::sleep(remaining) => None,
        };
        if let Some(why) = broken {
            // Watch again (on the next manager that answers), then list again
            // at the top of the loop: what happened meanwhile is not missed.
            eprintln!(
                "{why}; following the {} through another manager",
                if what.only.is_some() { "rollout" } else { "deploy" }
            );
            *events = rewatch(c, watch, deadline).await?;
        }
    }
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
async fn rewatch(c: &mut Conn, req: &v1::WatchEventsRequest, deadline: Instant) -> Result<tonic::Streaming<v1::Event>> {
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
            return Err(error.context("lost the managers while following the deploy"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
