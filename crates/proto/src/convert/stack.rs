//! Stacks: `StackSpec`, `Stack`, `VolumeSpec`, `NetworkSpec`, and the
//! `StackNetwork` and `StackVolume` the dispatcher sends to agents.

use stackd_core::model;
use stackd_core::registry::{RegistryAuth, RegistryCredential, registry_key};

use super::{ConvertError, from_owned, required_into, string_map, try_map_values};
use crate::v1;

impl From<&model::VolumeSpec> for v1::VolumeSpec {
    fn from(value: &model::VolumeSpec) -> Self {
        Self {
            name: value.name.clone(),
            external: value.external,
            driver: value.driver.clone(),
            labels: string_map(&value.labels),
            driver_opts: string_map(&value.driver_opts),
        }
    }
}

impl TryFrom<v1::VolumeSpec> for model::VolumeSpec {
    type Error = ConvertError;

    fn try_from(value: v1::VolumeSpec) -> Result<Self, ConvertError> {
        Ok(Self {
            name: value.name,
            external: value.external,
            driver: value.driver,
            labels: value.labels.into_iter().collect(),
            driver_opts: value.driver_opts.into_iter().collect(),
        })
    }
}

impl From<&model::StackVolume> for v1::StackVolume {
    fn from(value: &model::StackVolume) -> Self {
        Self { stack: value.stack.clone(), key: value.key.clone(), spec: Some((&value.spec).into()) }
    }
}

impl TryFrom<v1::StackVolume> for model::StackVolume {
    type Error = ConvertError;

    fn try_from(value: v1::StackVolume) -> Result<Self, ConvertError> {
        Ok(Self { stack: value.stack, key: value.key, spec: required_into("StackVolume.spec", value.spec)? })
    }
}

impl From<&model::NetworkSpec> for v1::NetworkSpec {
    fn from(value: &model::NetworkSpec) -> Self {
        Self {
            name: value.name.clone(),
            external: value.external,
            driver: value.driver.clone(),
            internal: value.internal,
            labels: string_map(&value.labels),
            driver_opts: string_map(&value.driver_opts),
        }
    }
}

impl TryFrom<v1::NetworkSpec> for model::NetworkSpec {
    type Error = ConvertError;

    fn try_from(value: v1::NetworkSpec) -> Result<Self, ConvertError> {
        Ok(Self {
            name: value.name,
            external: value.external,
            driver: value.driver,
            internal: value.internal,
            labels: value.labels.into_iter().collect(),
            driver_opts: value.driver_opts.into_iter().collect(),
        })
    }
}

impl From<&model::StackNetwork> for v1::StackNetwork {
    fn from(value: &model::StackNetwork) -> Self {
        Self { stack: value.stack.clone(), key: value.key.clone(), spec: Some((&value.spec).into()) }
    }
}

/// The spec is required: without it the agent could not create the network.
impl TryFrom<v1::StackNetwork> for model::StackNetwork {
    type Error = ConvertError;

    fn try_from(value: v1::StackNetwork) -> Result<Self, ConvertError> {
        Ok(Self { stack: value.stack, key: value.key, spec: required_into("StackNetwork.spec", value.spec)? })
    }
}

impl From<&model::StackSpec> for v1::StackSpec {
    fn from(value: &model::StackSpec) -> Self {
        Self {
            name: value.name.clone(),
            services: value.services.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
            volumes: value.volumes.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
            configs: value.configs.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
            secrets: value.secrets.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
            networks: value.networks.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
        }
    }
}

/// The wire form of one registry's credentials (`stack` empty).
pub fn registry_credential(registry: &str, c: &RegistryCredential) -> v1::RegistryCredential {
    v1::RegistryCredential {
        registry: registry.to_string(),
        username: c.username.clone(),
        password: c.password.clone(),
        identity_token: c.identity_token.clone(),
        stack: String::new(),
    }
}

impl From<&RegistryAuth> for v1::RegistryAuth {
    fn from(value: &RegistryAuth) -> Self {
        Self { credentials: value.0.iter().map(|(r, c)| registry_credential(r, c)).collect() }
    }
}

