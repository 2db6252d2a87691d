//! Services and their specs: `ServiceSpec`, `ServiceMode` (services and
//! jobs), `TaskTemplate`, `Mount`, `PortConfig`, `HealthCheck`,
//! `NetworkAttachment`, `RestartPolicy`, `UpdateConfig` (update and rollback), `EndpointMode`,
//! `Service`, `Revision`, `UpdateStatus` and their enums.

use stackd_core::model;

use super::{ConvertError, from_owned, port, required, required_into, string_map, try_vec, wire_enum};
use crate::v1;

// ---------------------------------------------------------------- enums

/// Core → wire and wire → core for a fieldless enum whose wire form has
/// exactly the core variants (by name, not necessarily by number).
macro_rules! enum_pair {
    ($core:ident <=> $wire:ident { $($variant:ident),* $(,)? }) => {
        impl From<model::$core> for v1::$wire {
            fn from(value: model::$core) -> Self {
                match value {
                    $(model::$core::$variant => Self::$variant,)*
                }
            }
        }

        impl From<v1::$wire> for model::$core {
            fn from(value: v1::$wire) -> Self {
                match value {
                    $(v1::$wire::$variant => Self::$variant,)*
                }
            }
        }
    };
}

enum_pair!(MountKind <=> MountKind { Volume, Bind, Tmpfs });
enum_pair!(Protocol <=> Protocol { Tcp, Udp, Sctp });
enum_pair!(PublishMode <=> PublishMode { Ingress, Host });
enum_pair!(RestartCondition <=> RestartCondition { None, OnFailure, Any });
enum_pair!(FailureAction <=> FailureAction { Pause, Continue, Rollback });
enum_pair!(UpdateOrder <=> UpdateOrder { StopFirst, StartFirst });
enum_pair!(UpdateState <=> UpdateState { Completed, Updating, Paused, RollingBack, RolledBack, Failed });
enum_pair!(EndpointMode <=> EndpointMode { Vip, Dnsrr });
enum_pair!(DependencyCondition <=> DependencyCondition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully
});

// ---------------------------------------------------------------- service mode

impl From<&model::ServiceMode> for v1::ServiceMode {
    fn from(value: &model::ServiceMode) -> Self {
        use v1::service_mode::{Global, GlobalJob, Mode, Replicated, ReplicatedJob};
        let mode = match *value {
            model::ServiceMode::Replicated { replicas } => Mode::Replicated(Replicated { replicas }),
            model::ServiceMode::Global => Mode::Global(Global {}),
            model::ServiceMode::ReplicatedJob { replicas, max_concurrent } => {
                Mode::ReplicatedJob(ReplicatedJob { replicas, max_concurrent })
            }
            model::ServiceMode::GlobalJob => Mode::GlobalJob(GlobalJob {}),
        };
        Self { mode: Some(mode) }
    }
}

/// An empty `oneof` is refused as a missing `ServiceMode.mode`.
impl TryFrom<v1::ServiceMode> for model::ServiceMode {
    type Error = ConvertError;

    fn try_from(value: v1::ServiceMode) -> Result<Self, ConvertError> {
        use v1::service_mode::Mode;
        Ok(match required("ServiceMode.mode", value.mode)? {
            Mode::Replicated(r) => Self::Replicated { replicas: r.replicas },
            Mode::Global(_) => Self::Global,
            Mode::ReplicatedJob(j) => Self::ReplicatedJob { replicas: j.replicas, max_concurrent: j.max_concurrent },
            Mode::GlobalJob(_) => Self::GlobalJob,
        })
    }
}

// ---------------------------------------------------------------- task template

impl From<&model::Mount> for v1::Mount {
    fn from(value: &model::Mount) -> Self {
        Self {
            kind: v1::MountKind::from(value.kind).into(),
            source: value.source.clone(),
            target: value.target.clone(),
            read_only: value.read_only,
            tmpfs_size_bytes: value.tmpfs_size_bytes,
            tmpfs_mode: value.tmpfs_mode,
        }
    }
}

impl TryFrom<v1::Mount> for model::Mount {
    type Error = ConvertError;

    fn try_from(value: v1::Mount) -> Result<Self, ConvertError> {
        Ok(Self {
            kind: wire_enum::<v1::MountKind>("Mount.kind", value.kind)?.into(),
            source: value.source,
            target: value.target,
            read_only: value.read_only,
            tmpfs_size_bytes: value.tmpfs_size_bytes,
            tmpfs_mode: value.tmpfs_mode,
        })
    }
}

impl From<&model::PortConfig> for v1::PortConfig {
    fn from(value: &model::PortConfig) -> Self {
        Self {
            target: value.target.into(),
            published: value.published.map(u32::from),
            protocol: v1::Protocol::from(value.protocol).into(),
            mode: v1::PublishMode::from(value.mode).into(),
            host_ip: value.host_ip.clone(),
            proxy_protocol: value.proxy_protocol,
        }
    }
}

