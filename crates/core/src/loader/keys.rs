//! The keys compose allows at each place of a file, from the compose
//! specification's JSON schema (`shared/corpus/schema/compose-spec.json`;
//! a test checks each list against it).
//!
//! Each mapping the loader reads handles the keys it applies and passes
//! every other key to [`Ctx::unknown_key`](super::ctx::Ctx::unknown_key)
//! with its [`Place`]: a key of the place that stackd does not apply is a
//! warning; a key the place does not have is an error with a "did you mean"
//! (a typo would otherwise drop a setting, and `docker stack deploy` refuses
//! it too); `x-` keys are allowed where the schema allows them.

/// A mapping of a compose file and the keys compose allows in it.
#[derive(Debug)]
pub(crate) struct Place {
    /// What it is, for messages: `a service`, `deploy`, …
    pub what: &'static str,
    /// Every key compose allows there, applied by stackd or not.
    pub keys: &'static [&'static str],
    /// Whether `x-` keys are allowed there.
    pub extensions: bool,
    /// The place's mapping in the schema, as a JSON pointer (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub schema: &'static str,
    /// A place written under this one, whose keys are suggested with its
    /// name when written here (`replicas` on a service: `deploy.replicas`).
    pub nested: Option<(&'static str, &'static Place)>,
}

const fn place(what: &'static str, schema: &'static str, keys: &'static [&'static str]) -> Place {
    Place { what, keys, extensions: true, schema, nested: None }
}

/// Keys of docker/cli's own schema (`config_schema_v3.*.json`) that the
/// compose specification does not have: `docker stack deploy` takes them,
/// so real Swarm stacks have them. [`SERVICE`] lists them last.
#[cfg(test)]
pub(crate) const SWARM_ONLY_SERVICE_KEYS: &[&str] = &["cgroupns_mode"];

/// The top level of a file.
pub(crate) const TOP: Place = place(
    "a top-level key",
    "",
    &["version", "name", "include", "services", "models", "networks", "volumes", "secrets", "configs"],
);

/// A service.
pub(crate) const SERVICE: Place = Place {
    what: "a service",
    schema: "/definitions/service",
    keys: &[
        "develop",
        "deploy",
        "annotations",
        "attach",
        "build",
        "blkio_config",
        "cap_add",
        "cap_drop",
        "cgroup",
        "cgroup_parent",
        "command",
        "configs",
        "container_name",
        "cpu_count",
        "cpu_percent",
        "cpu_shares",
        "cpu_quota",
        "cpu_period",
        "cpu_rt_period",
        "cpu_rt_runtime",
        "cpus",
        "cpuset",
        "credential_spec",
        "depends_on",
        "device_cgroup_rules",
        "devices",
        "dns",
        "dns_opt",
        "dns_search",
        "domainname",
        "entrypoint",
        "env_file",
        "label_file",
        "environment",
        "expose",
        "extends",
        "provider",
        "external_links",
        "extra_hosts",
        "gpus",
        "group_add",
        "healthcheck",
        "hostname",
        "image",
        "init",
        "ipc",
        "isolation",
        "labels",
        "links",
        "logging",
        "mac_address",
        "mem_limit",
        "mem_reservation",
        "mem_swappiness",
        "memswap_limit",
        "network_mode",
        "models",
        "networks",
        "oom_kill_disable",
        "oom_score_adj",
        "pid",
        "pids_limit",
        "platform",
        "ports",
        "post_start",
        "pre_stop",
        "privileged",
        "profiles",
        "pull_policy",
        "pull_refresh_after",
        "read_only",
        "restart",
        "runtime",
        "scale",
        "security_opt",
        "shm_size",
        "secrets",
        "sysctls",
        "stdin_open",
        "stop_grace_period",
        "stop_signal",
        "storage_opt",
        "tmpfs",
        "tty",
        "ulimits",
        "use_api_socket",
        "user",
        "uts",
        "userns_mode",
        "volumes",
        "volumes_from",
        "working_dir", // docker/cli's schema only:
        "cgroupns_mode",
    ],
    extensions: true,
    nested: Some(("deploy", &DEPLOY)),
};

