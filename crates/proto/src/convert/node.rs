//! Nodes: `Node`, `NodeRole`, `Availability`, `NodeState`, `Resources`.

use stackd_core::model;

use super::{ConvertError, from_owned, required_into, string_map, wire_enum};
use crate::v1;

// ---------------------------------------------------------------- enums

impl From<model::NodeRole> for v1::NodeRole {
    fn from(value: model::NodeRole) -> Self {
        match value {
            model::NodeRole::Manager => Self::Manager,
            model::NodeRole::Worker => Self::Worker,
        }
    }
}

/// `NODE_ROLE_UNSPECIFIED` has no core counterpart: it is refused as a
/// missing `Node.role`.
impl TryFrom<v1::NodeRole> for model::NodeRole {
    type Error = ConvertError;

    fn try_from(value: v1::NodeRole) -> Result<Self, ConvertError> {
        match value {
            v1::NodeRole::Unspecified => Err(ConvertError::Missing("Node.role")),
            v1::NodeRole::Manager => Ok(Self::Manager),
            v1::NodeRole::Worker => Ok(Self::Worker),
        }
    }
}

impl From<model::Availability> for v1::Availability {
    fn from(value: model::Availability) -> Self {
        match value {
            model::Availability::Active => Self::Active,
            model::Availability::Pause => Self::Pause,
            model::Availability::Drain => Self::Drain,
        }
    }
}

impl From<v1::Availability> for model::Availability {
    fn from(value: v1::Availability) -> Self {
        match value {
            v1::Availability::Active => Self::Active,
            v1::Availability::Pause => Self::Pause,
            v1::Availability::Drain => Self::Drain,
        }
    }
}

impl From<model::NodeState> for v1::NodeState {
    fn from(value: model::NodeState) -> Self {
        match value {
            model::NodeState::Unknown => Self::Unknown,
            model::NodeState::Ready => Self::Ready,
            model::NodeState::Down => Self::Down,
        }
    }
}

impl From<v1::NodeState> for model::NodeState {
    fn from(value: v1::NodeState) -> Self {
        match value {
            v1::NodeState::Unknown => Self::Unknown,
            v1::NodeState::Ready => Self::Ready,
            v1::NodeState::Down => Self::Down,
        }
    }
}

// ---------------------------------------------------------------- messages