/// Ports above 65535 are refused with [`ConvertError::OutOfRange`].
impl TryFrom<v1::PortConfig> for model::PortConfig {
    type Error = ConvertError;

    fn try_from(value: v1::PortConfig) -> Result<Self, ConvertError> {
        Ok(Self {
            target: port("PortConfig.target", value.target)?,
            published: value.published.map(|p| port("PortConfig.published", p)).transpose()?,
            protocol: wire_enum::<v1::Protocol>("PortConfig.protocol", value.protocol)?.into(),
            mode: wire_enum::<v1::PublishMode>("PortConfig.mode", value.mode)?.into(),
            host_ip: value.host_ip,
            proxy_protocol: value.proxy_protocol,
        })
    }
}

impl From<&model::HealthCheck> for v1::HealthCheck {
    fn from(value: &model::HealthCheck) -> Self {
        Self {
            test: value.test.clone(),
            interval_ms: value.interval_ms,
            timeout_ms: value.timeout_ms,
            retries: value.retries,
            start_period_ms: value.start_period_ms,
            start_interval_ms: value.start_interval_ms,
        }
    }
}

impl TryFrom<v1::HealthCheck> for model::HealthCheck {
    type Error = ConvertError;

    fn try_from(value: v1::HealthCheck) -> Result<Self, ConvertError> {
        Ok(Self {
            test: value.test,
            interval_ms: value.interval_ms,
            timeout_ms: value.timeout_ms,
            retries: value.retries,
            start_period_ms: value.start_period_ms,
            start_interval_ms: value.start_interval_ms,
        })
    }
}

impl From<&model::NetworkAttachment> for v1::NetworkAttachment {
    fn from(value: &model::NetworkAttachment) -> Self {
        Self { network: value.network.clone(), aliases: value.aliases.clone() }
    }
}

impl TryFrom<v1::NetworkAttachment> for model::NetworkAttachment {
    type Error = ConvertError;

    fn try_from(value: v1::NetworkAttachment) -> Result<Self, ConvertError> {
        Ok(Self { network: value.network, aliases: value.aliases })
    }
}

/// A list that may be absent as a whole: `None` ↔ no `StringList`,
/// `Some(vec![])` ↔ an empty `StringList`.
fn string_list(value: Option<&Vec<String>>) -> Option<v1::StringList> {
    value.map(|values| v1::StringList { values: values.clone() })
}

impl From<&model::TaskTemplate> for v1::TaskTemplate {
    fn from(value: &model::TaskTemplate) -> Self {
        Self {
            image: value.image.clone(),
            command: string_list(value.command.as_ref()),
            entrypoint: string_list(value.entrypoint.as_ref()),
            env: value.env.clone(),
            labels: string_map(&value.labels),
            mounts: value.mounts.iter().map(Into::into).collect(),
            ports: value.ports.iter().map(Into::into).collect(),
            working_dir: value.working_dir.clone(),
            user: value.user.clone(),
            hostname: value.hostname.clone(),
            healthcheck: value.healthcheck.as_ref().map(Into::into),
            stop_grace_period_ms: value.stop_grace_period_ms,
            stop_signal: value.stop_signal.clone(),
            init: value.init,
            read_only: value.read_only,
            pull_policy: if value.pull_policy.is_missing() { String::new() } else { value.pull_policy.as_str().into() },
            cap_add: value.cap_add.clone(),
            cap_drop: value.cap_drop.clone(),
            sysctls: string_map(&value.sysctls),
            extra_hosts: value.extra_hosts.clone(),
            dns: value.dns.clone(),
            dns_search: value.dns_search.clone(),
            ulimits: value
                .ulimits
                .iter()
                .map(|(k, u)| (k.clone(), v1::Ulimit { soft: u.soft, hard: u.hard }))
                .collect(),
            logging: value
                .logging
                .as_ref()
                .map(|l| v1::Logging { driver: l.driver.clone(), options: string_map(&l.options) }),
            placement: Some(placement(&value.placement)),
            resources: Some(resources(&value.resources)),
            configs: value.configs.iter().map(file_ref).collect(),
            secrets: value.secrets.iter().map(file_ref).collect(),
            networks: value.networks.iter().map(Into::into).collect(),
            force_update: value.force_update,
        }
    }
}

fn file_ref(r: &model::FileRef) -> v1::FileRef {
    v1::FileRef {
        source: r.source.clone(),
        name: r.name.clone(),
        target: r.target.clone(),
        uid: r.uid.clone(),
        gid: r.gid.clone(),
        mode: r.mode,
        digest: r.digest.clone(),
    }
}

fn file_ref_from(r: v1::FileRef) -> model::FileRef {
    model::FileRef {
        source: r.source,
        name: r.name,
        target: r.target,
        uid: r.uid,
        gid: r.gid,
        mode: r.mode,
        digest: r.digest,
    }
}

