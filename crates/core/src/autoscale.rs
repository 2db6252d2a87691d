//! The autoscaler's decision, pure: from a service's policy, the last
//! measurement of its load, the recommendations of the last minutes, its
//! current replicas and `now`, to the replicas it should run, why, and when
//! to look again.
//!
//! It behaves as Kubernetes' HorizontalPodAutoscaler does by default, so
//! that an operator can predict it:
//!
//! - **the proportional rule**: `ceil(current × measured / target)`, the
//!   measured value being the average per replica (CPU in percent of each
//!   task's `limits.cpus`, or of one core without a limit, as `docker
//!   stats` counts; or open connections per replica as the mesh sees them);
//! - **a tolerance band**: within ±[`TOLERANCE`] of the target nothing
//!   changes, so that the count does not flap on noise;
//! - **up fast, down slowly**: a rise takes effect at once (no
//!   stabilisation window by default); a fall only as far as the highest
//!   recommendation of the last `down_window` (5 minutes by default), so a
//!   load that dips and comes back keeps its replicas;
//! - **a bounded step**: at most doubling (or +[`UP_STEP_MIN`]) up, at most
//!   halving down, per decision;
//! - **never outside `[min, max]`**, even without metrics;
//! - **nothing while a rollout of the service runs**, and **nothing without
//!   a fresh measurement** (both say so).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{DesiredState, PortConfig, Protocol, PublishMode, ServiceMode, Task, TaskState, Timestamp};
use crate::validate::MAX_REPLICAS;

/// How far from the target the measurement may be with nothing done: 10 %.
pub const TOLERANCE: f64 = 0.1;
/// How often the leader decides for a service (ms), as the HPA's default sync.
pub const PERIOD: Timestamp = 15_000;
/// The scale-down window by default (ms): 5 minutes.
pub const DOWN_WINDOW: Timestamp = 300_000;
/// A measurement older than this (ms) counts as missing.
pub const STALE_AFTER: Timestamp = 3 * PERIOD;
/// The least a scale-up may add (a service of 1 may go to 1 + 4 at once).
pub const UP_STEP_MIN: u64 = 4;

/// What the replicas are measured by, and the value each should have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Average CPU per replica, in percent of the task's CPU limit (or of
    /// one core without one).
    Cpu {
        /// Percent of the limit (70 for `70%`).
        percent: u32,
    },
    /// Open connections per replica, as the routing mesh counts them.
    Connections {
        /// Connections each replica should hold.
        per_replica: u32,
    },
}

impl Target {
    /// The target value, in the measurement's unit.
    pub fn value(self) -> f64 {
        match self {
            Target::Cpu { percent } => f64::from(percent),
            Target::Connections { per_replica } => f64::from(per_replica),
        }
    }

    /// How a value of this target is written (`70%`, `100 connections`).
    pub fn describe(self, value: f64) -> String {
        match self {
            Target::Cpu { .. } => format!("{value:.0}% CPU"),
            Target::Connections { .. } => format!("{value:.1} connections"),
        }
    }
}

/// A service's autoscaling policy (`x-stackd-autoscale`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The fewest replicas.
    pub min: u64,
    /// The most replicas.
    pub max: u64,
    /// What is measured, and the value each replica should have.
    pub target: Target,
    /// The scale-down stabilisation window (ms).
    pub down_window: Timestamp,
    /// The scale-up stabilisation window (ms): 0, at once.
    pub up_window: Timestamp,
    /// How often the leader decides (ms): [`PERIOD`] by default.
    #[serde(default = "default_period")]
    pub period: Timestamp,
}

fn default_period() -> Timestamp {
    PERIOD
}

impl Policy {
    /// A policy with the defaults: no scale-up window, a 5-minute
    /// scale-down window, a decision every 15 s.
    pub fn new(min: u64, max: u64, target: Target) -> Policy {
        Policy { min, max, target, down_window: DOWN_WINDOW, up_window: 0, period: PERIOD }
    }

    /// `replicas` brought within `[min, max]` (a `max` below `min`, which
    /// validation refuses, counts as `min`).
    pub fn clamp(&self, replicas: u64) -> u64 {
        replicas.clamp(self.min, self.max.max(self.min))
    }

