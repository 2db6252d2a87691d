//! Tasks: `Task`, `TaskStatus`, `TaskState`, `DesiredState`.

use stackd_core::model;

use super::{ConvertError, from_owned, required_into, wire_enum};
use crate::v1;

impl From<model::TaskState> for v1::TaskState {
    fn from(value: model::TaskState) -> Self {
        use model::TaskState as C;
        match value {
            C::New => Self::New,
            C::Pending => Self::Pending,
            C::Assigned => Self::Assigned,
            C::Preparing => Self::Preparing,
            C::Starting => Self::Starting,
            C::Running => Self::Running,
            C::Complete => Self::Complete,
            C::Shutdown => Self::Shutdown,
            C::Failed => Self::Failed,
            C::Rejected => Self::Rejected,
            C::Orphaned => Self::Orphaned,
        }
    }
}

impl From<v1::TaskState> for model::TaskState {
    fn from(value: v1::TaskState) -> Self {
        use v1::TaskState as W;
        match value {
            W::New => Self::New,
            W::Pending => Self::Pending,
            W::Assigned => Self::Assigned,
            W::Preparing => Self::Preparing,
            W::Starting => Self::Starting,
            W::Running => Self::Running,
            W::Complete => Self::Complete,
            W::Shutdown => Self::Shutdown,
            W::Failed => Self::Failed,
            W::Rejected => Self::Rejected,
            W::Orphaned => Self::Orphaned,
        }
    }
}

impl From<model::DesiredState> for v1::DesiredState {
    fn from(value: model::DesiredState) -> Self {
        match value {
            model::DesiredState::Running => Self::Running,
            model::DesiredState::Shutdown => Self::Shutdown,
        }
    }
}

impl From<v1::DesiredState> for model::DesiredState {
    fn from(value: v1::DesiredState) -> Self {
        match value {
            v1::DesiredState::Running => Self::Running,
            v1::DesiredState::Shutdown => Self::Shutdown,
        }
    }
}

impl From<&model::TaskStatus> for v1::TaskStatus {
    fn from(value: &model::TaskStatus) -> Self {
        Self {
            state: v1::TaskState::from(value.state).into(),
            timestamp: value.timestamp,
            message: value.message.clone(),
            err: value.err.clone(),
            container_id: value.container_id.clone(),
            exit_code: value.exit_code,
            health: value.health.clone(),
        }
    }
}

impl TryFrom<v1::TaskStatus> for model::TaskStatus {
    type Error = ConvertError;

    fn try_from(value: v1::TaskStatus) -> Result<Self, ConvertError> {
        Ok(Self {
            state: wire_enum::<v1::TaskState>("TaskStatus.state", value.state)?.into(),
            timestamp: value.timestamp,
            message: value.message,
            err: value.err,
            container_id: value.container_id,
            exit_code: value.exit_code,
            health: value.health,
        })
    }
}

impl From<&model::Task> for v1::Task {
    fn from(value: &model::Task) -> Self {
        Self {
            id: value.id.clone(),
            service_id: value.service_id.clone(),
            service_name: value.service_name.clone(),
            stack: value.stack.clone(),
            slot: value.slot,
            node_id: value.node_id.clone(),
            revision: value.revision,
            template: Some((&value.template).into()),
            desired_state: v1::DesiredState::from(value.desired_state).into(),
            status: Some((&value.status).into()),
            unplaceable: value.unplaceable.clone(),
            created_at: value.created_at,
            addresses: value.addresses.iter().map(|(n, ip)| (n.clone(), ip.to_string())).collect(),
            image: value.image.clone(),
        }
    }
}

impl TryFrom<v1::Task> for model::Task {
    type Error = ConvertError;

    fn try_from(value: v1::Task) -> Result<Self, ConvertError> {
        Ok(Self {
            id: value.id,
            service_id: value.service_id,
            service_name: value.service_name,
            stack: value.stack,
            slot: value.slot,
            node_id: value.node_id,
            revision: value.revision,
            template: required_into("Task.template", value.template)?,
            desired_state: wire_enum::<v1::DesiredState>("Task.desired_state", value.desired_state)?.into(),
            status: required_into("Task.status", value.status)?,
            unplaceable: value.unplaceable,
            created_at: value.created_at,
            image: value.image,
            addresses: value
                .addresses
                .into_iter()
                .map(|(n, ip)| match ip.parse() {
                    Ok(ip) => Ok((n, ip)),
                    Err(_) => Err(ConvertError::Invalid { field: "Task.addresses", value: ip }),
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

from_owned!(
    model::TaskStatus => v1::TaskStatus,
    model::Task => v1::Task,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::{round_trip, task};

    const ALL_STATES: [model::TaskState; 11] = {
        use model::TaskState::*;
        [New, Pending, Assigned, Preparing, Starting, Running, Complete, Shutdown, Failed, Rejected, Orphaned]
    };

    #[test]
    fn tasks_round_trip() {
        round_trip::<_, v1::Task>(&task());
        let pending = model::Task {
            node_id: None,
            template: model::TaskTemplate::default(),
            status: model::TaskStatus::default(),
            unplaceable: "no suitable node".into(),
            ..task()
        };
        round_trip::<_, v1::Task>(&pending);
        // An empty node id is not an absent one.
        round_trip::<_, v1::Task>(&model::Task { node_id: Some(String::new()), ..task() });
    }

    #[test]
    fn every_state_and_desired_state_round_trips() {
        for state in ALL_STATES {
            for desired_state in [model::DesiredState::Running, model::DesiredState::Shutdown] {
                let status = model::TaskStatus { state, ..task().status };
                round_trip::<_, v1::Task>(&model::Task { desired_state, status, ..task() });
            }
        }
    }

    #[test]
    fn exit_codes_round_trip() {
        for exit_code in [None, Some(0), Some(1), Some(-1), Some(137), Some(i64::MIN), Some(i64::MAX)] {
            let status = model::TaskStatus { exit_code, ..task().status };
            round_trip::<_, v1::TaskStatus>(&status);
        }
    }

    #[test]
    fn wire_states_keep_the_core_order() {
        // `TaskState::is_terminal` relies on the order; the wire numbers follow it.
        for pair in ALL_STATES.windows(2) {
            assert!(i32::from(v1::TaskState::from(pair[0])) < i32::from(v1::TaskState::from(pair[1])));
        }
    }

    #[test]
    fn unknown_enums_are_refused() {
        let wire = v1::Task { desired_state: 2, ..task().into() };
        assert_eq!(
            model::Task::try_from(wire),
            Err(ConvertError::UnknownEnum { field: "Task.desired_state", value: 2 })
        );
        let mut wire = v1::Task::from(task());
        if let Some(s) = wire.status.as_mut() {
            s.state = 11;
        }
        assert_eq!(
            model::Task::try_from(wire),
            Err(ConvertError::UnknownEnum { field: "TaskStatus.state", value: 11 })
        );
    }

    #[test]
    fn missing_parts_are_refused() {
        let wire = v1::Task { template: None, ..task().into() };
        assert_eq!(model::Task::try_from(wire), Err(ConvertError::Missing("Task.template")));
        let wire = v1::Task { status: None, ..task().into() };
        assert_eq!(model::Task::try_from(wire), Err(ConvertError::Missing("Task.status")));
    }
}