/// `deploy:`.
pub(crate) const DEPLOY: Place = place(
    "deploy",
    "/definitions/deployment",
    &[
        "mode",
        "endpoint_mode",
        "replicas",
        "labels",
        "rollback_config",
        "update_config",
        "resources",
        "restart_policy",
        "placement",
    ],
);
/// `deploy.restart_policy`.
pub(crate) const RESTART_POLICY: Place = place(
    "restart_policy",
    "/definitions/deployment/properties/restart_policy",
    &["condition", "delay", "max_attempts", "window"],
);
const POLICY: &[&str] = &["parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"];
/// `deploy.update_config`.
pub(crate) const UPDATE_CONFIG: Place =
    place("update_config", "/definitions/deployment/properties/update_config", POLICY);
/// `deploy.rollback_config`.
pub(crate) const ROLLBACK_CONFIG: Place =
    place("rollback_config", "/definitions/deployment/properties/rollback_config", POLICY);
/// `deploy.placement`.
pub(crate) const PLACEMENT: Place = place(
    "placement",
    "/definitions/deployment/properties/placement",
    &["constraints", "preferences", "max_replicas_per_node"],
);
/// An item of `deploy.placement.preferences`.
pub(crate) const PREFERENCE: Place = place(
    "a placement preference",
    "/definitions/deployment/properties/placement/properties/preferences/items",
    &["spread"],
);
/// `deploy.resources`.
pub(crate) const RESOURCES: Place =
    place("resources", "/definitions/deployment/properties/resources", &["limits", "reservations"]);
/// `deploy.resources.limits`.
pub(crate) const LIMITS: Place =
    place("limits", "/definitions/deployment/properties/resources/properties/limits", &["cpus", "memory", "pids"]);
/// `deploy.resources.reservations`.
pub(crate) const RESERVATIONS: Place = place(
    "reservations",
    "/definitions/deployment/properties/resources/properties/reservations",
    &["cpus", "memory", "generic_resources", "devices"],
);
/// An item of `generic_resources`.
pub(crate) const GENERIC_RESOURCE: Place =
    place("a generic resource", "/definitions/generic_resources/items", &["discrete_resource_spec"]);
/// `discrete_resource_spec`.
pub(crate) const DISCRETE_RESOURCE: Place = place(
    "discrete_resource_spec",
    "/definitions/generic_resources/items/properties/discrete_resource_spec",
    &["kind", "value"],
);
/// `healthcheck:`.
pub(crate) const HEALTHCHECK: Place = place(
    "healthcheck",
    "/definitions/healthcheck",
    &["disable", "interval", "retries", "test", "timeout", "start_period", "start_interval"],
);
/// `logging:`.
pub(crate) const LOGGING: Place = place("logging", "/definitions/service/properties/logging", &["driver", "options"]);
/// One limit of `ulimits:` in the long form.
pub(crate) const ULIMIT: Place =
    place("a ulimit", "/definitions/ulimits/patternProperties/^[a-z]+$/oneOf/1", &["soft", "hard"]);
/// A port in the long syntax.
pub(crate) const PORT: Place = place(
    "a port",
    "/definitions/service/properties/ports/items/oneOf/2",
    &["name", "mode", "host_ip", "target", "published", "protocol", "app_protocol"],
);
/// A service volume in the long syntax.
pub(crate) const MOUNT: Place = place(
    "a volume mount",
    "/definitions/service/properties/volumes/items/oneOf/1",
    &["type", "source", "target", "read_only", "consistency", "bind", "volume", "tmpfs", "image"],
);
/// `bind:` of a long-syntax mount.
pub(crate) const MOUNT_BIND: Place = place(
    "bind",
    "/definitions/service/properties/volumes/items/oneOf/1/properties/bind",
    &["propagation", "create_host_path", "recursive", "selinux"],
);
/// `volume:` of a long-syntax mount.
pub(crate) const MOUNT_VOLUME: Place = place(
    "volume",
    "/definitions/service/properties/volumes/items/oneOf/1/properties/volume",
    &["labels", "nocopy", "subpath"],
);
/// `tmpfs:` of a long-syntax mount.
pub(crate) const MOUNT_TMPFS: Place =
    place("tmpfs", "/definitions/service/properties/volumes/items/oneOf/1/properties/tmpfs", &["size", "mode"]);
