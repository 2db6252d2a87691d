//! What the executor could not do, and how the engine's errors are read.

use super::*;

/// What the executor could not do.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine cannot be reached (no socket, refused, or no usable version).
    #[error("cannot reach the Docker engine at {endpoint}: {message}")]
    Unreachable {
        /// The socket or host tried.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// No such container or image.
    #[error("{message}")]
    NotFound {
        /// The daemon's message.
        message: String,
    },
    /// The container name is taken by a container that is not this task's.
    #[error("container name {name} is already in use by another container: {message}")]
    Conflict {
        /// The contested name.
        name: String,
        /// The daemon's message.
        message: String,
    },
    /// The image is not present locally and could not be pulled.
    #[error("image {image} not found locally and pull failed: {message}")]
    ImageUnavailable {
        /// The image reference.
        image: String,
        /// Why the pull failed.
        message: String,
    },
    /// `pull_policy: always`, and the pull failed (the node's copy is not used).
    #[error("image {image}: pull_policy always, and the pull failed: {message}")]
    PullFailed {
        /// The image reference.
        image: String,
        /// Why the pull failed.
        message: String,
    },
    /// The registry refused the pull for want of credentials, and the
    /// deploy sent none for it.
    #[error(
        "pull access denied for registry {registry}: no credentials were sent with the deploy \
         (stackctl deploy --with-registry-auth): image {image}: {message}"
    )]
    PullNoCredentials {
        /// The registry.
        registry: String,
        /// The image reference.
        image: String,
        /// The engine's message.
        message: String,
    },
    /// The registry refused the credentials the deploy sent for it.
    #[error(
        "pull access denied for registry {registry}: the registry refused the credentials sent with the deploy \
         (stackctl deploy --with-registry-auth again with valid ones): image {image}: {message}"
    )]
    PullCredentialsRefused {
        /// The registry.
        registry: String,
        /// The image reference.
        image: String,
        /// The engine's message.
        message: String,
    },
    /// `pull_policy: never`, and the image is not on the node.
    #[error(
        "image {image} is not on this node, and pull_policy is never: load it on the node (docker load, docker pull) \
         or use pull_policy missing"
    )]
    NotPresent {
        /// The image reference.
        image: String,
    },
    /// An external network the task joins does not exist.
    #[error(
        "external network {name} does not exist on this node: create it (docker network create {name}) or drop `external` from the stack file"
    )]
    NetworkMissing {
        /// The network's name.
        name: String,
    },
    /// A network of the stack's name exists, but stackd did not create it.
    #[error(
        "network {name} exists but was not created by stackd: remove it, or declare the network `external` in the stack file"
    )]
    NetworkTaken {
        /// The network's name.
        name: String,
    },
    /// A network of a stack removed a moment ago is still on the node with
    /// the subnet the cluster gave it then, and still has containers: it is
    /// replaced once they are gone (the task is tried again).
    #[error(
        "network {name} is left over from before (subnet {found}; the cluster now gives it {wanted}) and still has containers: it is replaced once they are gone"
    )]
    NetworkStale {
        /// The network's name.
        name: String,
        /// The subnet it has.
        found: String,
        /// The subnet the cluster gives it.
        wanted: String,
    },
    /// An external volume a task mounts does not exist.
    #[error(
        "external volume {name} does not exist on this node: create it (docker volume create {name}, with the driver and options it needs) or drop `external` from the stack file"
    )]
    VolumeMissing {
        /// The volume's name.
        name: String,
    },
    /// A volume of the stack's name exists with another driver or other
    /// options (the engine would silently keep them).
    #[error("{0}")]
    VolumeMismatch(String),
    /// The volume driver (a plugin) is not installed on this node.
    #[error(
        "volume {name}: the volume driver {driver} is not installed on this node (docker plugin install {driver}; docker plugin ls lists them): {message}"
    )]
    VolumePlugin {
        /// The volume's name.
        name: String,
        /// The driver the stack names.
        driver: String,
        /// The daemon's message.
        message: String,
    },
    /// Any other failure of a request to the engine.
    #[error("{op}: {message}")]
    Engine {
        /// What was attempted (`"create container"`).
        op: &'static str,
        /// The daemon's message, or the transport error.
        message: String,
    },
}

impl DockerError {
    /// Whether the error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound { .. })
    }

    /// Whether the engine could not find (or tell apart) a network the
    /// request named: it was removed meanwhile, or a twin exists for a moment.
    /// Making sure of the networks again and retrying is the remedy.
    pub fn is_network_gone(&self) -> bool {
        let message = match self {
            DockerError::NotFound { message } | DockerError::Engine { message, .. } => message,
            _ => return false,
        };
        message.contains("network") && (message.contains("not found") || message.contains("ambiguous"))
    }
}

/// Whether the engine says the object exists already.
pub(super) fn already_exists(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code, message }
        if *status_code == 409 || message.contains("already exists"))
}

/// Whether the engine says a volume driver (plugin) is missing.
pub(super) fn plugin_missing(e: &BollardError) -> bool {
    let message = describe(e);
    message.contains("plugin") && message.contains("not found")
}

/// The daemon's own message for an error response, else the error's text.
pub(super) fn describe(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

/// Whether an engine's pull error is the registry refusing access: no or
/// bad credentials (a registry's 401, Docker Hub's "pull access denied").
pub(crate) fn auth_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "no basic auth credentials",
        "unauthorized",
        "authentication required",
        "pull access denied",
        "access to the resource is denied",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Classifies a bollard error: 404 becomes [`DockerError::NotFound`].
pub(super) fn engine(op: &'static str, e: BollardError) -> DockerError {
    match e {
        BollardError::DockerResponseServerError { status_code: 404, message } => {
            DockerError::NotFound { message: message.trim().to_string() }
        }
        other => DockerError::Engine { op, message: describe(&other) },
    }
}