impl TryFrom<v1::TaskTemplate> for model::TaskTemplate {
    type Error = ConvertError;

    fn try_from(value: v1::TaskTemplate) -> Result<Self, ConvertError> {
        Ok(Self {
            image: value.image,
            command: value.command.map(|l| l.values),
            entrypoint: value.entrypoint.map(|l| l.values),
            env: value.env,
            labels: value.labels.into_iter().collect(),
            mounts: try_vec(value.mounts)?,
            ports: try_vec(value.ports)?,
            working_dir: value.working_dir,
            user: value.user,
            hostname: value.hostname,
            healthcheck: value.healthcheck.map(TryInto::try_into).transpose()?,
            stop_grace_period_ms: value.stop_grace_period_ms,
            stop_signal: value.stop_signal,
            init: value.init,
            read_only: value.read_only,
            pull_policy: match value.pull_policy.as_str() {
                "" => model::PullPolicy::Missing,
                text => model::PullPolicy::parse(text).map_err(|_| ConvertError::Invalid {
                    field: "TaskTemplate.pull_policy",
                    value: text.to_string(),
                })?,
            },
            cap_add: value.cap_add,
            cap_drop: value.cap_drop,
            sysctls: value.sysctls.into_iter().collect(),
            extra_hosts: value.extra_hosts,
            dns: value.dns,
            dns_search: value.dns_search,
            ulimits: value
                .ulimits
                .into_iter()
                .map(|(k, u)| (k, model::Ulimit { soft: u.soft, hard: u.hard }))
                .collect(),
            logging: value
                .logging
                .map(|l| model::Logging { driver: l.driver, options: l.options.into_iter().collect() }),
            placement: value.placement.map(placement_from).transpose()?.unwrap_or_default(),
            resources: value.resources.map(resources_from).unwrap_or_default(),
            configs: value.configs.into_iter().map(file_ref_from).collect(),
            secrets: value.secrets.into_iter().map(file_ref_from).collect(),
            networks: try_vec(value.networks)?,
            force_update: value.force_update,
        })
    }
}

fn placement(p: &model::Placement) -> v1::Placement {
    v1::Placement {
        constraints: p
            .constraints
            .iter()
            .map(|c| v1::Constraint {
                key: c.key.clone(),
                op: match c.op {
                    model::ConstraintOp::Eq => v1::ConstraintOp::Eq,
                    model::ConstraintOp::Ne => v1::ConstraintOp::Ne,
                }
                .into(),
                value: c.value.clone(),
            })
            .collect(),
        preferences: p.preferences.clone(),
        max_replicas_per_node: p.max_replicas_per_node,
    }
}

fn placement_from(p: v1::Placement) -> Result<model::Placement, ConvertError> {
    let constraints = p
        .constraints
        .into_iter()
        .map(|c| {
            let op = match v1::ConstraintOp::try_from(c.op) {
                Ok(v1::ConstraintOp::Eq) => model::ConstraintOp::Eq,
                Ok(v1::ConstraintOp::Ne) => model::ConstraintOp::Ne,
                Err(_) => return Err(ConvertError::UnknownEnum { field: "Constraint.op", value: c.op }),
            };
            Ok(model::Constraint { key: c.key, op, value: c.value })
        })
        .collect::<Result<_, _>>()?;
    Ok(model::Placement { constraints, preferences: p.preferences, max_replicas_per_node: p.max_replicas_per_node })
}

fn resources(r: &model::ResourceSpec) -> v1::ResourceSpec {
    v1::ResourceSpec {
        limits: Some(v1::ResourceLimits {
            nano_cpus: r.limits.nano_cpus,
            memory_bytes: r.limits.memory_bytes,
            pids: r.limits.pids,
        }),
        reservations: Some(v1::Resources::from(&r.reservations)),
    }
}

fn resources_from(r: v1::ResourceSpec) -> model::ResourceSpec {
    let limits = r.limits.unwrap_or_default();
    let reservations = r.reservations.unwrap_or_default();
    model::ResourceSpec {
        limits: model::ResourceLimits {
            nano_cpus: limits.nano_cpus,
            memory_bytes: limits.memory_bytes,
            pids: limits.pids,
        },
        reservations: model::Resources {
            nano_cpus: reservations.nano_cpus,
            memory_bytes: reservations.memory_bytes,
            generic: reservations.generic.into_iter().collect(),
        },
    }
}

// ---------------------------------------------------------------- policies

impl From<&model::RestartPolicy> for v1::RestartPolicy {
    fn from(value: &model::RestartPolicy) -> Self {
        Self {
            condition: v1::RestartCondition::from(value.condition).into(),
            delay_ms: value.delay_ms,
            max_attempts: value.max_attempts,
            window_ms: value.window_ms,
        }
    }
}

impl TryFrom<v1::RestartPolicy> for model::RestartPolicy {
    type Error = ConvertError;

