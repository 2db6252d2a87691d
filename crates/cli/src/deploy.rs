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
//! list again) until the timeout. How progress shows: see `follow`.

use anyhow::Result;
use serde::Serialize;
use stackd_proto::v1;

use crate::EXIT_OK;
use crate::args::{DeployArgs, Global};
use crate::client::{connect, status};
use crate::follow::{Display, Following, follow, json_line, watch_events};
use crate::stackfile;

/// What a deploy changed, as `--output json` prints it (the first object).
#[derive(Serialize)]
struct Deployed<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    stack: &'a str,
    created: &'a [String],
    updated: &'a [String],
    removed: &'a [String],
}

/// Runs `stackctl deploy`.
pub async fn deploy(g: &Global, args: &DeployArgs) -> Result<i32> {
    let mut loaded = stackfile::load(&args.stack, &args.source)?;
    if let Some(pull) = args.pull {
        let policy = match pull {
            crate::args::PullArg::Always => stackd_core::model::PullPolicy::Always,
            crate::args::PullArg::Missing => stackd_core::model::PullPolicy::Missing,
            crate::args::PullArg::Never => stackd_core::model::PullPolicy::Never,
        };
        for service in loaded.spec.services.values_mut() {
            service.task.pull_policy = policy;
        }
    }
    // Read before anything is sent: a credential that cannot be read stops the deploy.
    let registry_auth = if args.with_registry_auth {
        let images = loaded.spec.services.values().map(|s| s.task.image.as_str());
        Some(v1::RegistryAuth::from(&crate::registry_auth::for_images(images)?))
    } else {
        None
    };
    let mut c = connect(g).await?;
    if args.dry_run {
        return crate::dryrun::show(g, c.client(), &loaded.spec, args.prune).await;
    }
    // Watch before deploying so that no change is missed.
    let watch = v1::WatchEventsRequest { stack: args.stack.clone(), ..Default::default() };
    let mut events = if args.wait { Some(watch_events(&mut c, &watch).await.map_err(status)?) } else { None };
    // DeployStack is idempotent: it may go to the next manager even when the
    // first one applied it before failing (that one then reports "up to date").
    let req = v1::DeployStackRequest { spec: Some((&loaded.spec).into()), prune: args.prune, registry_auth };
    let resp = c
        .read(|mut c| {
            let req = req.clone();
            async move { c.deploy_stack(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut display = Display::new(g.output);
    if let Display::Json = display {
        json_line(&Deployed {
            kind: "deploy",
            stack: &args.stack,
            created: &resp.created,
            updated: &resp.updated,
            removed: &resp.removed,
        });
    } else {
        for s in &resp.created {
            display.info(&format!("Creating service {s}"));
        }
        for s in &resp.updated {
            display.info(&format!("Updating service {s}"));
        }
        for s in &resp.removed {
            display.info(&format!("Removing service {s}"));
        }
        if resp.created.is_empty() && resp.updated.is_empty() && resp.removed.is_empty() {
            if args.with_registry_auth {
                display.info(&format!("Stack {} is up to date; its registry credentials were replaced", args.stack));
            } else {
                display.info(&format!("Stack {} is up to date", args.stack));
            }
        }
    }
    let Some(events) = events.as_mut() else { return Ok(EXIT_OK) };
    follow(
        &mut c,
        &watch,
        events,
        Following { stack: &args.stack, only: None, rollback_is_success: false },
        &mut display,
        args.timeout,
    )
    .await
}