impl TryFrom<v1::RegistryCredential> for (String, RegistryCredential) {
    type Error = ConvertError;

    /// The registry (in [`registry_key`] form) and its credentials; a
    /// credential without a registry, or with neither a user name nor an
    /// identity token, is refused (the error never shows a value).
    fn try_from(value: v1::RegistryCredential) -> Result<Self, ConvertError> {
        let registry = registry_key(&value.registry);
        if registry.is_empty() {
            return Err(ConvertError::Missing("RegistryCredential.registry"));
        }
        if value.username.is_empty() && value.identity_token.is_empty() {
            return Err(ConvertError::Missing("RegistryCredential.username"));
        }
        let c = RegistryCredential {
            username: value.username,
            password: value.password,
            identity_token: value.identity_token,
        };
        Ok((registry, c))
    }
}

impl TryFrom<v1::RegistryAuth> for RegistryAuth {
    type Error = ConvertError;

    fn try_from(value: v1::RegistryAuth) -> Result<Self, ConvertError> {
        let pairs: Result<std::collections::BTreeMap<_, _>, _> =
            value.credentials.into_iter().map(<(String, RegistryCredential)>::try_from).collect();
        Ok(RegistryAuth(pairs?))
    }
}

impl std::fmt::Debug for v1::RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("registry", &self.registry)
            .field("stack", &self.stack)
            .finish_non_exhaustive()
    }
}

impl From<v1::DataKind> for model::DataKind {
    fn from(value: v1::DataKind) -> Self {
        match value {
            v1::DataKind::Config => Self::Config,
            v1::DataKind::Secret => Self::Secret,
        }
    }
}

impl From<model::DataKind> for v1::DataKind {
    fn from(value: model::DataKind) -> Self {
        match value {
            model::DataKind::Config => Self::Config,
            model::DataKind::Secret => Self::Secret,
        }
    }
}

impl From<&model::ObjectSpec> for v1::ObjectSpec {
    fn from(value: &model::ObjectSpec) -> Self {
        let (kind, origin) = match &value.origin {
            model::ObjectOrigin::External => ("external", String::new()),
            model::ObjectOrigin::File(p) => ("file", p.clone()),
            model::ObjectOrigin::Environment(v) => ("environment", v.clone()),
            model::ObjectOrigin::Content => ("content", String::new()),
        };
        Self {
            name: value.name.clone(),
            external: value.external,
            origin_kind: kind.to_string(),
            origin_value: origin,
            data: value.data.0.clone(),
            digest: value.digest.clone(),
            labels: string_map(&value.labels),
        }
    }
}

impl TryFrom<v1::ObjectSpec> for model::ObjectSpec {
    type Error = ConvertError;

    fn try_from(value: v1::ObjectSpec) -> Result<Self, ConvertError> {
        let origin = match value.origin_kind.as_str() {
            "external" => model::ObjectOrigin::External,
            "file" => model::ObjectOrigin::File(value.origin_value),
            "environment" => model::ObjectOrigin::Environment(value.origin_value),
            "content" => model::ObjectOrigin::Content,
            other => return Err(ConvertError::Invalid { field: "ObjectSpec.origin_kind", value: other.to_string() }),
        };
        Ok(Self {
            name: value.name,
            external: value.external,
            origin,
            data: model::Blob(value.data),
            digest: value.digest,
            labels: value.labels.into_iter().collect(),
        })
    }
}

/// Keys are kept as they are: whether a service's key matches its
/// `ServiceSpec.name` is for the validator to check.
impl TryFrom<v1::StackSpec> for model::StackSpec {
    type Error = ConvertError;

    fn try_from(value: v1::StackSpec) -> Result<Self, ConvertError> {
        Ok(Self {
            name: value.name,
            services: try_map_values(value.services)?,
            volumes: try_map_values(value.volumes)?,
            configs: try_map_values(value.configs)?,
            secrets: try_map_values(value.secrets)?,
            networks: try_map_values(value.networks)?,
        })
    }
}

