//! The raw Docker API: the floor any orchestrator on this engine stands on.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::future::try_join_all;

const LABEL: &str = "io.stackd.bench";

/// Connects to the local engine.
pub async fn connect() -> Result<Docker> {
    let d = Docker::connect_with_local_defaults().context("connecting to Docker")?;
    Ok(d.negotiate_version().await?)
}

/// The engine's version.
pub async fn engine_version(d: &Docker) -> Result<String> {
    Ok(d.version().await?.version.unwrap_or_default())
}

/// Creates and starts `n` containers concurrently; returns the seconds taken;
/// removes them afterwards.
pub async fn deploy(d: &Docker, image: &str, n: usize) -> Result<f64> {
    deploy_on(d, image, n, None).await
}

/// The network of [`deploy_on`]'s second contender.
pub const NETWORK: &str = "bench-raw-net";

/// `n` concurrent create + start calls, on Docker's default bridge or, with
/// `network`, on that user-defined bridge network (created first, removed
/// after): what a stack's containers have (Docker's embedded DNS and an
/// address on the stack's own network).
pub async fn deploy_on(d: &Docker, image: &str, n: usize, network: Option<&str>) -> Result<f64> {
    if let Some(net) = network {
        let req = bollard::models::NetworkCreateRequest { name: net.to_string(), ..Default::default() };
        d.create_network(req).await.context("creating the benchmark's network")?;
    }
    let start = Instant::now();
    try_join_all((0..n).map(|i| async move {
        let name = format!("bench-raw-{i}");
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            labels: Some(HashMap::from([(LABEL.to_string(), "raw".to_string())])),
            host_config: network
                .map(|net| bollard::models::HostConfig { network_mode: Some(net.to_string()), ..Default::default() }),
            ..Default::default()
        };
        let created = d.create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body).await?;
        d.start_container(&created.id, None).await?;
        Ok::<_, bollard::errors::Error>(())
    }))
    .await?;
    let took = start.elapsed().as_secs_f64();
    cleanup(d).await?;
    if let Some(net) = network {
        d.remove_network(net).await.context("removing the benchmark's network")?;
    }
    Ok(took)
}

/// Removes every container this benchmark made.
pub async fn cleanup(d: &Docker) -> Result<()> {
    let filters = HashMap::from([("label", vec![format!("{LABEL}=raw")])]);
    let list = d.list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build())).await?;
    try_join_all(list.into_iter().filter_map(|c| c.id).map(|id| async move {
        d.remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await
    }))
    .await?;
    Ok(())
}
