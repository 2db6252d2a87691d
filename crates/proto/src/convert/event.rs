//! Events: `Event`, `ObjectKind`, `Action` (`EventAction` on the wire).

use stackd_core::state;

use super::{ConvertError, from_owned, wire_enum};
use crate::v1;

impl From<state::ObjectKind> for v1::ObjectKind {
    fn from(value: state::ObjectKind) -> Self {
        match value {
            state::ObjectKind::Stack => Self::Stack,
            state::ObjectKind::Service => Self::Service,
            state::ObjectKind::Task => Self::Task,
            state::ObjectKind::Node => Self::Node,
            state::ObjectKind::Config => Self::Config,
            state::ObjectKind::Secret => Self::Secret,
            state::ObjectKind::Snapshot => Self::Snapshot,
        }
    }
}

impl From<v1::ObjectKind> for state::ObjectKind {
    fn from(value: v1::ObjectKind) -> Self {
        match value {
            v1::ObjectKind::Stack => Self::Stack,
            v1::ObjectKind::Service => Self::Service,
            v1::ObjectKind::Task => Self::Task,
            v1::ObjectKind::Node => Self::Node,
            v1::ObjectKind::Config => Self::Config,
            v1::ObjectKind::Secret => Self::Secret,
            v1::ObjectKind::Snapshot => Self::Snapshot,
        }
    }
}

impl From<state::Action> for v1::EventAction {
    fn from(value: state::Action) -> Self {
        match value {
            state::Action::Create => Self::Create,
            state::Action::Update => Self::Update,
            state::Action::Remove => Self::Remove,
        }
    }
}

impl From<v1::EventAction> for state::Action {
    fn from(value: v1::EventAction) -> Self {
        match value {
            v1::EventAction::Create => Self::Create,
            v1::EventAction::Update => Self::Update,
            v1::EventAction::Remove => Self::Remove,
        }
    }
}

impl From<&state::Event> for v1::Event {
    fn from(value: &state::Event) -> Self {
        Self {
            index: value.index,
            seq: value.seq,
            kind: v1::ObjectKind::from(value.kind).into(),
            action: v1::EventAction::from(value.action).into(),
            id: value.id.clone(),
            name: value.name.clone(),
            stack: value.stack.clone(),
            message: value.message.clone(),
            at: value.at,
        }
    }
}

impl TryFrom<v1::Event> for state::Event {
    type Error = ConvertError;

    fn try_from(value: v1::Event) -> Result<Self, ConvertError> {
        Ok(Self {
            index: value.index,
            seq: value.seq,
            kind: wire_enum::<v1::ObjectKind>("Event.kind", value.kind)?.into(),
            action: wire_enum::<v1::EventAction>("Event.action", value.action)?.into(),
            id: value.id,
            name: value.name,
            stack: value.stack,
            message: value.message,
            at: value.at,
        })
    }
}

from_owned!(state::Event => v1::Event);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::round_trip;

    fn event() -> state::Event {
        state::Event {
            index: 42,
            seq: 3,
            kind: state::ObjectKind::Task,
            action: state::Action::Update,
            id: "t1".into(),
            name: "shop_web".into(),
            stack: "shop".into(),
            message: "running".into(),
            at: 1_700_000_000_000,
        }
    }

    #[test]
    fn every_kind_and_action_round_trips() {
        use state::{Action, ObjectKind};
        for kind in [
            ObjectKind::Stack,
            ObjectKind::Service,
            ObjectKind::Task,
            ObjectKind::Node,
            ObjectKind::Config,
            ObjectKind::Secret,
            ObjectKind::Snapshot,
        ] {
            for action in [Action::Create, Action::Update, Action::Remove] {
                round_trip::<_, v1::Event>(&state::Event { kind, action, ..event() });
            }
        }
        let bare = state::Event { stack: String::new(), message: String::new(), ..event() };
        round_trip::<_, v1::Event>(&bare);
    }

    #[test]
    fn unknown_enums_are_refused() {
        let wire = v1::Event { kind: 7, ..event().into() };
        assert_eq!(state::Event::try_from(wire), Err(ConvertError::UnknownEnum { field: "Event.kind", value: 7 }));
        let wire = v1::Event { action: 3, ..event().into() };
        assert_eq!(state::Event::try_from(wire), Err(ConvertError::UnknownEnum { field: "Event.action", value: 3 }));
    }
}