impl From<&model::Stack> for v1::Stack {
    fn from(value: &model::Stack) -> Self {
        Self {
            name: value.name.clone(),
            volumes: value.volumes.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
            created_at: value.created_at,
            updated_at: value.updated_at,
            networks: value.networks.iter().map(|(k, v)| (k.clone(), v.into())).collect(),
            registries: value.registry_auth.registries().map(str::to_string).collect(),
        }
    }
}

impl TryFrom<v1::Stack> for model::Stack {
    type Error = ConvertError;

    fn try_from(value: v1::Stack) -> Result<Self, ConvertError> {
        Ok(Self {
            name: value.name,
            volumes: try_map_values(value.volumes)?,
            networks: try_map_values(value.networks)?,
            // Read APIs carry the registries' names only.
            registry_auth: RegistryAuth::default(),
            created_at: value.created_at,
            updated_at: value.updated_at,
        })
    }
}

from_owned!(
    model::VolumeSpec => v1::VolumeSpec,
    model::NetworkSpec => v1::NetworkSpec,
    model::StackNetwork => v1::StackNetwork,
    model::StackVolume => v1::StackVolume,
    model::StackSpec => v1::StackSpec,
    model::Stack => v1::Stack,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::tests::{network, round_trip, stack_spec, volume};

    #[test]
    fn volumes_round_trip() {
        round_trip::<_, v1::VolumeSpec>(&volume());
        round_trip::<_, v1::VolumeSpec>(&model::VolumeSpec::default());
        round_trip::<_, v1::VolumeSpec>(&model::VolumeSpec { driver: Some(String::new()), ..volume() });
        let sv = model::StackVolume { stack: "shop".into(), key: "data".into(), spec: volume() };
        round_trip::<_, v1::StackVolume>(&sv);
        round_trip::<_, v1::StackVolume>(&model::StackVolume::default());
        let missing = v1::StackVolume { stack: "shop".into(), key: "data".into(), spec: None };
        assert!(model::StackVolume::try_from(missing).is_err());
    }

    #[test]
    fn networks_round_trip() {
        round_trip::<_, v1::NetworkSpec>(&network());
        round_trip::<_, v1::NetworkSpec>(&model::NetworkSpec::default());
        round_trip::<_, v1::NetworkSpec>(&model::NetworkSpec { driver: Some(String::new()), ..network() });
        let sn = model::StackNetwork { stack: "shop".into(), key: "back".into(), spec: network() };
        round_trip::<_, v1::StackNetwork>(&sn);
        round_trip::<_, v1::StackNetwork>(&model::StackNetwork::default());
    }

    #[test]
    fn a_stack_network_without_spec_is_refused() {
        let wire = v1::StackNetwork { stack: "shop".into(), key: "back".into(), spec: None };
        assert_eq!(model::StackNetwork::try_from(wire), Err(ConvertError::Missing("StackNetwork.spec")));
    }

    #[test]
    fn stack_specs_round_trip() {
        round_trip::<_, v1::StackSpec>(&stack_spec());
        round_trip::<_, v1::StackSpec>(&model::StackSpec::default());
    }

    #[test]
    fn stacks_round_trip() {
        let spec = stack_spec();
        let stack = model::Stack {
            name: spec.name,
            volumes: spec.volumes,
            networks: spec.networks,
            registry_auth: Default::default(),
            created_at: 1,
            updated_at: 2,
        };
        assert!(!stack.networks.is_empty());
        round_trip::<_, v1::Stack>(&stack);
        round_trip::<_, v1::Stack>(&model::Stack {
            volumes: std::collections::BTreeMap::new(),
            networks: std::collections::BTreeMap::new(),
            ..stack
        });
    }

    #[test]
    fn a_bad_service_fails_the_whole_spec() {
        let mut wire = v1::StackSpec::from(stack_spec());
        if let Some(s) = wire.services.get_mut("web") {
            s.mode = None;
        }
        assert_eq!(model::StackSpec::try_from(wire), Err(ConvertError::Missing("ServiceSpec.mode")));
    }
}
