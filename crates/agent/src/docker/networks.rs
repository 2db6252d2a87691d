//! Networks and volumes: looked up and created under the locks of the
//! module doc, connected, and removed once nothing wants them.

use super::*;

/// How long an agent waits for another process's network lock before it
/// goes on without it.
pub(super) const HOST_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Takes the host-wide network lock: held while the returned file is open.
/// `None` (after a warning) when it cannot be had; creating goes on.
pub(super) async fn host_network_lock() -> Option<std::fs::File> {
    let path = std::env::temp_dir().join("stackd-networks.lock");
    let opened = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path);
    let file = match opened.or_else(|_| std::fs::File::open(&path)) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the network lock file");
            return None;
        }
    };
    let deadline = tokio::time::Instant::now() + HOST_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Some(file),
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot take the network lock; going on without it");
                return None;
            }
        }
    }
}

/// A listed network in the agent's terms.
pub(super) fn network_info(n: Network) -> Option<NetworkInfo> {
    Some(NetworkInfo {
        id: n.id?,
        name: n.name.unwrap_or_default(),
        created: n.created.unwrap_or_default(),
        labels: n.labels.unwrap_or_default(),
        subnets: n.ipam.and_then(|i| i.config).unwrap_or_default().into_iter().filter_map(|c| c.subnet).collect(),
    })
}

/// A volume in the agent's terms.
pub(super) fn volume_info(v: Volume) -> VolumeInfo {
    VolumeInfo {
        name: v.name,
        driver: v.driver,
        options: v.options.into_iter().collect(),
        labels: v.labels.into_iter().collect(),
    }
}

/// How long a network left over from a removed stack may take to lose its
/// containers before a task that needs its name fails.
const STALE_WAIT: Duration = Duration::from_secs(60);
/// How often it is looked at meanwhile.
const STALE_RETRY: Duration = Duration::from_millis(500);

impl Executor {
    async fn list_networks(&self, filter: (&str, String)) -> Result<Vec<NetworkInfo>, DockerError> {
        let opts =
            ListNetworksOptions { filters: Some(HashMap::from([(filter.0.to_string(), vec![filter.1.clone()])])) };
        let list = self.docker.list_networks(Some(opts)).await.map_err(|e| engine("list networks", e))?;
        // The engine's `name` filter matches parts of names.
        let exact = filter.0 != "name";
        Ok(list.into_iter().filter_map(network_info).filter(|n| exact || n.name == filter.1).collect())
    }

    /// Every network called exactly `name`.
    pub async fn networks_named(&self, name: &str) -> Result<Vec<NetworkInfo>, DockerError> {
        self.list_networks(("name", name.to_string())).await
    }

    /// The networks stackd created for this cluster (any node's, on this engine).
    pub async fn cluster_networks(&self, ctx: &ContainerContext) -> Result<Vec<NetworkInfo>, DockerError> {
        self.list_networks(("label", format!("{LABEL_CLUSTER}={}", ctx.cluster_id))).await
    }

