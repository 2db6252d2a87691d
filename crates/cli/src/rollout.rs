//! `stackctl service update --force|--resume`, `service rollback [--to N]`
//! (each with `--wait` and the exit codes of `deploy`), and `service
//! history`.

use anyhow::{Result, bail};
use stackd_core::model::{ImagePin, Service, ServiceSpec, UpdateState, UpdateStatus};
use stackd_proto::v1;

use crate::EXIT_OK;
use crate::args::{Global, WaitArgs};
use crate::client::{Conn, connect, status};
use crate::follow::{Display, Following, follow, json_line, watch_events};
use crate::output::{name, print_rows};

/// What `update` asks for.
#[derive(Clone, Copy, Debug)]
pub enum What {
    /// Replace every task (`--force`).
    Force,
    /// Continue a paused rollout.
    Resume,
    /// Roll back to the revision before, or to this one.
    Rollback(Option<u64>),
    /// Set the replica count (and turn the autoscaler off).
    Scale(u64, bool),
    /// Even out the spread over the nodes.
    Rebalance,
}

/// Runs `service scale`: every change is sent first, then, with --wait,
/// each service is followed in turn within the one timeout; the exit code
/// is the worst of them (an error first, then timeout, paused, rolled back).
pub async fn scale(g: &Global, targets: &[(String, u64)], disable_autoscale: bool, wait: &WaitArgs) -> Result<i32> {
    let mut display = Display::new(g.output);
    let mut sent = Vec::new();
    for (service, n) in targets {
        sent.push(send(g, service, What::Scale(*n, disable_autoscale), wait.wait, &display).await?);
    }
    let started = std::time::Instant::now();
    let mut worst = EXIT_OK;
    for s in sent {
        let left = wait.timeout.saturating_sub(started.elapsed());
        let code = finish(s, &mut display, left).await?;
        if code != EXIT_OK && (worst == EXIT_OK || code == crate::EXIT_ERROR) {
            worst = code;
        }
    }
    Ok(worst)
}

/// Runs `service update`, `rollback` or `rebalance`.
pub async fn update(g: &Global, service: &str, what: What, wait: &WaitArgs) -> Result<i32> {
    let mut display = Display::new(g.output);
    let sent = send(g, service, what, wait.wait, &display).await?;
    finish(sent, &mut display, wait.timeout).await
}

/// A change sent, and what following it needs.
struct Sent {
    c: Conn,
    watch: v1::WatchEventsRequest,
    /// The stack's events, watched since before the change (with --wait).
    events: Option<tonic::Streaming<v1::Event>>,
    stack: String,
    service: String,
    rollback: bool,
}

/// Sends one change of a service (watching its stack first when `wait`).
async fn send(g: &Global, service: &str, what: What, wait: bool, display: &Display) -> Result<Sent> {
    let mut c = connect(g).await?;
    // The service's stack, to watch its events before the change (nothing missed).
    let svc = inspect(&mut c, service).await?;
    let watch = v1::WatchEventsRequest { stack: svc.stack.clone(), ..Default::default() };
    let events = if wait { Some(watch_events(&mut c, &watch).await.map_err(status)?) } else { None };
    let mut req = v1::UpdateServiceRequest { service: svc.name.clone(), ..Default::default() };
    match what {
        What::Force => req.force = true,
        What::Resume => req.resume = true,
        What::Rollback(to) => {
            req.rollback = true;
            req.to = to;
        }
        What::Scale(n, off) => {
            req.replicas = Some(n);
            req.disable_autoscale = off;
        }
        What::Rebalance => req.rebalance = true,
    }
    // Not retried on another manager: a second force or rollback would make a second revision.
    let resp = c.client().update_service(req).await.map_err(status)?.into_inner();
    let action = match what {
        What::Force => "force",
        What::Resume => "resume",
        What::Rollback(_) => "rollback",
        What::Scale(..) => "scale",
        What::Rebalance => "rebalance",
    };
    if let Display::Json = display {
        json_line(&Updated { kind: "update", action, service: &resp.service, revision: resp.revision });
    } else {
        display.info(&match what {
            What::Force => {
                format!("Updating service {} (revision {}: every task replaced)", resp.service, resp.revision)
            }
            What::Resume => format!("Resuming the rollout of {} (revision {})", resp.service, resp.revision),
            What::Rollback(_) => format!("Rolling back service {} (revision {})", resp.service, resp.revision),
            What::Scale(n, false) => format!("Scaling service {} to {n} (revision {})", resp.service, resp.revision),
            What::Scale(n, true) => format!(
                "Scaling service {} to {n} (revision {}); its autoscaler is off until the stack is deployed again",
                resp.service, resp.revision
            ),
            What::Rebalance => format!("Rebalancing service {}", resp.service),
        });
    }
    Ok(Sent { c, watch, events, stack: resp.stack, service: resp.service, rollback: matches!(what, What::Rollback(_)) })
}