    /// What is wrong with the policy of a service of mode `mode` (whose
    /// replicas are where the autoscaler starts) that publishes `ports`;
    /// empty when it is good. The loader reports each problem at the key
    /// it names ([`PolicyError::key`]); [`validate`](crate::validate)
    /// checks the same for a spec that came through the API.
    pub fn problems(&self, mode: &ServiceMode, ports: &[PortConfig]) -> Vec<PolicyError> {
        let replicas = match mode {
            ServiceMode::Replicated { replicas } => *replicas,
            other => return vec![PolicyError::NotReplicated { mode: other.name() }],
        };
        let mut out = Vec::new();
        if self.min < 1 {
            out.push(PolicyError::MinZero);
        } else if self.max < self.min {
            out.push(PolicyError::MinAboveMax { min: self.min, max: self.max });
        }
        if self.max > MAX_REPLICAS {
            out.push(PolicyError::MaxTooHigh(self.max));
        }
        match self.target {
            Target::Cpu { percent } if !(1..=MAX_CPU_PERCENT).contains(&percent) => {
                out.push(PolicyError::CpuPercent(u64::from(percent)));
            }
            Target::Connections { per_replica: 0 } => out.push(PolicyError::Connections(0)),
            Target::Connections { .. } if !ports.iter().any(is_mesh_tcp) => out.push(PolicyError::NoMeshPort),
            _ => {}
        }
        if self.period < MIN_PERIOD {
            out.push(PolicyError::PeriodTooShort(self.period));
        }
        for (key, window) in [("scale_down_window", self.down_window), ("scale_up_window", self.up_window)] {
            if window > MAX_WINDOW {
                out.push(PolicyError::WindowTooLong { key, ms: window });
            }
        }
        if self.min >= 1 && self.max >= self.min {
            if replicas < self.min {
                out.push(PolicyError::ReplicasBelowMin { replicas, min: self.min });
            } else if replicas > self.max {
                out.push(PolicyError::ReplicasAboveMax { replicas, max: self.max });
            }
        }
        out
    }
}

/// The highest CPU target, in percent: ten cores' worth without a limit.
pub const MAX_CPU_PERCENT: u32 = 1000;
/// The shortest decision period (ms).
pub const MIN_PERIOD: Timestamp = 1000;
/// The longest stabilisation window (ms): an hour, as Kubernetes allows.
pub const MAX_WINDOW: Timestamp = 3_600_000;

/// Whether `p` is a TCP port published through the routing mesh, whose
/// connections the mesh counts.
fn is_mesh_tcp(p: &PortConfig) -> bool {
    p.published.is_some() && p.mode == PublishMode::Ingress && p.protocol == Protocol::Tcp
}

/// What is wrong with an autoscaling policy ([`Policy::problems`]); each
/// message is what the user reads, after the key ([`key`](Self::key)).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The service is global or a job.
    #[error(
        "autoscaling needs a replicated service: {}",
        if *mode == "global" { "global services run one task per node" } else { "a job runs to completion, it is not scaled by load" }
    )]
    NotReplicated {
        /// The service's mode (`global`, `replicated-job`, …).
        mode: &'static str,
    },
    /// `min: 0`.
    #[error("must be at least 1, got 0: an autoscaled service keeps a replica to measure")]
    MinZero,
    /// `min` above `max`.
    #[error("min {min} is above max {max}")]
    MinAboveMax {
        /// The policy's min.
        min: u64,
        /// The policy's max.
        max: u64,
    },
    /// `max` above [`MAX_REPLICAS`].
    #[error("at most {MAX_REPLICAS}, got {0}")]
    MaxTooHigh(u64),
    /// A CPU target outside 1–1000 %.
    #[error("must be a percentage from 1% to {MAX_CPU_PERCENT}%, got {0}%")]
    CpuPercent(u64),
    /// A connections target outside 1–`u32::MAX`.
    #[error("must be a whole number of connections per replica from 1 to {max}, got {0}", max = u32::MAX)]
    Connections(u64),
    /// A connections target on a service the mesh does not serve.
    #[error(
        "a connections target needs a TCP port published through the routing mesh (`published:` with `mode: ingress`): \
         the mesh is what counts the connections"
    )]
    NoMeshPort,
    /// `period` below [`MIN_PERIOD`].
    #[error("at least 1s, got {}", crate::compose::duration(*.0))]
    PeriodTooShort(Timestamp),
    /// A window above [`MAX_WINDOW`].
    #[error("at most 1h, got {}", crate::compose::duration(*ms))]
    WindowTooLong {
        /// `scale_down_window` or `scale_up_window`.
        key: &'static str,
        /// The window (ms).
        ms: Timestamp,
    },
    /// The starting replicas below `min`.
    #[error("replicas {replicas} is below x-stackd-autoscale.min {min}: replicas is where the autoscaler starts")]
    ReplicasBelowMin {
        /// `deploy.replicas`.
        replicas: u64,
        /// The policy's min.
        min: u64,
    },
    /// The starting replicas above `max`.
    #[error("replicas {replicas} is above x-stackd-autoscale.max {max}: replicas is where the autoscaler starts")]
    ReplicasAboveMax {
        /// `deploy.replicas`.
        replicas: u64,
        /// The policy's max.
        max: u64,
    },
}

