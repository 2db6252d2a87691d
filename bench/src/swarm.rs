//! Docker Swarm on the same engine: `docker swarm init` for the run,
//! `docker swarm leave --force` at the end.

use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

/// A single-node swarm that this benchmark created.
pub struct Swarm;

fn docker(args: &[&str]) -> Result<String> {
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
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        Ok(Swarm)
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
    }
}