/// Follows a sent change until it converged or failed (nothing to follow
/// without --wait: exit 0).
async fn finish(sent: Sent, display: &mut Display, timeout: std::time::Duration) -> Result<i32> {
    let Sent { mut c, watch, events, stack, service, rollback } = sent;
    let Some(mut events) = events else { return Ok(EXIT_OK) };
    let following = Following { stack: &stack, only: Some(&service), rollback_is_success: rollback };
    follow(&mut c, &watch, &mut events, following, display, timeout).await
}

/// What `service update|rollback --output json` prints first.
#[derive(serde::Serialize)]
struct Updated<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// `force`, `resume`, `rollback`, `scale` or `rebalance`.
    action: &'static str,
    service: &'a str,
    revision: u64,
}

async fn inspect(c: &mut crate::client::Conn, service: &str) -> Result<Service> {
    let resp = crate::inspect::fetch_service(c, service, false).await?;
    let Some(svc) = resp.service.and_then(|s| s.service) else { bail!("the manager sent no service") };
    Ok(Service::try_from(svc)?)
}

/// A revision as `service history` shows it.
#[derive(serde::Serialize)]
struct Row {
    revision: u64,
    deployed_at: u64,
    image: String,
    /// What its tasks run: the digest the tag meant, or `tag (why)`.
    runs: String,
    /// What changed from the revision before (`path: old -> new`, `;`-joined).
    changes: String,
    current: bool,
    /// How its rollout ended (`completed`, `paused: why`, `rolled back:
    /// why`); for the current revision, where it stands.
    rollout: String,
}

/// The changed fields between two specs, in a few words.
fn changes(before: Option<&ServiceSpec>, after: &ServiceSpec) -> String {
    let Some(before) = before else { return "first kept revision".into() };
    let Some(d) = stackd_core::diff::service(before, after) else { return "no change".into() };
    let changed: Vec<String> = d
        .changes
        .iter()
        .filter(|c| c.path != "task.force_update")
        .map(|c| format!("{}: {} -> {}", c.path, c.from, c.to))
        .collect();
    let forced = d.changes.iter().any(|c| c.path == "task.force_update");
    match (changed.is_empty(), forced) {
        (true, true) => "no change: a forced update (every task replaced)".into(),
        (true, false) => "no change".into(),
        (false, _) => changed.join("; "),
    }
}

/// Runs `service history`.
pub async fn history(g: &Global, service: &str) -> Result<i32> {
    let mut c = connect(g).await?;
    let svc = inspect(&mut c, service).await?;
    type Kept<'a> = (u64, u64, &'a ServiceSpec, &'a ImagePin, Option<&'a UpdateStatus>);
    let mut revisions: Vec<Kept<'_>> =
        svc.history.iter().map(|r| (r.revision, r.deployed_at, &r.spec, &r.image, r.rollout.as_ref())).collect();
    revisions.push((svc.revision, svc.updated_at, &svc.spec, &svc.image, Some(&svc.update)));
    let rows: Vec<Row> = revisions
        .iter()
        .enumerate()
        .map(|(k, (rev, at, spec, pin, status))| {
            let current = *rev == svc.revision;
            // How its rollout ended (the current one: where it stands);
            // `rolling_back` for a past one: it failed and was rolled back.
            let rollout = match status {
                None => "-".to_string(),
                Some(u) if !current && u.state == UpdateState::RollingBack => {
                    format!("rolled back: {}", u.message)
                }
                Some(u) if u.message.is_empty() => name(&u.state),
                Some(u) => format!("{}: {}", name(&u.state), u.message),
            };
            Row {
                revision: *rev,
                deployed_at: *at,
                image: spec.task.image.clone(),
                runs: match pin {
                    ImagePin::Digest { reference } => reference.clone(),
                    ImagePin::Pending => "resolving".into(),
                    ImagePin::Tag { reason } => format!("the tag ({reason})"),
                },
                changes: changes(k.checked_sub(1).map(|j| revisions[j].2), spec),
                current,
                rollout,
            }
        })
        .collect();
    print_rows(&rows, &["revision", "deployed_at", "image", "runs", "changes", "rollout"], g.output)?;
    Ok(EXIT_OK)
}