/// A network of a service (mapping form).
pub(crate) const SERVICE_NETWORK: Place = place(
    "a service's network",
    "/definitions/service/properties/networks/oneOf/1/patternProperties/^[a-zA-Z0-9._-]+$/oneOf/0",
    &[
        "aliases",
        "interface_name",
        "ipv4_address",
        "ipv6_address",
        "link_local_ips",
        "mac_address",
        "driver_opts",
        "priority",
        "gw_priority",
    ],
);
/// A config or secret of a service in the long syntax.
pub(crate) const FILE_REF: Place = place(
    "a config or secret reference",
    "/definitions/service_config_or_secret/items/oneOf/1",
    &["source", "target", "uid", "gid", "mode"],
);
/// A service of `depends_on:` (mapping form).
pub(crate) const DEPENDS_ON: Place = place(
    "a depends_on entry",
    "/definitions/service/properties/depends_on/oneOf/1/patternProperties/^[a-zA-Z0-9._-]+$",
    &["restart", "required", "condition"],
);
/// An `env_file:` entry in the long syntax.
pub(crate) const ENV_FILE: Place = Place {
    what: "an env_file entry",
    schema: "/definitions/env_file/oneOf/1/items/oneOf/1",
    keys: &["path", "format", "required"],
    extensions: false,
    nested: None,
};
/// `extends:` in the long syntax.
pub(crate) const EXTENDS: Place = Place {
    what: "extends",
    schema: "/definitions/service/properties/extends/oneOf/1",
    keys: &["service", "file"],
    extensions: false,
    nested: None,
};
/// A top-level volume.
pub(crate) const VOLUME: Place =
    place("a volume", "/definitions/volume", &["name", "driver", "driver_opts", "external", "labels"]);
/// A top-level network.
pub(crate) const NETWORK: Place = place(
    "a network",
    "/definitions/network",
    &[
        "name",
        "driver",
        "driver_opts",
        "ipam",
        "external",
        "internal",
        "enable_ipv4",
        "enable_ipv6",
        "attachable",
        "labels",
    ],
);
/// `external:` in its old mapping form (`{name: …}`), of a volume or network.
pub(crate) const EXTERNAL: Place = place("external", "/definitions/volume/properties/external", &["name"]);
/// A top-level secret.
pub(crate) const SECRET: Place = place(
    "a secret",
    "/definitions/secret",
    &["name", "environment", "file", "external", "labels", "driver", "driver_opts", "template_driver"],
);
/// A top-level config.
pub(crate) const CONFIG: Place = place(
    "a config",
    "/definitions/config",
    &["name", "content", "environment", "file", "external", "labels", "template_driver"],
);

/// The distance between `a` and `b`: insertions, deletions, substitutions
/// and swaps of two neighbours, one each (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows: two back, one back, this one.
    let mut rows = [(0..=b.len()).collect::<Vec<_>>(), vec![0; b.len() + 1], vec![0; b.len() + 1]];
    for i in 1..=a.len() {
        rows.rotate_left(1);
        rows[2][0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[1][j] + 1).min(rows[2][j - 1] + 1).min(rows[1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[0][j - 2] + 1);
            }
            rows[2][j] = d;
        }
    }
    if a.is_empty() { b.len() } else { rows[2][b.len()] }
}

/// The key of `keys` closest to `key`, if one is close enough to be a typo
/// of it (a third of its length, at least one, or the start of the key:
/// `alias` for `aliases`); ties go to the first.
fn closest<'k>(key: &str, keys: &[&'k str]) -> Option<(&'k str, usize)> {
    let lower = key.to_ascii_lowercase();
    let most = (key.chars().count() / 3).max(1);
    let start = |k: &str| lower.len() >= 4 && k.starts_with(lower.as_str());
    keys.iter().map(|k| (*k, distance(&lower, k))).filter(|(k, d)| *d <= most || start(k)).min_by_key(|(_, d)| *d)
}