    fn try_from(value: v1::RestartPolicy) -> Result<Self, ConvertError> {
        Ok(Self {
            condition: wire_enum::<v1::RestartCondition>("RestartPolicy.condition", value.condition)?.into(),
            delay_ms: value.delay_ms,
            max_attempts: value.max_attempts,
            window_ms: value.window_ms,
        })
    }
}

impl From<&model::UpdateConfig> for v1::UpdateConfig {
    fn from(value: &model::UpdateConfig) -> Self {
        Self {
            parallelism: value.parallelism,
            delay_ms: value.delay_ms,
            monitor_ms: value.monitor_ms,
            failure_action: v1::FailureAction::from(value.failure_action).into(),
            max_failure_ratio: value.max_failure_ratio,
            order: v1::UpdateOrder::from(value.order).into(),
        }
    }
}

/// `max_failure_ratio` is copied as is (NaN, negative and infinite values
/// included): checking it is the validator's business.
impl TryFrom<v1::UpdateConfig> for model::UpdateConfig {
    type Error = ConvertError;

    fn try_from(value: v1::UpdateConfig) -> Result<Self, ConvertError> {
        Ok(Self {
            parallelism: value.parallelism,
            delay_ms: value.delay_ms,
            monitor_ms: value.monitor_ms,
            failure_action: wire_enum::<v1::FailureAction>("UpdateConfig.failure_action", value.failure_action)?.into(),
            max_failure_ratio: value.max_failure_ratio,
            order: wire_enum::<v1::UpdateOrder>("UpdateConfig.order", value.order)?.into(),
        })
    }
}

// ---------------------------------------------------------------- spec

impl From<&model::ServiceSpec> for v1::ServiceSpec {
    fn from(value: &model::ServiceSpec) -> Self {
        Self {
            name: value.name.clone(),
            mode: Some((&value.mode).into()),
            task: Some((&value.task).into()),
            restart: Some((&value.restart).into()),
            update: Some((&value.update).into()),
            labels: string_map(&value.labels),
            rollback: Some((&value.rollback).into()),
            endpoint_mode: v1::EndpointMode::from(value.endpoint_mode).into(),
            depends_on: value.depends_on.iter().map(Into::into).collect(),
            autoscale: value.autoscale.as_ref().map(Into::into),
        }
    }
}

/// `mode`, `task`, `restart`, `update` and `rollback` are all required: an
/// absent policy is refused rather than replaced by a default, because the
/// wire default (all zeros) and the core default differ.
impl TryFrom<v1::ServiceSpec> for model::ServiceSpec {
    type Error = ConvertError;

    fn try_from(value: v1::ServiceSpec) -> Result<Self, ConvertError> {
        Ok(Self {
            autoscale: value.autoscale.map(TryInto::try_into).transpose()?,
            name: value.name,
            mode: required_into("ServiceSpec.mode", value.mode)?,
            task: required_into("ServiceSpec.task", value.task)?,
            restart: required_into("ServiceSpec.restart", value.restart)?,
            update: required_into("ServiceSpec.update", value.update)?,
            rollback: required_into("ServiceSpec.rollback", value.rollback)?,
            labels: value.labels.into_iter().collect(),
            endpoint_mode: wire_enum::<v1::EndpointMode>("ServiceSpec.endpoint_mode", value.endpoint_mode)?.into(),
            depends_on: try_vec(value.depends_on)?,
        })
    }
}

impl From<&stackd_core::autoscale::Policy> for v1::AutoscalePolicy {
    fn from(value: &stackd_core::autoscale::Policy) -> Self {
        use stackd_core::autoscale::Target;
        Self {
            min: value.min,
            max: value.max,
            target: Some(match value.target {
                Target::Cpu { percent } => v1::autoscale_policy::Target::CpuPercent(percent),
                Target::Connections { per_replica } => v1::autoscale_policy::Target::ConnectionsPerReplica(per_replica),
            }),
            down_window_ms: value.down_window,
            up_window_ms: value.up_window,
            period_ms: value.period,
        }
    }
}

impl TryFrom<v1::AutoscalePolicy> for stackd_core::autoscale::Policy {
    type Error = ConvertError;

    fn try_from(value: v1::AutoscalePolicy) -> Result<Self, ConvertError> {
        use stackd_core::autoscale::Target;
        let target = match value.target {
            Some(v1::autoscale_policy::Target::CpuPercent(percent)) => Target::Cpu { percent },
            Some(v1::autoscale_policy::Target::ConnectionsPerReplica(per_replica)) => {
                Target::Connections { per_replica }
            }
            None => return Err(ConvertError::Missing("AutoscalePolicy.target")),
        };
        Ok(Self {
            min: value.min,
            max: value.max,
            target,
            down_window: value.down_window_ms,
            up_window: value.up_window_ms,
            period: value.period_ms,
        })
    }
}

