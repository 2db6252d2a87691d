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

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use stackd_core::model::UpdateState;
use stackd_proto::v1;
use tokio_stream::StreamExt;

use crate::args::{DeployArgs, Global};
use crate::client::{connect, status};
use crate::inspect::{replicas, summary};
use crate::output::name;
use crate::stackfile;
use crate::{EXIT_ERROR, EXIT_OK, EXIT_PAUSED, EXIT_ROLLED_BACK, EXIT_TIMEOUT};

/// Runs `stackctl deploy`.
pub async fn deploy(g: &Global, args: &DeployArgs) -> Result<i32> {
    let loaded = stackfile::load(&args.stack, &args.source)?;
    let mut c = connect(g).await?;
    if args.dry_run {
        return crate::dryrun::show(g, &mut c, &loaded.spec, args.prune).await;
    }
    // Watch before deploying so that no change is missed.
    let mut events = if args.wait {
        Some(c.watch_events(v1::WatchEventsRequest { stack: args.stack.clone() }).await.map_err(status)?.into_inner())
    } else {
        None
    };
    let resp = c
        .deploy_stack(v1::DeployStackRequest { spec: Some((&loaded.spec).into()), prune: args.prune })
        .await
        .map_err(status)?
        .into_inner();
    for s in &resp.created {
        println!("Creating service {s}");
    }
    for s in &resp.updated {
        println!("Updating service {s}");
    }
    for s in &resp.removed {
        println!("Removing service {s}");
    }
    if resp.created.is_empty() && resp.updated.is_empty() && resp.removed.is_empty() {
        println!("Stack {} is up to date", args.stack);
    }
    let Some(events) = events.as_mut() else { return Ok(EXIT_OK) };

    let deadline = Instant::now() + args.timeout;
    // The last progress line printed for each service: a line is printed when it changes.
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let services = c
            .list_services(v1::ListServicesRequest { stack: args.stack.clone(), stale: false })
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
                println!("{line}");
                last.insert(svc.name.clone(), line);
            }
            match state {
                // A job is done when its run completed; its tasks no longer run.
                UpdateState::Completed if job || counts.running == counts.desired => {}
                UpdateState::Paused => paused.push(svc.name.clone()),
                UpdateState::RolledBack => rolled_back.push(svc.name.clone()),
                UpdateState::Failed => failed.push((svc.name.clone(), message.clone())),
                _ => all_done = false,
            }
        }
        if !failed.is_empty() {
            for (job, why) in &failed {
                eprintln!("job {job} cannot complete: {why}");
            }
            return Ok(EXIT_ERROR);
        }
        if !paused.is_empty() {
            eprintln!("deploy failed and paused: {}", paused.join(", "));
            return Ok(EXIT_PAUSED);
        }
        if all_done && !rolled_back.is_empty() {
            eprintln!("deploy failed and was rolled back: {}", rolled_back.join(", "));
            return Ok(EXIT_ROLLED_BACK);
        }
        if all_done {
            let jobs = if jobs { ", every job completed" } else { "" };
            println!("Stack {} deployed: every service converged{jobs}", args.stack);
            return Ok(EXIT_OK);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            eprintln!("timed out after {:?} waiting for stack {} to converge", args.timeout, args.stack);
            return Ok(EXIT_TIMEOUT);
        }
        tokio::select! {
            e = events.next() => match e {
                Some(Ok(_)) => {}
                Some(Err(s)) => anyhow::bail!("watching events failed: {}", s.message()),
                None => anyhow::bail!("the manager closed the event stream"),
            },
            _ = tick.tick() => {}
            _ = tokio::time::sleep(remaining) => {}
        }
    }
}
