//! `stackctl`, the command-line client of a stackd cluster.
//!
//! Exit codes (design §8): 0 success; 1 error (bad input, a usage error
//! such as an unknown flag, unreachable, refused, a job that cannot
//! complete); 2 a deploy failed and was rolled back; 3 a deploy failed and
//! paused; 4 timeout. clap's own code for usage errors, 2, is never used: a
//! CI job would read it as a rollback.
//!
//! Standard output is written with [`out!`], never `out!`: a reader
//! that goes away (`stackctl ps | head`) ends the output quietly.
//!
//! # Layout
//!
//! - `addresses.rs`: the cluster's networks in `service inspect` and
//!   `node inspect` (virtual addresses, endpoints, ports, slices).
//! - `args.rs`: the command line (clap).
//! - `client.rs`: connecting to a manager.
//! - `cluster.rs`: `cluster status|join-token`, `node promote|demote|rm`.
//! - `autolock.rs`: `cluster autolock on|off`, `cluster unlock-key`,
//!   `cluster unlock` (a locked manager's key).
//! - `deploy.rs`: `stackctl deploy`.
//! - `registry_auth.rs`: `deploy --with-registry-auth`: the client's
//!   registry credentials (`DOCKER_AUTH_CONFIG` or `config.json`).
//! - `follow.rs`: following a rollout (`--wait`): a live bar per service on
//!   a terminal, a line per change otherwise, JSON lines with `-o json`.
//! - `progress.rs`: where each service's rollout stands (pure).
//! - `events.rs`: `stackctl events` (the cluster's events, `-f` across
//!   failovers).
//! - `dryrun.rs`: `stackctl deploy --dry-run`: the changes a deploy would make.
//! - `logs.rs`: `stackctl logs` (the output of a service's tasks; `-f`
//!   across replacements and failovers).
//! - `inspect.rs`: listings and inspection (`stack ls`, `service ls`, `ps`, …).
//! - `autoscale.rs`: how an autoscaled service shows in `service ls` and `service inspect`.
//! - `objects.rs`: `secret` and `config` commands (create, ls, rm).
//! - `output.rs`: tables and JSON with the same field names.
//! - `rollout.rs`: `service history|rollback|update|scale|rebalance`.
//! - `tokens.rs`: `token create|ls|rm` (client tokens).
//! - `stackfile.rs`: reading stack files, the `.env` file and the process
//!   environment for the loader (core does no I/O).

/// `out!` for standard output: a closed pipe ends the output quietly
/// instead of panicking (see [`output::write_stdout`]).
macro_rules! out {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod addresses;
mod args;
mod autolock;
mod autoscale;
mod client;
mod cluster;
mod deploy;
mod dryrun;
mod events;
mod follow;
mod inspect;
mod logs;
mod nodes;
mod objects;
pub mod output;
mod progress;
mod registry_auth;
mod rollout;
mod snapshot;
mod stackfile;
mod tokens;

pub use args::Cli;
use args::{ClusterCmd, Cmd, JoinRole, NodeCmd, ObjectCmd, ServiceCmd, SnapshotCmd, StackCmd, TokenCmd};
use stackd_core::model::DataKind;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: an error (bad input, unreachable, refused, a job that cannot complete).
pub const EXIT_ERROR: i32 = 1;
/// Exit code: a deploy failed and was rolled back.
pub const EXIT_ROLLED_BACK: i32 = 2;
/// Exit code: a deploy failed and paused.
pub const EXIT_PAUSED: i32 = 3;
/// Exit code: timeout.
pub const EXIT_TIMEOUT: i32 = 4;

/// Parses the command line. On a usage error, or for `--help` and
/// `--version`, prints what clap has to say and returns the exit code:
/// [`EXIT_ERROR`] for a usage error (not clap's 2, which means "rolled
/// back" here), [`EXIT_OK`] for help and version.
pub fn parse_args<I, T>(args: I) -> Result<Cli, i32>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    Cli::try_parse_from(args).map_err(|e| {
        // A closed stream leaves nothing to report to.
        let _ = e.print();
        usage_exit_code(&e)
    })
}

