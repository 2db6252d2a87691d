//! `stackctl deploy`: load, validate, send, and with `--wait` follow the
//! rollout until every service of the stack has converged or failed.
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
use crate::inspect::summary;
use crate::output::name;
use crate::stackfile;
use crate::{EXIT_OK, EXIT_PAUSED, EXIT_ROLLED_BACK, EXIT_TIMEOUT};

/// Where one service's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Progress {
    running: u64,
    desired: u64,
    state: UpdateState,
    message: String,
}

/// Runs `stackctl deploy`.
pub async fn deploy(g: &Global, args: &DeployArgs) -> Result<i32> {
    let loaded = stackfile::load(&args.stack, &args.files, args.env_file.as_deref())?;
    let mut c = connect(&g.addr).await?;
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
    let mut last: BTreeMap<String, Progress> = BTreeMap::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let services = c
            .list_services(v1::ListServicesRequest { stack: args.stack.clone(), stale: false })
            .await
            .map_err(status)?
            .into_inner()
            .services;
        let mut all_done = true;
        let mut paused = Vec::new();
        let mut rolled_back = Vec::new();
        for s in services {
            let (svc, running, desired) = summary(s)?;
            let p = Progress { running, desired, state: svc.update.state, message: svc.update.message.clone() };
            if last.get(&svc.name) != Some(&p) {
                let state = name(&p.state);
                let msg = if p.message.is_empty() { String::new() } else { format!(": {}", p.message) };
                println!("{}: {running}/{desired} running, {state}{msg}", svc.name);
                last.insert(svc.name.clone(), p.clone());
            }
            match p.state {
                UpdateState::Completed if running == desired => {}
                UpdateState::Paused => paused.push(svc.name.clone()),
                UpdateState::RolledBack => rolled_back.push(svc.name.clone()),
                _ => all_done = false,
            }
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
            println!("Stack {} deployed: every service converged", args.stack);
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