impl PolicyError {
    /// The key the problem is about: a key of `x-stackd-autoscale` (`min`,
    /// `target.cpu`, …), empty for the policy as a whole, or
    /// `deploy.replicas` (a key of the service, outside the policy).
    pub fn key(&self) -> &'static str {
        match self {
            PolicyError::NotReplicated { .. } => "",
            PolicyError::MinZero | PolicyError::MinAboveMax { .. } => "min",
            PolicyError::MaxTooHigh(_) => "max",
            PolicyError::CpuPercent(_) => "target.cpu",
            PolicyError::Connections(_) | PolicyError::NoMeshPort => "target.connections",
            PolicyError::PeriodTooShort(_) => "period",
            PolicyError::WindowTooLong { key, .. } => key,
            PolicyError::ReplicasBelowMin { .. } | PolicyError::ReplicasAboveMax { .. } => "deploy.replicas",
        }
    }
}

/// The service's load over the last period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// When it was taken.
    pub at: Timestamp,
    /// The average per replica, in the target's unit.
    pub value: f64,
    /// The replicas it averages over (those running the whole period).
    pub replicas: u64,
}

/// A recommendation made at some time: what the load asked for then,
/// within `[min, max]`, before stabilisation and step bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    /// When it was made.
    pub at: Timestamp,
    /// The replicas it asked for.
    pub replicas: u64,
}

/// Why a decision is what it is.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// The count was outside `[min, max]` (a policy just set or changed).
    Bounds,
    /// A rollout of the service runs: nothing changes until it ends.
    Rollout,
    /// No fresh measurement: nothing changes.
    NoMetrics(String),
    /// Within the tolerance band.
    Tolerance {
        /// The measured value.
        value: f64,
    },
    /// The load asks for more.
    Up {
        /// The measured value.
        value: f64,
        /// The replicas it asks for.
        wanted: u64,
    },
    /// The load asks for fewer.
    Down {
        /// The measured value.
        value: f64,
        /// The replicas it asks for.
        wanted: u64,
    },
    /// The load asks for a count outside `[min, max]`: the bound it is at holds.
    Limited {
        /// The measured value.
        value: f64,
        /// The replicas it asks for, before the bounds.
        asked: u64,
    },
    /// The load asks for fewer, but held by the scale-down window.
    Stabilised {
        /// The measured value.
        value: f64,
        /// The replicas it asks for.
        wanted: u64,
        /// The highest recommendation of the window.
        kept: u64,
    },
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The replicas the service should run.
    pub replicas: u64,
    /// Why.
    pub reason: Reason,
    /// The recommendation to remember for the next decisions, if a
    /// measurement gave one.
    pub recommendation: Option<Recommendation>,
    /// When to decide again.
    pub wake_at: Timestamp,
}