/// The key of `keys` that `key` is likely a typo of, if one is close
/// enough (for places that are not the compose specification's, such as
/// `x-stackd-autoscale`).
pub(crate) fn suggest<'k>(key: &str, keys: &[&'k str]) -> Option<&'k str> {
    closest(key, keys).map(|(k, _)| k)
}

/// What to say about `key`, which `place` does not have: a suggestion, or
/// that it is not a compose key there.
pub(crate) fn unknown(key: &str, place: &Place) -> String {
    if key.starts_with("x-") && !place.extensions {
        return format!("unknown key `{key}`: extension keys are not allowed here");
    }
    let here = closest(key, place.keys);
    let nested = place.nested.and_then(|(name, inner)| {
        inner.keys.contains(&key).then_some((name, key)).or_else(|| closest(key, inner.keys).map(|(k, _)| (name, k)))
    });
    match (here, nested) {
        (Some((k, 0..=1)), _) | (Some((k, _)), None) => format!("unknown key `{key}`: did you mean `{k}`?"),
        (_, Some((name, k))) => format!("unknown key `{key}`: did you mean `{name}.{k}`?"),
        (None, None) if place.what == TOP.what => {
            format!("unknown key `{key}`: not a top-level key in the compose specification")
        }
        (None, None) => format!("unknown key `{key}`: not a key of {} in the compose specification", place.what),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("enviroment", "environment"), 1);
        assert_eq!(distance("volumse", "volumes"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("colour", "color"), 1);
        assert_eq!(closest("Image", SERVICE.keys), Some(("image", 0)));
        assert_eq!(closest("colour", SERVICE.keys), None);
    }

    /// The schema: `shared/corpus/schema/compose-spec.json` beside the repository.
    fn schema() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus/schema/compose-spec.json");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("the compose schema at {path}: {e}"));
        serde_json::from_str(&text).expect("the schema is JSON")
    }

    /// Each place's keys are the schema's, and `x-` keys are allowed where
    /// the schema allows them.
    #[test]
    fn places_follow_the_compose_schema() {
        let schema = schema();
        let places = [
            &TOP,
            &SERVICE,
            &DEPLOY,
            &RESTART_POLICY,
            &UPDATE_CONFIG,
            &ROLLBACK_CONFIG,
            &PLACEMENT,
            &PREFERENCE,
            &RESOURCES,
            &LIMITS,
            &RESERVATIONS,
            &GENERIC_RESOURCE,
            &DISCRETE_RESOURCE,
            &HEALTHCHECK,
            &LOGGING,
            &ULIMIT,
            &PORT,
            &MOUNT,
            &MOUNT_BIND,
            &MOUNT_VOLUME,
            &MOUNT_TMPFS,
            &SERVICE_NETWORK,
            &FILE_REF,
            &DEPENDS_ON,
            &ENV_FILE,
            &EXTENDS,
            &VOLUME,
            &NETWORK,
            &EXTERNAL,
            &SECRET,
            &CONFIG,
        ];
        for p in places {
            let node = schema.pointer(p.schema).unwrap_or_else(|| panic!("{}: no {} in the schema", p.what, p.schema));
            let expected: BTreeSet<&str> =
                node["properties"].as_object().expect("properties").keys().map(String::as_str).collect();
            let mut ours: BTreeSet<&str> = p.keys.iter().copied().collect();
            if p.what == SERVICE.what {
                for k in SWARM_ONLY_SERVICE_KEYS {
                    assert!(ours.remove(k), "{k}");
                }
            }
            assert_eq!(ours, expected, "{}", p.what);
            assert_eq!(p.keys.iter().collect::<BTreeSet<_>>().len(), p.keys.len(), "{}: a key twice", p.what);
            let extensions = node.get("patternProperties").and_then(|pp| pp.get("^x-")).is_some();
            assert_eq!(p.extensions, extensions, "{}: x- keys", p.what);
        }
    }
}
