//! Connecting to a manager.

use anyhow::{Context, Result};
use stackd_proto::v1::control_client::ControlClient;
use tonic::transport::{Channel, Endpoint};

/// Connects to the first manager of `addrs` (comma-separated) that answers.
pub async fn connect(addrs: &str) -> Result<ControlClient<Channel>> {
    let mut last_err = None;
    for addr in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let url = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
        let endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("invalid manager address {addr:?}"))?
            .connect_timeout(std::time::Duration::from_secs(5));
        match endpoint.connect().await {
            Ok(ch) => return Ok(ControlClient::new(ch).max_decoding_message_size(64 << 20)),
            Err(e) => last_err = Some(anyhow::anyhow!("{url}: {e}")),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no manager address given")))
        .context("cannot reach a stackd manager (set --addr or STACKCTL_ADDR, e.g. `set -a; . DATA_DIR/stackctl.env`)")
}

/// Turns a gRPC status into an error that reads well.
pub fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}