impl Decision {
    /// The decision as a sentence for `service inspect` and the events.
    pub fn describe(&self, policy: &Policy, current: u64) -> String {
        let target = policy.target;
        let t = target.describe(target.value());
        let change = if self.replicas == current {
            format!("stays at {current}")
        } else {
            format!("{current} → {}", self.replicas)
        };
        match &self.reason {
            Reason::Bounds => format!("{change}: within the policy's bounds [{}, {}]", policy.min, policy.max),
            Reason::Rollout => format!("{change}: a rollout of the service is running"),
            Reason::NoMetrics(why) => format!("{change}: no metrics ({why})"),
            Reason::Tolerance { value } => {
                format!("{change}: {} is within {:.0}% of the target {t}", target.describe(*value), TOLERANCE * 100.0)
            }
            Reason::Up { value, wanted } | Reason::Down { value, wanted } => {
                format!("{change}: {} against a target of {t} asks for {wanted}", target.describe(*value))
            }
            Reason::Limited { value, asked } => {
                let bound =
                    if *asked > policy.max { format!("max {}", policy.max) } else { format!("min {}", policy.min) };
                format!(
                    "{change}: {} against a target of {t} asks for {asked}, the policy's {bound}",
                    target.describe(*value)
                )
            }
            Reason::Stabilised { value, wanted, kept } => format!(
                "{change}: {} against a target of {t} asks for {wanted}, but the last {} s asked for up to {kept}",
                target.describe(*value),
                policy.down_window / 1000
            ),
        }
    }
}

/// The recommendations still within reach of a window at `now` (the
/// caller keeps only these).
pub fn keep(history: &[Recommendation], policy: &Policy, now: Timestamp) -> Vec<Recommendation> {
    let reach = policy.down_window.max(policy.up_window);
    history.iter().copied().filter(|r| r.at.saturating_add(reach) >= now).collect()
}

/// The replicas `current` should become (see the module's doc).
pub fn decide(
    policy: &Policy,
    current: u64,
    measured: Option<&Measurement>,
    history: &[Recommendation],
    rollout: bool,
    now: Timestamp,
) -> Decision {
    let (min, max) = (policy.min, policy.max.max(policy.min));
    let wake_at = now.saturating_add(policy.period.max(1));
    let hold = |reason| Decision { replicas: current, reason, recommendation: None, wake_at };
    if current < min || current > max {
        return Decision { replicas: current.clamp(min, max), reason: Reason::Bounds, recommendation: None, wake_at };
    }
    if rollout {
        return hold(Reason::Rollout);
    }
    let m = match measured {
        None => return hold(Reason::NoMetrics("nothing measured yet".into())),
        Some(m) if m.replicas == 0 => return hold(Reason::NoMetrics("no replica ran through the last period".into())),
        Some(m) if m.at.saturating_add(STALE_AFTER) < now => {
            return hold(Reason::NoMetrics(format!("the last measurement is {} s old", (now - m.at) / 1000)));
        }
        Some(m) if !m.value.is_finite() || m.value < 0.0 => {
            return hold(Reason::NoMetrics("the measurement is not a number".into()));
        }
        Some(m) => m,
    };
    let ratio = m.value / policy.target.value().max(f64::MIN_POSITIVE);
    if (ratio - 1.0).abs() <= TOLERANCE {
        let recommendation = Some(Recommendation { at: now, replicas: current });
        return Decision { replicas: current, reason: Reason::Tolerance { value: m.value }, recommendation, wake_at };
    }
    // Whole replicas; a hair above a whole number (float noise) is that number.
    let raw = ((current as f64) * ratio - 1e-9).ceil().max(0.0);
    // `as` saturates: a huge ratio asks for u64::MAX.
    let asked = raw as u64;
    let wanted = asked.clamp(min, max);
    let recommendation = Some(Recommendation { at: now, replicas: wanted });
    let within = |window: Timestamp| {
        history.iter().filter(move |r| r.at <= now && r.at.saturating_add(window) >= now).map(|r| r.replicas)
    };
    let (replicas, reason) = if wanted > current {
        // Up: the lowest recommendation of the up window (none by default).
        let stable = within(policy.up_window).chain([wanted]).min().unwrap_or(wanted);
        let step = current.max(UP_STEP_MIN);
        (stable.min(current.saturating_add(step)).max(current), Reason::Up { value: m.value, wanted })
    } else if wanted < current {
        // Down: no lower than the highest recommendation of the window.
        let kept = within(policy.down_window).chain([wanted]).max().unwrap_or(wanted).min(current);
        let floor = current - (current / 2).max(1);
        let to = kept.max(floor);
        if kept > wanted && to == current {
            (current, Reason::Stabilised { value: m.value, wanted, kept })
        } else {
            (to, Reason::Down { value: m.value, wanted })
        }
    } else if asked != wanted {
        (current, Reason::Limited { value: m.value, asked })
    } else {
        (current, Reason::Tolerance { value: m.value })
    };
    Decision { replicas: replicas.clamp(min, max), reason, recommendation, wake_at }
}

