//! Commands: the only way the replicated state changes.
//!
//! Every command carries the time it was proposed at (`at`), so applying it
//! is deterministic on every manager.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{
    Availability, Blob, DataKind, DesiredState, Node, NodeId, NodeState, ServiceId, StackSpec, TaskId, TaskStatus,
    Timestamp, UpdateStatus,
};

/// A change to the cluster state, replicated through Raft.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Sets the cluster's identity; the first entry of a new cluster.
    InitCluster {
        /// Cluster id.
        cluster_id: String,
        /// Time.
        at: Timestamp,
    },
    /// Creates or updates a stack and its services.
    PutStack {
        /// The normalised stack.
        spec: StackSpec,
        /// Remove services of the stack that the spec no longer has.
        prune: bool,
        /// Time.
        at: Timestamp,
    },
    /// Removes a stack, its services and their tasks.
    RemoveStack {
        /// Stack name.
        name: String,
        /// Time.
        at: Timestamp,
    },
    /// Adds or refreshes a node (its agent registered).
    UpsertNode {
        /// The node as the agent describes it; role, availability and labels of an
        /// existing node are kept.
        node: Node,
        /// Time.
        at: Timestamp,
    },
    /// Changes a node's liveness.
    SetNodeState {
        /// Node.
        id: NodeId,
        /// New state.
        state: NodeState,
        /// Time.
        at: Timestamp,
    },
    /// Changes a node's availability.
    SetNodeAvailability {
        /// Node.
        id: NodeId,
        /// New availability.
        availability: Availability,
        /// Time.
        at: Timestamp,
    },
    /// Applies an orchestration plan.
    ApplyPlan {
        /// The plan.
        plan: Plan,
        /// Time.
        at: Timestamp,
    },
    /// Applies scheduling decisions.
    Schedule {
        /// Decisions.
        decisions: Vec<Placement>,
        /// Time.
        at: Timestamp,
    },
    /// Creates a config or secret outside any stack (`stackctl secret create`);
    /// stacks use it with `external: true`. Objects are immutable.
    CreateObject {
        /// Config or secret.
        kind: DataKind,
        /// Name.
        name: String,
        /// Content.
        data: Blob,
        /// Labels.
        labels: BTreeMap<String, String>,
        /// Time.
        at: Timestamp,
    },
    /// Removes a config or secret created with [`Command::CreateObject`];
    /// refused while a service uses it.
    RemoveObject {
        /// Config or secret.
        kind: DataKind,
        /// Name.
        name: String,
        /// Time.
        at: Timestamp,
    },
    /// Records task status reports from agents.
    UpdateTaskStatus {
        /// Reports.
        updates: Vec<TaskStatusUpdate>,
        /// Time.
        at: Timestamp,
    },
}

impl Command {
    /// The time the command was proposed at.
    pub fn at(&self) -> Timestamp {
        match self {
            Command::InitCluster { at, .. }
            | Command::PutStack { at, .. }
            | Command::RemoveStack { at, .. }
            | Command::UpsertNode { at, .. }
            | Command::SetNodeState { at, .. }
            | Command::SetNodeAvailability { at, .. }
            | Command::ApplyPlan { at, .. }
            | Command::Schedule { at, .. }
            | Command::CreateObject { at, .. }
            | Command::RemoveObject { at, .. }
            | Command::UpdateTaskStatus { at, .. } => *at,
        }
    }
}

/// A task to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    /// Service.
    pub service_id: ServiceId,
    /// Slot (0 for global tasks).
    pub slot: u64,
    /// Node, for global tasks (they are created already placed).
    pub node_id: Option<NodeId>,
    /// The service revision the plan was made for; the task is skipped if the
    /// service moved on meanwhile.
    pub revision: u64,
}

/// The output of the orchestrators: what to change so that tasks match services.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Tasks to create.
    pub create: Vec<NewTask>,
    /// Tasks whose desired state changes.
    pub set_desired: Vec<(TaskId, DesiredState)>,
    /// Tasks to delete (history beyond the limit, slots scaled away).
    pub delete: Vec<TaskId>,
    /// Rollout status changes.
    pub update_status: Vec<(ServiceId, UpdateStatus)>,
    /// Services to roll back to their previous revision.
    pub rollback: Vec<ServiceId>,
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.set_desired.is_empty()
            && self.delete.is_empty()
            && self.update_status.is_empty()
            && self.rollback.is_empty()
    }
}

/// A scheduling decision for one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// Run the task on this node.
    Assign {
        /// Task.
        task_id: TaskId,
        /// Node.
        node_id: NodeId,
    },
    /// The task fits nowhere, for this reason.
    Unplaceable {
        /// Task.
        task_id: TaskId,
        /// Why, for the operator.
        reason: String,
    },
}

/// One status report from an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatusUpdate {
    /// Task.
    pub task_id: TaskId,
    /// Node reporting (a report from another node is ignored).
    pub node_id: NodeId,
    /// Observed status.
    pub status: TaskStatus,
}
