//! `stackd`: the daemon. One process runs the manager role and the agent role
//! of a node, serving every gRPC service on one TCP address. This binary
//! parses arguments, sets up tracing and signals, and calls the library's
//! [`stackd::run_roles`] (see the crate's Layout in `lib.rs`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use stackd::{NodeOptions, join, run_roles};
use stackd_manager::{Identity, Timings};
use tokio_util::sync::CancellationToken;

/// stackd: a lightweight container orchestrator for stacks of compose files.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new cluster with this node as its first manager, and run it.
    Init {
        /// Where the node keeps its state.
        #[arg(long, env = "STACKD_DATA_DIR")]
        data_dir: PathBuf,
        /// Autolock: every manager's raft data is wrapped by an unlock key,
        /// printed once the cluster is initialised, that a manager needs to
        /// start (`stackd unlock`, `stackctl cluster unlock`). Turn it on
        /// or off later with `stackctl cluster autolock on|off`.
        #[arg(long)]
        autolock: bool,
        /// The address all of the node's gRPC services listen on.
        #[arg(long, default_value = "127.0.0.1:4280")]
        listen: String,
        #[command(flatten)]
        naming: Naming,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Join an existing cluster with a join token, and run. The token
    /// (`stackctl cluster join-token manager|worker`) decides the role.
    Join {
        /// The address of a manager of the cluster (IP:PORT).
        manager: String,
        /// The join token, STK-1-<CA digest>-<secret>.
        #[arg(long, env = "STACKD_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Where the node keeps its state (must not hold a node yet).
        #[arg(long, env = "STACKD_DATA_DIR")]
        data_dir: PathBuf,
        /// The address the node's gRPC services listen on; required to join
        /// as a manager.
        #[arg(long)]
        listen: Option<String>,
        #[command(flatten)]
        naming: Naming,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Start a new single-manager cluster from a snapshot file
    /// (`stackctl snapshot save`), with the cluster id, CA, secrets and
    /// tokens it holds, and run it. The workers reconnect and keep their
    /// containers; the other managers join afresh (docs/operations.md).
    Restore {
        /// The snapshot file, or `s3://BUCKET/KEY` (with --s3-endpoint;
        /// credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or
        /// --s3-credentials-file).
        #[arg(long)]
        from: String,
        /// The S3 API of an `s3://` source (`https://s3.eu-west-1.amazonaws.com`).
        #[arg(long)]
        s3_endpoint: Option<String>,
        /// The region of an `s3://` source (default us-east-1).
        #[arg(long)]
        s3_region: Option<String>,
        /// A file with `aws_access_key_id` and `aws_secret_access_key`.
        #[arg(long)]
        s3_credentials_file: Option<PathBuf>,
        /// The recovery key that opens it (`recovery.key`).
        #[arg(long)]
        key_file: PathBuf,
        /// A new (or empty) data dir for this manager.
        #[arg(long, env = "STACKD_DATA_DIR")]
        data_dir: PathBuf,
        /// The address all of the node's gRPC services listen on; give an
        /// old manager's address, so that the workers find it.
        #[arg(long, default_value = "127.0.0.1:4280")]
        listen: String,
        /// Move a data dir that is not empty aside first (to
        /// DIR.before-restore-<time>) instead of refusing.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        naming: Naming,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Give a locked manager (autolock) on this host its unlock key: the
    /// manager of DATA_DIR, waiting for it, then starts.
    Unlock {
        /// The data dir of the locked manager.
        #[arg(long, env = "STACKD_DATA_DIR")]
        data_dir: PathBuf,
        /// A file holding the unlock key; without it, the key is read from
        /// standard input (`stackctl cluster unlock-key` prints it).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Run an existing node from its data dir.
    Run {
        /// Where the node keeps its state.
        #[arg(long, env = "STACKD_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// How a new node is known to the others (`init`, `join`).
#[derive(clap::Args)]
struct Naming {
    /// The address other nodes reach this one at, when it is not `--listen`
    /// (which may be 0.0.0.0:PORT): managers and agents dial it.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// The node's name (default: the hostname).
    #[arg(long)]
    name: Option<String>,
}

/// What the node offers, given each time it starts.
#[derive(clap::Args)]
struct NodeArgs {
    /// A generic resource this node offers to tasks, as KIND=COUNT (`gpu=2`);
    /// repeatable. Services reserve them with `deploy.resources.reservations.generic_resources`.
    #[arg(long = "resource", value_name = "KIND=COUNT", value_parser = parse_resource, env = "STACKD_RESOURCES", value_delimiter = ',')]
    resources: Vec<(String, u64)>,
    /// Run the manager role only, without the agent: the node runs no tasks
    /// and needs no Docker engine (managers only).
    #[arg(long, env = "STACKD_NO_AGENT")]
    no_agent: bool,
    /// Several nodes share this node's Docker engine (a test setup on one
    /// machine): the cluster's networks stay local bridges and do not span
    /// nodes.
    #[arg(long, env = "STACKD_SHARED_ENGINE")]
    shared_engine: bool,
    /// The UDP port of the VXLAN tunnels between nodes (the same on every
    /// node; Swarm uses 4789).
    #[arg(long, env = "STACKD_VXLAN_PORT", default_value_t = stackd_agent::dataplane::DEFAULT_VXLAN_PORT)]
    vxlan_port: u16,
    /// A plain HTTP address (`127.0.0.1:9280`) serving /healthz, /readyz
    /// and /metrics (Prometheus), for systemd, load balancers and
    /// Prometheus; nothing secret is served there. Off by default.
    #[arg(long, env = "STACKD_METRICS_ADDR")]
    metrics_addr: Option<String>,
    /// An HTTPS address (`10.0.0.1:4443`) serving a read-only status page
    /// (nodes, services, failed tasks, events) with the node's certificate,
    /// behind a sign-in with a client token (a viewer's is enough).
    /// Managers only; off by default.
    #[arg(long, env = "STACKD_STATUS_ADDR")]
    status_addr: Option<String>,
    /// Autolock: a file holding the cluster's unlock key, so that the
    /// manager starts unlocked (without it a locked manager waits for
    /// `stackd unlock`). STACKD_UNLOCK_KEY gives the key itself.
    #[arg(long, env = "STACKD_UNLOCK_KEY_FILE")]
    unlock_key_file: Option<PathBuf>,
    #[command(flatten)]
    raft: RaftArgs,
}

/// Raft's timing and log compaction (managers). All managers of a cluster
/// should use the same values.
#[derive(clap::Args)]
struct RaftArgs {
    /// The leader's heartbeat period, in milliseconds.
    #[arg(long, env = "STACKD_RAFT_HEARTBEAT_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..))]
    raft_heartbeat_ms: u64,
    /// The lower end of the election timeout, in milliseconds. A follower
    /// campaigns after `--raft-election-max-ms` (the leader's lease) plus a
    /// timeout between the two without hearing from a leader.
    #[arg(long, env = "STACKD_RAFT_ELECTION_MIN_MS", default_value_t = 500)]
    raft_election_min_ms: u64,
    /// The upper end of the election timeout, in milliseconds.
    #[arg(long, env = "STACKD_RAFT_ELECTION_MAX_MS", default_value_t = 1000)]
    raft_election_max_ms: u64,
    /// Take a snapshot of the state after this many log entries (0: never).
    #[arg(long, env = "STACKD_RAFT_SNAPSHOT_EVERY", default_value_t = 5000)]
    raft_snapshot_every: u64,
    /// Log entries kept behind a snapshot; a manager further behind catches
    /// up by receiving the snapshot.
    #[arg(long, env = "STACKD_RAFT_KEEP_LOGS", default_value_t = 500)]
    raft_keep_logs: u64,
}

impl NodeArgs {
    /// The options of [`run_roles`]; fails on inconsistent Raft timings
    /// or an unreadable unlock key.
    fn options(&self) -> Result<NodeOptions> {
        let unlock_key = match (&self.unlock_key_file, std::env::var("STACKD_UNLOCK_KEY")) {
            (Some(path), _) => Some(read_unlock_key(path)?),
            (None, Ok(text)) if !text.trim().is_empty() => {
                Some(text.parse().map_err(|e| anyhow::anyhow!("STACKD_UNLOCK_KEY: {e}"))?)
            }
            _ => None,
        };
        Ok(NodeOptions {
            resources: self.resources.clone(),
            no_agent: self.no_agent,
            timings: self.raft.timings()?,
            shared_engine: self.shared_engine,
            vxlan_port: self.vxlan_port,
            unlock_key,
            autolock: false,
            metrics_addr: self.metrics_addr.clone(),
            status_addr: self.status_addr.clone(),
        })
    }
}

/// The unlock key in the file at `path`.
fn read_unlock_key(path: &std::path::Path) -> Result<stackd_tls::seal::UnlockKey> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    text.parse().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

impl RaftArgs {
    fn timings(&self) -> Result<Timings> {
        let (hb, min, max) = (self.raft_heartbeat_ms, self.raft_election_min_ms, self.raft_election_max_ms);
        if !(hb < min && min < max) {
            bail!(
                "Raft timings need --raft-heartbeat-ms < --raft-election-min-ms < --raft-election-max-ms, \
                 got {hb} < {min} < {max}"
            );
        }
        Ok(Timings {
            heartbeat: Duration::from_millis(hb),
            election_min: Duration::from_millis(min),
            election_max: Duration::from_millis(max),
            snapshot_every: self.raft_snapshot_every,
            keep_logs: self.raft_keep_logs,
            ..Timings::default()
        })
    }
}

/// `KIND=COUNT`, as `--resource` takes it.
fn parse_resource(text: &str) -> Result<(String, u64), String> {
    let (kind, count) = text.split_once('=').ok_or_else(|| format!("{text:?}: expected KIND=COUNT, like gpu=2"))?;
    if !stackd_core::validate::is_valid_name(kind) {
        return Err(format!("{kind:?} is not a resource kind: use letters, digits, '-', '_' and '.'"));
    }
    let count = count.parse().map_err(|_| format!("{count:?} is not a count in {text:?}"))?;
    Ok((kind.to_string(), count))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "stackd".to_string())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    stackd_tls::install_default_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn,hyper=warn")
            }),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: journald or a file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One watcher for the whole process: a signal during a role change is not lost.
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    match Cli::parse().command {
        Cmd::Init { data_dir, autolock, listen, naming: Naming { advertise_addr, name }, node } => {
            if Identity::exists(&data_dir) {
                bail!(stackd_manager::IdentityError::Exists(
                    data_dir.display().to_string(),
                    data_dir.display().to_string()
                ));
            }
            let mut options = node.options()?;
            options.autolock = autolock;
            let advertised = advertise_addr.unwrap_or_else(|| listen.clone());
            match advertised.parse::<std::net::SocketAddr>() {
                Ok(a) if a.ip().is_unspecified() => tracing::warn!(
                    addr = %advertised,
                    "other nodes cannot reach {advertised}: give --advertise-addr IP:PORT before adding managers or workers"
                ),
                Ok(a) if a.ip().is_loopback() => tracing::info!(
                    addr = %advertised,
                    "the cluster's address is a loopback address: only nodes on this host can join"
                ),
                Ok(_) => {}
                Err(_) => bail!("--advertise-addr {advertised:?} is not IP:PORT (like 10.0.0.5:4280)"),
            }
            let mut identity = Identity::generate(&name.unwrap_or_else(hostname), &advertised);
            if listen != advertised {
                identity.listen = listen;
            }
            Ok(run_roles(data_dir, identity, true, options, stop).await?)
        }
        Cmd::Join { manager, token, data_dir, listen, naming: Naming { advertise_addr, name }, node } => {
            let options = node.options()?;
            let name = name.unwrap_or_else(hostname);
            let request = join::JoinRequest {
                manager: &manager,
                token: &token,
                name: &name,
                listen: listen.as_deref(),
                advertise: advertise_addr.as_deref(),
                resources: &node.resources,
                no_agent: node.no_agent,
            };
            let identity = join::join(&data_dir, &request).await?;
            Ok(run_roles(data_dir, identity, false, options, stop).await?)
        }
        Cmd::Restore {
            from,
            s3_endpoint,
            s3_region,
            s3_credentials_file,
            key_file,
            data_dir,
            listen,
            force,
            naming: Naming { advertise_addr, name },
            node,
        } => {
            let options = node.options()?;
            let advertised = advertise_addr.unwrap_or_else(|| listen.clone());
            let name = name.unwrap_or_else(hostname);
            let request = stackd::restore::RestoreRequest {
                from: &from,
                s3: stackd::restore::S3Source {
                    endpoint: s3_endpoint.as_deref(),
                    region: s3_region.as_deref(),
                    credentials_file: s3_credentials_file.as_deref(),
                },
                key_file: &key_file,
                data_dir: &data_dir,
                name: &name,
                addr: &advertised,
                listen: Some(&listen),
                force,
                now_ms: stackd_manager::now_ms(),
            };
            let (header, identity) = stackd::restore::prepare(&request).await?;
            tracing::info!(
                cluster = %header.cluster_id,
                index = header.index,
                created = %stackd_core::model::rfc3339(header.created_at),
                node = %identity.node_id,
                "restoring the cluster from {from}"
            );
            Ok(run_roles(data_dir, identity, false, options, stop).await?)
        }
        Cmd::Unlock { data_dir, key_file } => {
            let key = match key_file {
                Some(path) => read_unlock_key(&path)?,
                None => {
                    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                        eprint!("unlock key: ");
                    }
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.parse().map_err(|e| anyhow::anyhow!("the key read from standard input: {e}"))?
                }
            };
            let id = stackd::unlock::unlock(&data_dir, &key).await?;
            eprintln!("unlocked (key id {id}): the manager starts");
            Ok(())
        }
        Cmd::Run { data_dir, node } => {
            let options = node.options()?;
            let identity = Identity::load(&data_dir)?;
            Ok(run_roles(data_dir, identity, false, options, stop).await?)
        }
    }
}
