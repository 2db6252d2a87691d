//! What core's integration tests share: the awesome-compose corpus in
//! `../shared/corpus` beside the repository, and security fixtures. A missing corpus fails the
//! test rather than skipping it.

#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeMap;
use std::path::PathBuf;

use stackd_core::loader::SourceFile;
use stackd_core::model::{Availability, Node, NodeRole, NodeState, Resources, digest};
use stackd_core::{ClientToken, TokenRole};

/// The folder of the awesome-compose files.
pub fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/awesome-compose");
    assert!(dir.is_dir(), "the compose corpus is missing at {}", dir.display());
    dir
}

/// Every corpus file, named by its file name, in name order.
pub fn corpus_files() -> Vec<SourceFile> {
    let dir = corpus_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read the corpus folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no compose files in {}", dir.display());
    paths
        .iter()
        .map(|p| SourceFile {
            name: p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            text: std::fs::read_to_string(p).expect("readable corpus file"),
        })
        .collect()
}

/// Values for the variables some corpus files use.
pub fn corpus_env() -> BTreeMap<String, String> {
    [
        "TZ",
        "PIHOLE_PW",
        "PIHOLE_ROUTER_IP",
        "PIHOLE_NETWORK_DOMAIN",
        "PIHOLE_HOSTNAME",
        "POSTGRES_USER",
        "POSTGRES_PW",
        "POSTGRES_DB",
        "PGADMIN_MAIL",
        "PGADMIN_PW",
        "PLEX_MEDIA_PATH",
    ]
    .iter()
    .map(|k| (k.to_string(), format!("/v-{}", k.to_lowercase())))
    .collect()
}

/// A client token as the cluster stores it; its secret's digest is derived
/// from its id.
pub fn token(id: &str, name: &str, role: TokenRole, stacks: &[&str]) -> ClientToken {
    ClientToken {
        id: id.into(),
        name: name.into(),
        role,
        stacks: stacks.iter().map(|s| s.to_string()).collect(),
        secret_sha256: digest(id.as_bytes()),
        created_at: 0,
    }
}

/// A ready, active node `id` (named `host-<id>`) with `role`.
pub fn node(id: &str, role: NodeRole) -> Node {
    Node {
        id: id.into(),
        name: format!("host-{id}"),
        addr: format!("{id}:4280"),
        role,
        availability: Availability::Active,
        state: NodeState::Ready,
        labels: BTreeMap::new(),
        resources: Resources::default(),
        engine_version: String::new(),
        engine: Default::default(),
        updated_at: 0,
    }
}

/// Stack `shop` with one service `web` of 2 replicas running `image`, every
/// policy at its default.
pub fn shop_web(image: &str) -> stackd_core::model::StackSpec {
    use stackd_core::model::*;
    let svc = ServiceSpec::replicated("web", 2, TaskTemplate { image: image.into(), ..Default::default() });
    StackSpec { name: "shop".into(), services: BTreeMap::from([("web".to_string(), svc)]), ..Default::default() }
}
