//! Who may call what: the [`Action`] each control request asks for, which
//! [`auth::authorize`](crate::auth::authorize) checks against the caller.
//! One line per request; `JoinCluster` and `RenewNodeCertificate` are not
//! here (the join token, the node's own certificate are their credentials).

use stackd_core::Refusal;
use stackd_core::security::Action;
use stackd_proto::v1;
use tonic::Status;

use crate::refusal::refused;

/// A request whose caller is checked: what it asks to do.
pub(super) trait Guarded {
    /// The action to authorize; a request too malformed to tell is refused.
    fn action(&self) -> Result<Action<'_>, Status>;
}

/// Requests that ask for one fixed action.
macro_rules! guarded {
    ($action:expr => $($request:ty),+ $(,)?) => {
        $(impl Guarded for $request {
            fn action(&self) -> Result<Action<'_>, Status> {
                Ok($action)
            }
        })+
    };
}

guarded!(Action::Read =>
    v1::ListStacksRequest,
    v1::ListServicesRequest,
    v1::InspectServiceRequest,
    v1::ListTasksRequest,
    v1::ListObjectsRequest,
    v1::ListNodesRequest,
    v1::InspectNodeRequest,
    v1::ClusterStatusRequest,
    v1::WatchEventsRequest,
    v1::LogsRequest,
    v1::ListSnapshotsRequest,
);
guarded!(Action::ManageObjects => v1::CreateObjectRequest, v1::RemoveObjectRequest);
guarded!(Action::ManageNodes => v1::SetNodeRoleRequest, v1::UpdateNodeRequest, v1::RemoveNodeRequest);
guarded!(Action::ManageTokens => v1::CreateTokenRequest, v1::ListTokensRequest, v1::RevokeTokenRequest);
guarded!(Action::ManageCluster => v1::GetJoinTokenRequest, v1::SaveSnapshotRequest, v1::SetRecoveryKeyRequest, v1::SetSnapshotPolicyRequest, v1::SetAutolockRequest, v1::GetUnlockKeyRequest);

impl Guarded for v1::DeployStackRequest {
    fn action(&self) -> Result<Action<'_>, Status> {
        let spec = self.spec.as_ref().ok_or_else(|| refused(Refusal::invalid("missing stack spec")))?;
        Ok(Action::DeployStack(&spec.name))
    }
}

impl Guarded for v1::RemoveStackRequest {
    fn action(&self) -> Result<Action<'_>, Status> {
        Ok(Action::RemoveStack(&self.name))
    }
}