impl From<&model::AutoscaleStatus> for v1::AutoscaleStatus {
    fn from(value: &model::AutoscaleStatus) -> Self {
        Self {
            measured_at: value.measured_at,
            measured_milli: value.measured_milli,
            decisions: value
                .decisions
                .iter()
                .map(|d| v1::AutoscaleDecision { at: d.at, from: d.from, to: d.to, reason: d.reason.clone() })
                .collect(),
        }
    }
}

impl From<v1::AutoscaleStatus> for model::AutoscaleStatus {
    fn from(value: v1::AutoscaleStatus) -> Self {
        Self {
            measured_at: value.measured_at,
            measured_milli: value.measured_milli,
            decisions: value
                .decisions
                .into_iter()
                .map(|d| model::AutoscaleDecision { at: d.at, from: d.from, to: d.to, reason: d.reason })
                .collect(),
        }
    }
}

impl From<&model::Dependency> for v1::Dependency {
    fn from(value: &model::Dependency) -> Self {
        Self {
            service: value.service.clone(),
            condition: v1::DependencyCondition::from(value.condition).into(),
            required: value.required,
        }
    }
}

impl TryFrom<v1::Dependency> for model::Dependency {
    type Error = ConvertError;

    fn try_from(value: v1::Dependency) -> Result<Self, ConvertError> {
        Ok(Self {
            service: value.service,
            condition: wire_enum::<v1::DependencyCondition>("Dependency.condition", value.condition)?.into(),
            required: value.required,
        })
    }
}

// ---------------------------------------------------------------- service

impl From<&model::UpdateStatus> for v1::UpdateStatus {
    fn from(value: &model::UpdateStatus) -> Self {
        Self {
            state: v1::UpdateState::from(value.state).into(),
            started_at: value.started_at,
            completed_at: value.completed_at,
            message: value.message.clone(),
        }
    }
}

impl TryFrom<v1::UpdateStatus> for model::UpdateStatus {
    type Error = ConvertError;

    fn try_from(value: v1::UpdateStatus) -> Result<Self, ConvertError> {
        Ok(Self {
            state: wire_enum::<v1::UpdateState>("UpdateStatus.state", value.state)?.into(),
            started_at: value.started_at,
            completed_at: value.completed_at,
            message: value.message,
        })
    }
}

impl From<&model::ImagePin> for v1::ImagePin {
    fn from(value: &model::ImagePin) -> Self {
        match value {
            model::ImagePin::Pending => Self { kind: v1::ImagePinKind::Pending.into(), ..Default::default() },
            model::ImagePin::Digest { reference } => {
                Self { kind: v1::ImagePinKind::Digest.into(), reference: reference.clone(), ..Default::default() }
            }
            model::ImagePin::Tag { reason } => {
                Self { kind: v1::ImagePinKind::Tag.into(), reason: reason.clone(), ..Default::default() }
            }
        }
    }
}

impl TryFrom<v1::ImagePin> for model::ImagePin {
    type Error = ConvertError;

    fn try_from(value: v1::ImagePin) -> Result<Self, ConvertError> {
        Ok(match wire_enum::<v1::ImagePinKind>("ImagePin.kind", value.kind)? {
            v1::ImagePinKind::Pending => model::ImagePin::Pending,
            v1::ImagePinKind::Digest => model::ImagePin::Digest { reference: value.reference },
            v1::ImagePinKind::Tag => model::ImagePin::Tag { reason: value.reason },
        })
    }
}

/// An image pin from the wire; absent: one recorded before pins were.
fn image_pin(value: Option<v1::ImagePin>) -> Result<model::ImagePin, ConvertError> {
    value.map_or_else(|| Ok(model::ImagePin::unrecorded()), model::ImagePin::try_from)
}