    /// Makes sure the network `net` exists. An external network must exist
    /// already ([`DockerError::NetworkMissing`]); a stack network is created
    /// as a local network with stackd's labels unless a network stackd
    /// created has the name already (one that stackd did not create is
    /// [`DockerError::NetworkTaken`]). A create that races with another
    /// agent's is not an error. True when this call created it.
    ///
    /// A stackd network of the name whose subnet is not the one the
    /// cluster gives it now is left over from a stack removed a moment ago
    /// (its containers go first, the network a little later): it is removed
    /// and created anew, once its last containers are gone (looked at every
    /// [`STALE_RETRY`] for up to [`STALE_WAIT`], then
    /// [`DockerError::NetworkStale`]).
    ///
    /// A network that exists is found without the locks: only a create
    /// holds them. (Every task of a deploy took both locks in turn for a
    /// look at the engine's networks: 30 replicas queued for about half a
    /// second before their containers were created.)
    pub async fn ensure_network(
        &self,
        ctx: &ContainerContext,
        net: &StackNetwork,
        view: Option<&stackd_core::net::NetView>,
    ) -> Result<bool, DockerError> {
        let name = &net.spec.name;
        if net.spec.external {
            return match self.docker.inspect_network(name, None).await {
                Ok(_) => Ok(false),
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {
                    Err(DockerError::NetworkMissing { name: name.clone() })
                }
                Err(e) => Err(engine("inspect network", e)),
            };
        }
        // The subnet the cluster gives the network (a network spanning nodes).
        let wanted = view.filter(|_| ctx.overlay_mtu.is_some()).map(|v| v.subnet.to_string());
        let found = |existing: &[NetworkInfo]| {
            spec::keeper(existing).map(|n| {
                if !spec::is_stackd_network(&n.labels) {
                    Err(DockerError::NetworkTaken { name: name.clone() })
                } else if let Some(w) = wanted.as_ref().filter(|w| spec::left_over(n, Some(w.as_str()))) {
                    // Left over from a stack removed a moment ago, whose
                    // subnet the cluster has given to another since.
                    Ok(Some((n.id.clone(), n.subnets.join(","), w.clone())))
                } else {
                    Ok(None)
                }
            })
        };
        let deadline = tokio::time::Instant::now() + STALE_WAIT;
        loop {
            match found(&self.networks_named(name).await?) {
                Some(Ok(None)) => return Ok(false),
                Some(Err(e)) => return Err(e),
                // Absent, or to replace: under the locks, after a second look.
                Some(Ok(Some(_))) | None => {}
            }
            let one_at_a_time = self.network_lock.lock().await;
            let one_per_host = host_network_lock().await;
            match found(&self.networks_named(name).await?) {
                Some(Ok(None)) => return Ok(false),
                Some(Err(e)) => return Err(e),
                Some(Ok(Some((id, found, wanted)))) => match self.docker.remove_network(&id).await {
                    Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {
                        tracing::info!(network = %name, %found, %wanted, "replacing a left-over network with the cluster's subnet");
                    }
                    // Its containers are on their way out (a stack removed a
                    // moment ago): look again in a while, without the locks.
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        tracing::debug!(network = %name, error = %describe(&e), "a left-over network cannot go yet");
                        drop(one_per_host);
                        drop(one_at_a_time);
                        tokio::time::sleep(STALE_RETRY).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::info!(network = %name, error = %describe(&e), "a left-over network cannot go");
                        return Err(DockerError::NetworkStale { name: name.clone(), found, wanted });
                    }
                },
                None => {}
            }
            let created = match self.docker.create_network(spec::network_body(net, ctx, view)).await {
                Ok(resp) => resp.id,
                Err(e) if already_exists(&e) => return Ok(false),
                Err(e) => return Err(engine("create network", e)),
            };
            // Another agent on this engine may have created a twin at the same moment.
            let same = self.networks_named(name).await?;
            if let Some(k) = spec::keeper(&same)
                && k.id != created
            {
                tracing::info!(network = %name, "another agent created the network at the same time: keeping its one");
                if let Err(e) = self.docker.remove_network(&created).await {
                    tracing::warn!(network = %name, error = %describe(&e), "cannot remove a duplicate network");
                }
            }
            return Ok(true);
        }
    }

    /// The volume called `name`, if it exists.
    pub async fn inspect_volume(&self, name: &str) -> Result<Option<VolumeInfo>, DockerError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(volume_info(v))),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(engine("inspect volume", e)),
        }
    }

    /// Makes sure the named volume `vol` exists as the stack declares it. An
    /// external volume must exist already ([`DockerError::VolumeMissing`]);
    /// a stack volume is created with its driver, driver options and labels
    /// (plus stackd's) unless it exists. One that exists — or that another
    /// runner created at the same moment, which the engine answers with the
    /// existing volume — must have the same driver and options
    /// ([`DockerError::VolumeMismatch`]): the engine itself would silently
    /// keep the old ones, and the data would land elsewhere than the stack
    /// says. A missing volume plugin is [`DockerError::VolumePlugin`].
    pub async fn ensure_volume(&self, ctx: &ContainerContext, vol: &StackVolume) -> Result<(), DockerError> {
        let name = &vol.spec.name;
        let existing = self.inspect_volume(name).await?;
        if vol.spec.external {
            return match existing {
                Some(_) => Ok(()),
                None => Err(DockerError::VolumeMissing { name: name.clone() }),
            };
        }
        let volume = match existing {
            Some(v) => v,
            None => match self.docker.create_volume(spec::volume_body(vol, ctx)).await {
                Ok(v) => {
                    tracing::info!(volume = %name, driver = %v.driver, "created volume");
                    volume_info(v)
                }
                Err(e) if plugin_missing(&e) => {
                    return Err(DockerError::VolumePlugin {
                        name: name.clone(),
                        driver: spec::volume_driver(vol.spec.driver.as_deref()).to_string(),
                        message: describe(&e),
                    });
                }
                Err(e) => return Err(engine("create volume", e)),
            },
        };
        match spec::volume_mismatch(&volume, &vol.spec) {
            None => Ok(()),
            Some(why) => Err(DockerError::VolumeMismatch(why)),
        }
    }

    /// Connects a container to the networks of its task it is not on yet
    /// (with the task's aliases). The first one is joined at creation; the
    /// others here, before the container starts.
    pub async fn connect_networks(
        &self,
        ctx: &ContainerContext,
        container_id: &str,
        task: &Task,
    ) -> Result<(), DockerError> {
        if task.template.networks.len() < 2 {
            return Ok(());
        }
        let resp =
            self.docker.inspect_container(container_id, None).await.map_err(|e| engine("inspect container", e))?;
        let joined: BTreeSet<String> =
            resp.network_settings.and_then(|n| n.networks).unwrap_or_default().into_keys().collect();
        for a in task.template.networks.iter().filter(|a| !joined.contains(&a.network)) {
            let req = NetworkConnectRequest {
                container: container_id.to_string(),
                endpoint_config: Some(spec::endpoint(task, a, ctx)),
            };
            match self.docker.connect_network(&a.network, req).await {
                Ok(()) => {}
                Err(e) if already_exists(&e) => {}
                Err(e) => return Err(engine("connect network", e)),
            }
        }
        Ok(())
    }

    /// Removes this cluster's networks that no task of the node wants
    /// (`wanted`: engine names). A network that a running container still
    /// uses (another node's on the same engine, say) is left: the engine
    /// refuses. External networks and networks stackd did not create are
    /// never touched. Returns the names removed.
    pub async fn remove_unused_networks(
        &self,
        ctx: &ContainerContext,
        wanted: &BTreeSet<String>,
    ) -> Result<Vec<String>, DockerError> {
        let _one_at_a_time = self.network_lock.lock().await;
        let networks = self.cluster_networks(ctx).await?;
        let mut removed = Vec::new();
        for n in spec::unused_networks(&networks, ctx, wanted) {
            // A container created but not started yet (another agent's on this
            // engine, between create and start) is no active endpoint: keep its network.
            let about_to_start = ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([
                    ("network".to_string(), vec![n.id.clone()]),
                    ("status".to_string(), vec!["created".to_string()]),
                ])),
                ..Default::default()
            };
            match self.docker.list_containers(Some(about_to_start)).await {
                Ok(found) if found.is_empty() => {}
                Ok(_) => continue,
                Err(e) => return Err(engine("list containers", e)),
            }
            match self.docker.remove_network(&n.id).await {
                Ok(()) => removed.push(n.name.clone()),
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => tracing::debug!(network = %n.name, error = %describe(&e), "network still in use; kept"),
            }
        }
        Ok(removed)
    }
}