/// One task's use of its node, as the node's agent last reported it (the
/// leader's memory): CPU over the agent's last period, memory now.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSample {
    /// The node that reported it.
    pub node: String,
    /// When the leader received it.
    pub at: Timestamp,
    /// CPU in cores (1.0: one core busy) over the agent's last period.
    pub cpu_cores: f64,
    /// Memory in bytes, as `docker stats` counts it (cache left out).
    pub memory_bytes: u64,
}

/// The connections one node's routing mesh holds open to a service's tasks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnectionSample {
    /// When the leader received it.
    pub at: Timestamp,
    /// Open connections.
    pub open: u64,
}

/// What the agents reported, as the leader holds it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    /// By task id.
    pub tasks: BTreeMap<String, TaskSample>,
    /// By service full name, then by node id.
    pub connections: BTreeMap<String, BTreeMap<String, ConnectionSample>>,
}

/// The service's load now, from the agents' samples, in the policy's unit:
/// the average over its running tasks that have a fresh sample (CPU), or
/// the mesh's open connections over every node divided by the running
/// tasks (connections). `Err` says why there is none.
pub fn measure(
    policy: &Policy,
    tasks: &[&Task],
    samples: &Samples,
    service: &str,
    now: Timestamp,
) -> Result<Measurement, String> {
    let fresh = |at: Timestamp| at.saturating_add(STALE_AFTER) >= now;
    let running: Vec<&&Task> = tasks
        .iter()
        .filter(|t| t.desired_state == DesiredState::Running && t.status.state == TaskState::Running)
        .collect();
    if running.is_empty() {
        return Err("no task of the service runs".into());
    }
    match policy.target {
        Target::Cpu { .. } => {
            let mut sum = 0.0;
            let mut n = 0u64;
            let mut oldest = now;
            for t in &running {
                let Some(s) = samples.tasks.get(&t.id).filter(|s| fresh(s.at)) else { continue };
                let limit = t.template.resources.limits.nano_cpus;
                let cores = if limit == 0 { 1.0 } else { limit as f64 / 1e9 };
                sum += 100.0 * s.cpu_cores / cores;
                n += 1;
                oldest = oldest.min(s.at);
            }
            if n == 0 {
                return Err(format!(
                    "no fresh CPU reading of its {} running task{} yet",
                    running.len(),
                    if running.len() == 1 { "" } else { "s" }
                ));
            }
            Ok(Measurement { at: oldest, value: sum / n as f64, replicas: n })
        }
        Target::Connections { .. } => {
            let by_node = samples.connections.get(service);
            let fresh: Vec<&ConnectionSample> =
                by_node.into_iter().flat_map(|m| m.values()).filter(|c| fresh(c.at)).collect();
            if fresh.is_empty() {
                return Err("no node reported the routing mesh's connections to it yet".into());
            }
            let open: u64 = fresh.iter().map(|c| c.open).sum();
            let oldest = fresh.iter().map(|c| c.at).min().unwrap_or(now);
            let n = running.len() as u64;
            Ok(Measurement { at: oldest, value: open as f64 / n as f64, replicas: n })
        }
    }
}

#[cfg(test)]
#[path = "autoscale_tests.rs"]
mod tests;
