//! Docker Swarm on the same engine: `docker swarm init` for the run,
//! `docker swarm leave --force` at the end, and what leaving leaves behind
//! removed (the gateway bridge, the files of its network namespaces).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// A single-node swarm that this benchmark created.
pub struct Swarm {
    /// Whether `docker_gwbridge` was there before `swarm init`.
    gwbridge_before: bool,
    /// The files of Docker's network namespaces before `swarm init`.
    netns_before: BTreeSet<String>,
}

const DOCKER_NETNS: &str = "/var/run/docker/netns";

fn docker_netns() -> BTreeSet<String> {
    std::fs::read_dir(DOCKER_NETNS)
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

/// Runs the docker CLI; its stdout, or an error with its stderr.
pub fn docker(args: &[&str]) -> Result<String> {
    let o = Command::new("docker").args(args).output()?;
    if !o.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

impl Swarm {
    /// Initialises a swarm, unless the engine is in one already (then it is not ours to touch).
    pub fn init() -> Result<Self> {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
        if state.trim() != "inactive" {
            bail!("the engine is already part of a swarm; not touching it");
        }
        let nets = docker(&["network", "ls", "--format", "{{.Name}}"])?;
        let gwbridge_before = nets.lines().any(|l| l.trim() == "docker_gwbridge");
        let netns_before = docker_netns();
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        Ok(Swarm { gwbridge_before, netns_before })
    }

    /// Creates a service of `n` replicas and waits until they run; returns the seconds taken.
    pub fn deploy(&self, image: &str, n: usize) -> Result<f64> {
        let start = Instant::now();
        docker(&[
            "service",
            "create",
            "--quiet",
            "--detach=false",
            "--name",
            "bench-swarm",
            "--replicas",
            &n.to_string(),
            image,
        ])?;
        let took = start.elapsed().as_secs_f64();
        docker(&["service", "rm", "bench-swarm"])?;
        // Wait for its containers to go before the next contender runs.
        for _ in 0..600 {
            if docker(&["ps", "-aq", "--filter", "label=com.docker.swarm.service.name=bench-swarm"])?.trim().is_empty()
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(took)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = docker(&["swarm", "leave", "--force"]);
        if !self.gwbridge_before {
            // `swarm leave` leaves the gateway bridge it created behind.
            for _ in 0..20 {
                if docker(&["network", "rm", "docker_gwbridge"]).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        // …and the files of its namespaces (unmounted, empty).
        std::thread::sleep(Duration::from_secs(1));
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for name in docker_netns().difference(&self.netns_before) {
            let path = Path::new(DOCKER_NETNS).join(name);
            if !mounts.contains(&path.display().to_string()) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}