impl From<&model::Revision> for v1::Revision {
    fn from(value: &model::Revision) -> Self {
        Self {
            revision: value.revision,
            spec: Some((&value.spec).into()),
            deployed_at: value.deployed_at,
            image: Some((&value.image).into()),
            rollout: value.rollout.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<v1::Revision> for model::Revision {
    type Error = ConvertError;

    fn try_from(value: v1::Revision) -> Result<Self, ConvertError> {
        Ok(Self {
            revision: value.revision,
            spec: required_into("Revision.spec", value.spec)?,
            deployed_at: value.deployed_at,
            image: image_pin(value.image)?,
            rollout: value.rollout.map(TryInto::try_into).transpose()?,
        })
    }
}

impl From<&model::Service> for v1::Service {
    fn from(value: &model::Service) -> Self {
        Self {
            id: value.id.clone(),
            stack: value.stack.clone(),
            name: value.name.clone(),
            spec: Some((&value.spec).into()),
            revision: value.revision,
            history: value.history.iter().map(Into::into).collect(),
            update: Some((&value.update).into()),
            created_at: value.created_at,
            updated_at: value.updated_at,
            image: Some((&value.image).into()),
            rebalance: value.rebalance.as_ref().map(|r| v1::Rebalance {
                started_at: r.started_at,
                moving: r.moving.iter().cloned().collect(),
                moved: r.moved,
                last_moved_at: r.last_moved_at,
            }),
            task_failures: value.task_failures,
            autoscale: value.autoscale.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<v1::Service> for model::Service {
    type Error = ConvertError;

    fn try_from(value: v1::Service) -> Result<Self, ConvertError> {
        Ok(Self {
            autoscale: value.autoscale.map(Into::into),
            id: value.id,
            stack: value.stack,
            name: value.name,
            spec: required_into("Service.spec", value.spec)?,
            revision: value.revision,
            history: try_vec(value.history)?,
            update: required_into("Service.update", value.update)?,
            created_at: value.created_at,
            updated_at: value.updated_at,
            image: image_pin(value.image)?,
            rebalance: value.rebalance.map(|r| model::Rebalance {
                started_at: r.started_at,
                moving: r.moving.into_iter().collect(),
                moved: r.moved,
                last_moved_at: r.last_moved_at,
            }),
            task_failures: value.task_failures,
        })
    }
}

from_owned!(
    model::ServiceMode => v1::ServiceMode,
    model::Mount => v1::Mount,
    model::PortConfig => v1::PortConfig,
    model::HealthCheck => v1::HealthCheck,
    model::NetworkAttachment => v1::NetworkAttachment,
    model::TaskTemplate => v1::TaskTemplate,
    model::RestartPolicy => v1::RestartPolicy,
    model::UpdateConfig => v1::UpdateConfig,
    model::ServiceSpec => v1::ServiceSpec,
    model::Dependency => v1::Dependency,
    model::UpdateStatus => v1::UpdateStatus,
    model::Revision => v1::Revision,
    model::Service => v1::Service,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::{full_template, round_trip, service, spec};

    #[test]
    fn service_modes_round_trip() {
        round_trip::<_, v1::ServiceMode>(&model::ServiceMode::Global);
        round_trip::<_, v1::ServiceMode>(&model::ServiceMode::GlobalJob);
        for replicas in [0, 1, 3, u64::MAX] {
            round_trip::<_, v1::ServiceMode>(&model::ServiceMode::Replicated { replicas });
            for max_concurrent in [0, 2, u64::MAX] {
                round_trip::<_, v1::ServiceMode>(&model::ServiceMode::ReplicatedJob { replicas, max_concurrent });
            }
        }
        // Jobs stay jobs on the wire: not a replicated or global service.
        let wire = v1::ServiceMode::from(&model::ServiceMode::GlobalJob);
        assert!(matches!(wire.mode, Some(v1::service_mode::Mode::GlobalJob(_))));
        let wire = v1::ServiceMode::from(&model::ServiceMode::ReplicatedJob { replicas: 3, max_concurrent: 1 });
        assert!(
            matches!(wire.mode, Some(v1::service_mode::Mode::ReplicatedJob(j)) if j.replicas == 3 && j.max_concurrent == 1)
        );
    }

    #[test]
    fn rollback_policy_and_endpoint_mode_round_trip() {
        for endpoint_mode in [model::EndpointMode::Vip, model::EndpointMode::Dnsrr] {
            let s = model::ServiceSpec { endpoint_mode, ..spec() };
            round_trip::<_, v1::ServiceSpec>(&s);
        }
        // The rollback policy travels apart from the update policy.
        let wire = v1::ServiceSpec::from(spec());
        assert_eq!(wire.rollback.as_ref().map(|r| r.parallelism), Some(3));
        assert_eq!(wire.update.as_ref().map(|u| u.parallelism), Some(2));
        let wire = v1::ServiceSpec { rollback: None, ..spec().into() };
        assert_eq!(model::ServiceSpec::try_from(wire), Err(ConvertError::Missing("ServiceSpec.rollback")));
        let wire = v1::ServiceSpec { endpoint_mode: 7, ..spec().into() };
        assert_eq!(
            model::ServiceSpec::try_from(wire),
            Err(ConvertError::UnknownEnum { field: "ServiceSpec.endpoint_mode", value: 7 })
        );
    }

    #[test]
    fn dependencies_round_trip_in_order() {
        let s = spec();
        assert_eq!(s.depends_on.len(), 2);
        round_trip::<_, v1::ServiceSpec>(&s);
        round_trip::<_, v1::ServiceSpec>(&model::ServiceSpec { depends_on: vec![], ..spec() });
        let wire = v1::ServiceSpec::from(&s);
        assert_eq!(wire.depends_on[0].service, "db");
        assert_eq!(wire.depends_on[0].condition, v1::DependencyCondition::ServiceHealthy as i32);
        assert!(wire.depends_on[0].required && !wire.depends_on[1].required);
        let mut wire = v1::ServiceSpec::from(&s);
        wire.depends_on[1].condition = 9;
        assert_eq!(
            model::ServiceSpec::try_from(wire),
            Err(ConvertError::UnknownEnum { field: "Dependency.condition", value: 9 })
        );
    }

    #[test]
    fn empty_mode_is_missing() {
        assert_eq!(
            model::ServiceMode::try_from(v1::ServiceMode { mode: None }),
            Err(ConvertError::Missing("ServiceMode.mode"))
        );
        let wire = v1::ServiceSpec { mode: None, ..spec().into() };
        assert_eq!(model::ServiceSpec::try_from(wire), Err(ConvertError::Missing("ServiceSpec.mode")));
        let wire = v1::ServiceSpec { mode: Some(v1::ServiceMode { mode: None }), ..spec().into() };
        assert_eq!(model::ServiceSpec::try_from(wire), Err(ConvertError::Missing("ServiceMode.mode")));
    }

    #[test]
    fn missing_spec_parts_are_refused() {
        let wire = v1::ServiceSpec { task: None, ..spec().into() };
        assert_eq!(model::ServiceSpec::try_from(wire), Err(ConvertError::Missing("ServiceSpec.task")));
        let wire = v1::ServiceSpec { restart: None, ..spec().into() };
        assert_eq!(model::ServiceSpec::try_from(wire), Err(ConvertError::Missing("ServiceSpec.restart")));
        let wire = v1::ServiceSpec { update: None, ..spec().into() };
        assert_eq!(model::ServiceSpec::try_from(wire), Err(ConvertError::Missing("ServiceSpec.update")));
    }

    #[test]
    fn templates_round_trip() {
        round_trip::<_, v1::TaskTemplate>(&model::TaskTemplate::default());
        round_trip::<_, v1::TaskTemplate>(&full_template());
    }

    #[test]
    fn absent_and_empty_lists_stay_apart() {
        let absent = model::TaskTemplate { command: None, entrypoint: None, ..full_template() };
        let empty = model::TaskTemplate { command: Some(vec![]), entrypoint: Some(vec![]), ..full_template() };
        let empty_strings = model::TaskTemplate {
            command: Some(vec![String::new()]),
            working_dir: Some(String::new()),
            user: Some(String::new()),
            hostname: Some(String::new()),
            stop_signal: Some(String::new()),
            init: Some(false),
            ..full_template()
        };
        for t in [&absent, &empty, &empty_strings] {
            round_trip::<_, v1::TaskTemplate>(t);
        }
        assert_eq!(v1::TaskTemplate::from(&absent).command, None);
        assert_eq!(v1::TaskTemplate::from(&empty).command, Some(v1::StringList { values: vec![] }));
    }

    #[test]
    fn every_mount_kind_protocol_and_publish_mode_round_trips() {
        for kind in [model::MountKind::Volume, model::MountKind::Bind, model::MountKind::Tmpfs] {
            let m = model::Mount {
                kind,
                source: "data".into(),
                target: "/data".into(),
                read_only: true,
                tmpfs_size_bytes: 0,
                tmpfs_mode: 0,
            };
            round_trip::<_, v1::Mount>(&m);
        }
        for protocol in [model::Protocol::Tcp, model::Protocol::Udp, model::Protocol::Sctp] {
            for mode in [model::PublishMode::Ingress, model::PublishMode::Host] {
                for published in [None, Some(0), Some(8080), Some(u16::MAX)] {
                    let p = model::PortConfig {
                        target: 80,
                        published,
                        protocol,
                        mode,
                        host_ip: "127.0.0.1".into(),
                        proxy_protocol: published.is_some(),
                    };
                    round_trip::<_, v1::PortConfig>(&p);
                }
            }
        }
    }

    #[test]
    fn ports_above_65535_are_refused() {
        let ok = v1::PortConfig {
            target: 65_535,
            published: Some(65_535),
            protocol: 0,
            mode: 0,
            host_ip: String::new(),
            proxy_protocol: false,
        };
        assert!(model::PortConfig::try_from(ok.clone()).is_ok());
        assert_eq!(
            model::PortConfig::try_from(v1::PortConfig { target: 70_000, ..ok.clone() }),
            Err(ConvertError::OutOfRange { field: "PortConfig.target", value: 70_000 })
        );
        assert_eq!(
            model::PortConfig::try_from(v1::PortConfig { published: Some(65_536), ..ok.clone() }),
            Err(ConvertError::OutOfRange { field: "PortConfig.published", value: 65_536 })
        );
        assert_eq!(
            model::PortConfig::try_from(v1::PortConfig { published: Some(u32::MAX), ..ok }),
            Err(ConvertError::OutOfRange { field: "PortConfig.published", value: u64::from(u32::MAX) })
        );
        // Deep inside a service spec too.
        let mut wire = v1::ServiceSpec::from(spec());
        if let Some(task) = wire.task.as_mut() {
            task.ports[0].target = 70_000;
        }
        assert_eq!(
            model::ServiceSpec::try_from(wire),
            Err(ConvertError::OutOfRange { field: "PortConfig.target", value: 70_000 })
        );
    }

    #[test]
    fn unknown_enums_are_refused() {
        let mount = v1::Mount { kind: 3, ..v1::Mount::default() };
        assert_eq!(model::Mount::try_from(mount), Err(ConvertError::UnknownEnum { field: "Mount.kind", value: 3 }));
        let p = v1::PortConfig { protocol: 9, ..v1::PortConfig::default() };
        assert_eq!(
            model::PortConfig::try_from(p),
            Err(ConvertError::UnknownEnum { field: "PortConfig.protocol", value: 9 })
        );
        let p = v1::PortConfig { mode: 2, ..v1::PortConfig::default() };
        assert_eq!(
            model::PortConfig::try_from(p),
            Err(ConvertError::UnknownEnum { field: "PortConfig.mode", value: 2 })
        );
        let r = v1::RestartPolicy { condition: 3, ..v1::RestartPolicy::default() };
        assert_eq!(
            model::RestartPolicy::try_from(r),
            Err(ConvertError::UnknownEnum { field: "RestartPolicy.condition", value: 3 })
        );
        let u = v1::UpdateConfig { failure_action: -2, ..v1::UpdateConfig::default() };
        assert_eq!(
            model::UpdateConfig::try_from(u),
            Err(ConvertError::UnknownEnum { field: "UpdateConfig.failure_action", value: -2 })
        );
        let u = v1::UpdateConfig { order: 2, ..v1::UpdateConfig::default() };
        assert_eq!(
            model::UpdateConfig::try_from(u),
            Err(ConvertError::UnknownEnum { field: "UpdateConfig.order", value: 2 })
        );
        let s = v1::UpdateStatus { state: 6, ..v1::UpdateStatus::default() };
        assert_eq!(
            model::UpdateStatus::try_from(s),
            Err(ConvertError::UnknownEnum { field: "UpdateStatus.state", value: 6 })
        );
    }

    #[test]
    fn every_policy_variant_round_trips() {
        use model::{FailureAction, RestartCondition, UpdateOrder};
        for condition in [RestartCondition::None, RestartCondition::OnFailure, RestartCondition::Any] {
            let r = model::RestartPolicy { condition, delay_ms: 1, max_attempts: 2, window_ms: 3 };
            round_trip::<_, v1::RestartPolicy>(&r);
        }
        round_trip::<_, v1::RestartPolicy>(&model::RestartPolicy::default());
        for failure_action in [FailureAction::Pause, FailureAction::Continue, FailureAction::Rollback] {
            for order in [UpdateOrder::StopFirst, UpdateOrder::StartFirst] {
                for max_failure_ratio in [0.0, 0.25, 1.0, f64::INFINITY] {
                    let u = model::UpdateConfig {
                        parallelism: 2,
                        delay_ms: 10,
                        monitor_ms: 20,
                        failure_action,
                        max_failure_ratio,
                        order,
                    };
                    round_trip::<_, v1::UpdateConfig>(&u);
                }
            }
        }
        round_trip::<_, v1::UpdateConfig>(&model::UpdateConfig::default());
    }

    #[test]
    fn nan_failure_ratio_is_kept_bit_for_bit() {
        let u = model::UpdateConfig { max_failure_ratio: f64::NAN, ..model::UpdateConfig::default() };
        let back = model::UpdateConfig::try_from(v1::UpdateConfig::from(&u));
        assert!(back.is_ok_and(|b| b.max_failure_ratio.to_bits() == u.max_failure_ratio.to_bits()));
    }

    #[test]
    fn specs_and_services_round_trip() {
        round_trip::<_, v1::ServiceSpec>(&spec());
        let global = model::ServiceSpec {
            mode: model::ServiceMode::Global,
            task: model::TaskTemplate::default(),
            labels: std::collections::BTreeMap::new(),
            ..spec()
        };
        round_trip::<_, v1::ServiceSpec>(&global);
        round_trip::<_, v1::Service>(&service());
        let fresh = model::Service { history: vec![], update: model::UpdateStatus::default(), ..service() };
        round_trip::<_, v1::Service>(&fresh);
    }

    #[test]
    fn every_update_state_round_trips() {
        use model::UpdateState::*;
        for state in [Completed, Updating, Paused, RollingBack, RolledBack, Failed] {
            let s = model::UpdateStatus { state, started_at: 1, completed_at: 2, message: "m".into() };
            round_trip::<_, v1::UpdateStatus>(&s);
        }
    }

    #[test]
    fn missing_service_parts_are_refused() {
        let wire = v1::Service { spec: None, ..service().into() };
        assert_eq!(model::Service::try_from(wire), Err(ConvertError::Missing("Service.spec")));
        let wire = v1::Service { update: None, ..service().into() };
        assert_eq!(model::Service::try_from(wire), Err(ConvertError::Missing("Service.update")));
        let mut wire = v1::Service::from(service());
        wire.history[0].spec = None;
        assert_eq!(model::Service::try_from(wire), Err(ConvertError::Missing("Revision.spec")));
    }
}