impl From<&model::Resources> for v1::Resources {
    fn from(value: &model::Resources) -> Self {
        Self {
            nano_cpus: value.nano_cpus,
            memory_bytes: value.memory_bytes,
            generic: value.generic.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

impl TryFrom<v1::Resources> for model::Resources {
    type Error = ConvertError;

    fn try_from(value: v1::Resources) -> Result<Self, ConvertError> {
        Ok(Self {
            nano_cpus: value.nano_cpus,
            memory_bytes: value.memory_bytes,
            generic: value.generic.into_iter().collect(),
        })
    }
}

impl From<&model::EngineDescription> for v1::EngineDescription {
    fn from(value: &model::EngineDescription) -> Self {
        Self {
            os: value.os.clone(),
            os_name: value.os_name.clone(),
            arch: value.arch.clone(),
            kernel_version: value.kernel_version.clone(),
            labels: string_map(&value.labels),
        }
    }
}

impl From<v1::EngineDescription> for model::EngineDescription {
    fn from(value: v1::EngineDescription) -> Self {
        Self {
            os: value.os,
            os_name: value.os_name,
            arch: value.arch,
            kernel_version: value.kernel_version,
            labels: value.labels.into_iter().collect(),
        }
    }
}

impl From<&model::Node> for v1::Node {
    fn from(value: &model::Node) -> Self {
        Self {
            id: value.id.clone(),
            name: value.name.clone(),
            addr: value.addr.clone(),
            role: v1::NodeRole::from(value.role).into(),
            availability: v1::Availability::from(value.availability).into(),
            state: v1::NodeState::from(value.state).into(),
            labels: string_map(&value.labels),
            resources: Some((&value.resources).into()),
            engine_version: value.engine_version.clone(),
            updated_at: value.updated_at,
            engine: (!value.engine.is_empty()).then(|| (&value.engine).into()),
        }
    }
}

impl TryFrom<v1::Node> for model::Node {
    type Error = ConvertError;

    fn try_from(value: v1::Node) -> Result<Self, ConvertError> {
        Ok(Self {
            id: value.id,
            name: value.name,
            addr: value.addr,
            role: wire_enum::<v1::NodeRole>("Node.role", value.role)?.try_into()?,
            availability: wire_enum::<v1::Availability>("Node.availability", value.availability)?.into(),
            state: wire_enum::<v1::NodeState>("Node.state", value.state)?.into(),
            labels: value.labels.into_iter().collect(),
            resources: required_into("Node.resources", value.resources)?,
            engine_version: value.engine_version,
            engine: value.engine.map(model::EngineDescription::from).unwrap_or_default(),
            updated_at: value.updated_at,
        })
    }
}

from_owned!(
    model::Resources => v1::Resources,
    model::Node => v1::Node,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::{node, round_trip};

    #[test]
    fn node_round_trips() {
        round_trip::<_, v1::Node>(&node());
        let mut bare = node();
        bare.labels.clear();
        bare.resources = model::Resources::default();
        bare.engine_version.clear();
        bare.engine = model::EngineDescription::default();
        round_trip::<_, v1::Node>(&bare);
    }

    #[test]
    fn engine_facts_cross_the_wire() {
        let wire = v1::Node::from(node());
        let engine = wire.engine.clone().expect("engine sent");
        assert_eq!((engine.os.as_str(), engine.arch.as_str()), ("linux", "x86_64"));
        assert_eq!(engine.os_name, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(engine.kernel_version, "6.1.0-18-amd64");
        assert_eq!(engine.labels.get("storage").map(String::as_str), Some("ssd"));
        assert_eq!(model::Node::try_from(wire).expect("converts").engine, node().engine);
        // Nothing reported: nothing sent, and a node from an older manager
        // (no `engine`) reads as nothing reported.
        let bare = model::Node { engine: model::EngineDescription::default(), ..node() };
        let wire = v1::Node::from(&bare);
        assert_eq!(wire.engine, None);
        assert!(model::Node::try_from(wire).expect("converts").engine.is_empty());
    }

    #[test]
    fn every_role_availability_and_state_round_trips() {
        for role in [model::NodeRole::Manager, model::NodeRole::Worker] {
            for availability in [model::Availability::Active, model::Availability::Pause, model::Availability::Drain] {
                for state in [model::NodeState::Unknown, model::NodeState::Ready, model::NodeState::Down] {
                    round_trip::<_, v1::Node>(&model::Node { role, availability, state, ..node() });
                }
            }
        }
    }

    #[test]
    fn unspecified_role_is_missing() {
        let wire = v1::Node { role: v1::NodeRole::Unspecified.into(), ..v1::Node::from(node()) };
        assert_eq!(model::Node::try_from(wire), Err(ConvertError::Missing("Node.role")));
    }

    #[test]
    fn unknown_enums_are_refused() {
        let wire = v1::Node { role: 7, ..v1::Node::from(node()) };
        assert_eq!(model::Node::try_from(wire), Err(ConvertError::UnknownEnum { field: "Node.role", value: 7 }));
        let wire = v1::Node { availability: 3, ..v1::Node::from(node()) };
        assert_eq!(
            model::Node::try_from(wire),
            Err(ConvertError::UnknownEnum { field: "Node.availability", value: 3 })
        );
        let wire = v1::Node { state: -1, ..v1::Node::from(node()) };
        assert_eq!(model::Node::try_from(wire), Err(ConvertError::UnknownEnum { field: "Node.state", value: -1 }));
    }

    #[test]
    fn missing_resources_is_refused() {
        let wire = v1::Node { resources: None, ..v1::Node::from(node()) };
        assert_eq!(model::Node::try_from(wire), Err(ConvertError::Missing("Node.resources")));
    }
}