/// The exit code of a parse that did not produce a command line.
pub fn usage_exit_code(e: &clap::Error) -> i32 {
    if e.use_stderr() { EXIT_ERROR } else { EXIT_OK }
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let g = &cli.global;
    match &cli.command {
        Cmd::Deploy(d) => deploy::deploy(g, d).await,
        Cmd::Config(c) => {
            let loaded = stackfile::load(&c.stack, &c.source)?;
            output::print_document(&stackd_core::compose::document(&loaded.spec), g.output)?;
            Ok(EXIT_OK)
        }
        Cmd::Events(e) => events::events(g, e).await,
        Cmd::Logs(l) => logs::logs(g, l).await,
        Cmd::Stack { command: StackCmd::Ls } => inspect::stack_ls(g).await,
        Cmd::Stack { command: StackCmd::Rm { stack } } => inspect::stack_rm(g, stack).await,
        Cmd::Service { command: ServiceCmd::Ls { stack } } => inspect::service_ls(g, stack.as_deref()).await,
        Cmd::Service { command: ServiceCmd::Inspect { service } } => inspect::service_inspect(g, service).await,
        Cmd::Service { command: ServiceCmd::Update { service, resume, wait, .. } } => {
            // clap requires --force unless --resume is given.
            let what = if *resume { rollout::What::Resume } else { rollout::What::Force };
            rollout::update(g, service, what, wait).await
        }
        Cmd::Service { command: ServiceCmd::Rollback { service, to, wait } } => {
            rollout::update(g, service, rollout::What::Rollback(*to), wait).await
        }
        Cmd::Service { command: ServiceCmd::History { service } } => rollout::history(g, service).await,
        Cmd::Service { command: ServiceCmd::Scale { targets, disable_autoscale, wait } } => {
            rollout::scale(g, targets, *disable_autoscale, wait).await
        }
        Cmd::Service { command: ServiceCmd::Rebalance { service, wait } } => {
            rollout::update(g, service, rollout::What::Rebalance, wait).await
        }
        Cmd::Ps { target, no_trunc } => inspect::ps(g, target, *no_trunc).await,
        Cmd::Node { command: NodeCmd::Ls } => inspect::node_ls(g).await,
        Cmd::Node { command: NodeCmd::Inspect { node } } => addresses::node_inspect(g, node).await,
        Cmd::Node { command: NodeCmd::Update { node, availability, label_add, label_rm } } => {
            nodes::update(g, node, *availability, label_add, label_rm).await
        }
        Cmd::Node { command: NodeCmd::Ps { node, no_trunc } } => nodes::ps(g, node, *no_trunc).await,
        Cmd::Node { command: NodeCmd::Promote { node } } => cluster::set_role(g, node, JoinRole::Manager, false).await,
        Cmd::Node { command: NodeCmd::Demote { node, force } } => {
            cluster::set_role(g, node, JoinRole::Worker, *force).await
        }
        Cmd::Node { command: NodeCmd::Rm { node, force } } => cluster::rm(g, node, *force).await,
        Cmd::Cluster { command: ClusterCmd::Status } => cluster::status_cmd(g).await,
        Cmd::Cluster { command: ClusterCmd::JoinToken { role, rotate } } => {
            cluster::join_token(g, *role, *rotate).await
        }
        Cmd::Cluster { command: ClusterCmd::RecoveryKey { rotate, out } } => {
            snapshot::recovery_key(g, *rotate, out.as_deref()).await
        }
        Cmd::Cluster { command: ClusterCmd::Autolock { state } } => autolock::set(g, *state).await,
        Cmd::Cluster { command: ClusterCmd::UnlockKey { rotate } } => autolock::key(g, *rotate).await,
        Cmd::Cluster { command: ClusterCmd::Unlock { key_file } } => autolock::unlock(g, key_file.as_deref()).await,
        Cmd::Snapshot { command: SnapshotCmd::Save { file } } => snapshot::save(g, file).await,
        Cmd::Snapshot { command: SnapshotCmd::Ls } => snapshot::ls(g).await,
        Cmd::Snapshot { command: SnapshotCmd::Schedule { cron, retention, dir, default, s3 } } => {
            snapshot::schedule(g, cron.as_deref(), *retention, dir.as_deref(), *default, s3).await
        }
        Cmd::Snapshot { command: SnapshotCmd::Inspect { file, key_file } } => {
            snapshot::inspect(g, file, key_file.as_deref())
        }
        Cmd::Token { command: TokenCmd::Create { name, role, stacks } } => tokens::create(g, name, *role, stacks).await,
        Cmd::Token { command: TokenCmd::Ls } => tokens::ls(g).await,
        Cmd::Token { command: TokenCmd::Rm { tokens } } => tokens::rm(g, tokens).await,
        Cmd::Secret { command } => object(g, DataKind::Secret, command).await,
        Cmd::Configs { command } => object(g, DataKind::Config, command).await,
    }
}

async fn object(g: &args::Global, kind: DataKind, command: &ObjectCmd) -> anyhow::Result<i32> {
    match command {
        ObjectCmd::Create { name, file, labels } => objects::create(g, kind, name, file, labels).await,
        ObjectCmd::Ls => objects::ls(g, kind).await,
        ObjectCmd::Rm { names } => objects::rm(g, kind, names).await,
    }
}
