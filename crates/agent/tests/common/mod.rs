//! What the agent's Docker tests share: the test images, the engine (a
//! notice and `None` when it is unreachable, a failure when `CI=true`), and
//! a guard that removes a test node's containers.

#![allow(dead_code)] // each test binary uses a part

use std::process::Command;
use std::sync::OnceLock;

use stackd_agent::docker::{Executor, LABEL_NODE};

/// Builds the test images once per test binary.
pub fn build_images() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/images/build.sh");
        let out = Command::new("bash").arg(script).output().map_err(|e| format!("cannot run {script}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{script} failed: {}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The executor, or `None` (after a notice) when Docker is unreachable outside CI.
pub async fn docker() -> Option<Executor> {
    match Executor::connect(None).await {
        Ok(exec) => {
            build_images();
            Some(exec)
        }
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true and Docker is unreachable: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: Docker is unreachable: {e}");
            None
        }
    }
}

/// Removes every container of a node when dropped, even when a test fails.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={LABEL_NODE}={}", self.0);
        let Ok(out) = Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output() else { return };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").args(["rm", "-f", "-v"]).args(&ids).output();
        }
    }
}
