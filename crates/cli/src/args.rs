//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit codes, at the end of `stackctl --help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  an error: bad input, a usage error (an unknown flag, a bad value), unreachable, refused
  2  deploy --wait: the deploy failed and was rolled back
  3  deploy --wait: the deploy failed and paused
  4  deploy --wait: timed out";

/// stackctl: deploy and inspect stacks on a stackd cluster.
#[derive(Parser, Debug)]
#[command(name = "stackctl", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Options for every command.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Cmd,
}

/// Output format of listings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for programs, with the same field names as the table's columns.
    Json,
    /// YAML, with the same field names.
    Yaml,
}

/// Options for every command.
#[derive(Args, Debug)]
pub struct Global {
    /// Manager address(es), comma-separated: host:port or https://host:port
    /// (TLS only), e.g. 10.0.0.1:4280.
    #[arg(long, global = true, env = "STACKCTL_ADDR", default_value = "127.0.0.1:4280")]
    pub addr: String,
    /// The cluster's CA certificate: a path (a manager's DATA_DIR/tls/ca.crt)
    /// or the PEM text itself.
    #[arg(long, global = true, env = "STACKCTL_CA", hide_env_values = true)]
    pub ca: Option<String>,
    /// The client token (STKC-1-…); never printed.
    #[arg(long, global = true, env = "STACKCTL_TOKEN", hide_env_values = true)]
    pub token: Option<TokenArg>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Read from the manager's local state without asking the leader (faster, may lag).
    #[arg(long, global = true)]
    pub stale: bool,
}

/// The text of `--token`, which `Debug` never shows.
#[derive(Clone)]
pub struct TokenArg(pub String);

impl std::str::FromStr for TokenArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(TokenArg(s.to_string()))
    }
}

impl std::fmt::Debug for TokenArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `SERVICE=N` of `service scale`.
pub fn parse_scale(s: &str) -> Result<(String, u64), String> {
    let (service, n) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected SERVICE=N, e.g. app_web=3"))?;
    if service.is_empty() {
        return Err(format!("{s:?}: the service name is missing"));
    }
    let n = n.trim().parse().map_err(|_| format!("{s:?}: the replica count must be a whole number, got {n:?}"))?;
    Ok((service.to_string(), n))
}

/// Parses durations like `90s`, `5m`, `1h30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {s:?}: expected a number, e.g. 5m or 90s"));
        }
        let value: f64 = rest[..digits].parse().map_err(|_| format!("invalid number in duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("duration {s:?} needs a unit: ms, s, m or h")),
            u => return Err(format!("unknown unit {u:?} in duration {s:?}: use ms, s, m or h")),
        };
        total += Duration::from_secs_f64(value * factor);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The stack files of `deploy` and `config`, and what they are read with.
#[derive(Args, Debug)]
pub struct StackFileArgs {
    /// Stack file (compose format); repeat to merge several, each overriding
    /// the ones before (as `docker compose -f a.yml -f b.yml`).
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub files: Vec<PathBuf>,
    /// Variables for `${VAR}` in the stack files (compose `.env` syntax).
    /// Default: `.env` beside the first stack file, if there is one. The
    /// process environment wins over the file.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Enable a profile: services with `profiles:` are deployed only when one
    /// of theirs is enabled (`*`: all). Repeatable. Default: the variable
    /// COMPOSE_PROFILES (comma-separated), as in compose.
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
}

/// `stackctl deploy`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The stack files and what they are read with.
    #[command(flatten)]
    pub source: StackFileArgs,
    /// Stack name.
    pub stack: String,
    /// Wait until every service of the stack has converged (exit 0), paused (3),
    /// rolled back (2), or the timeout passed (4).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit code 4).
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub timeout: Duration,
    /// Remove services of the stack that the files no longer declare.
    #[arg(long)]
    pub prune: bool,
    /// Show what the deploy would change (services to create, update with a
    /// field-level diff, or remove) and send nothing.
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,
    /// When the nodes pull the images, for every service of the deploy
    /// (overrides the files' `pull_policy`): `always` (before every task),
    /// `missing` (when the node lacks it) or `never`.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub pull: Option<PullArg>,
    /// Send the registry credentials of the stack's images (from
    /// DOCKER_AUTH_CONFIG, else $DOCKER_CONFIG/config.json, else
    /// ~/.docker/config.json) for the nodes to pull with. They replace the
    /// stack's; a deploy without the flag keeps what the stack has.
    #[arg(long)]
    pub with_registry_auth: bool,
}

/// `--pull`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullArg {
    /// Before every task.
    Always,
    /// When the node does not have the image.
    Missing,
    /// Never: the image must be on the node.
    Never,
}

/// `stackctl config`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// The stack files and what they are read with.
    #[command(flatten)]
    pub source: StackFileArgs,
    /// Stack name, which prefixes named volumes.
    #[arg(long, default_value = "stack")]
    pub stack: String,
}

/// `stackctl events`.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only the events of this stack (its services and tasks).
    #[arg(long)]
    pub stack: Option<String>,
    /// Only events of the last DURATION (e.g. 10m, 2h); without it, every
    /// event the managers keep (the last 10,000), or with -f only new ones.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub since: Option<Duration>,
    /// Keep printing new events as they happen, across a failover of the
    /// manager watched (none lost, none twice), until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// `stackctl logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// A service (`stack_service`, or its id) or a task (its id, or the
    /// start of it).
    pub target: String,
    /// Keep printing new lines, and those of the tasks that replace the
    /// service's tasks on any node, until interrupted (a followed task: until
    /// its container stops).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only lines of the last DURATION (e.g. 10m, 1h30m), or since a time
    /// (RFC 3339, e.g. 2026-12-07T10:00:00Z, or Unix seconds).
    #[arg(long, value_parser = parse_since, value_name = "DURATION|TIME")]
    pub since: Option<Since>,
    /// Only the last N lines of each task (`all`: every line).
    #[arg(long, short = 'n', value_parser = parse_tail, value_name = "N")]
    pub tail: Option<Tail>,
    /// Print the time the engine received each line.
    #[arg(long, short = 't')]
    pub timestamps: bool,
    /// Name each line's task without its id (`web.2@node3 |`).
    #[arg(long)]
    pub no_task_ids: bool,
}

/// `--since`: a duration back from now, or a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    /// Unix seconds.
    At(i64),
}

/// `--tail`: a number of lines, or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail(pub Option<u64>);

fn parse_tail(s: &str) -> Result<Tail, String> {
    if s == "all" {
        return Ok(Tail(None));
    }
    s.parse::<u64>().map(|n| Tail(Some(n))).map_err(|_| format!("invalid --tail {s:?}: a number of lines, or `all`"))
}

fn parse_since(s: &str) -> Result<Since, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(Since::At(secs));
    }
    if let Some(nanos) = crate::logs::parse_rfc3339(s) {
        return Ok(Since::At(nanos.div_euclid(1_000_000_000) as i64));
    }
    parse_duration(s)
        .map(Since::Ago)
        .map_err(|e| format!("{e}; or give a time: RFC 3339 (2026-12-07T10:00:00Z) or Unix seconds"))
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Deploy (create or update) a stack from compose files.
    Deploy(DeployArgs),
    /// Print the stack as stackd reads it (normalised compose; YAML unless
    /// `-o json`), without deploying. Errors and warnings go to stderr.
    Config(ConfigArgs),
    /// The cluster's events (deploys, task states, nodes, rollouts) as text,
    /// or JSON lines with `-o json`; `-f` follows new ones.
    Events(EventsArgs),
    /// The output of a service's tasks, or of one task, from the nodes that
    /// run them; each line named by its task and node (`web.2.<id>@node3 |`).
    Logs(LogsArgs),
    /// Manage stacks.
    Stack {
        /// Stack command.
        #[command(subcommand)]
        command: StackCmd,
    },
    /// Manage services.
    Service {
        /// Service command.
        #[command(subcommand)]
        command: ServiceCmd,
    },
    /// List the tasks of a stack or a service (a service is `<stack>_<name>`),
    /// with each slot's history below its newest task.
    Ps {
        /// Stack or service name.
        target: String,
        /// Show ids and errors whole (errors still on one line).
        #[arg(long)]
        no_trunc: bool,
    },
    /// Manage nodes.
    Node {
        /// Node command.
        #[command(subcommand)]
        command: NodeCmd,
    },
    /// Manage secrets kept by the cluster (for stacks' `external: true` secrets).
    #[command(alias = "secrets")]
    Secret {
        /// Secret command.
        #[command(subcommand)]
        command: ObjectCmd,
    },
    /// Manage configs kept by the cluster (for stacks' `external: true` configs);
    /// `stackctl config` prints a normalised stack.
    Configs {
        /// Config command.
        #[command(subcommand)]
        command: ObjectCmd,
    },
    /// The cluster: Raft status, join tokens.
    Cluster {
        /// Cluster command.
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// Cluster snapshots: save one (admin), inspect a file.
    Snapshot {
        /// Snapshot command.
        #[command(subcommand)]
        command: SnapshotCmd,
    },
    /// Client tokens for stackctl: create, list, revoke (admin).
    Token {
        /// Token command.
        #[command(subcommand)]
        command: TokenCmd,
    },
}

/// Secret and config commands.
#[derive(Subcommand, Debug)]
pub enum ObjectCmd {
    /// Create one from a file (`-`: standard input). Its content cannot change later.
    Create {
        /// Name.
        name: String,
        /// File with the content; `-` reads standard input.
        file: PathBuf,
        /// Label `KEY=VALUE`; repeat for several.
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// List them (never their content).
    Ls,
    /// Remove them (refused while a service uses one).
    Rm {
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Stack commands.
#[derive(Subcommand, Debug)]
pub enum StackCmd {
    /// List stacks.
    Ls,
    /// Remove a stack, its services and their containers.
    Rm {
        /// Stack name.
        stack: String,
    },
}

/// Service commands.
#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// List services.
    Ls {
        /// Only this stack's.
        stack: Option<String>,
    },
    /// Show a service in detail.
    Inspect {
        /// Service name (`<stack>_<name>`) or id.
        service: String,
    },
    /// Replace every task under the update policy (`--force`), or continue a
    /// paused rollout (`--resume`).
    Update {
        /// Service name (`<stack>_<name>`) or id.
        service: String,
        /// A new revision that changes nothing but replaces every task
        /// (Swarm's `--force`): the way out of a paused rollout.
        #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
        force: bool,
        /// Continue a paused rollout of the current revision.
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Go back to the spec of an earlier revision, as a new revision rolled
    /// out under its rollback policy.
    Rollback {
        /// Service name (`<stack>_<name>`) or id.
        service: String,
        /// The revision to go back to (default: the one before the current;
        /// `stackctl service history` lists them).
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Set the replica count of replicated services: `stackctl service scale
    /// app_web=5 app_worker=2`. A new revision each (its tasks keep running;
    /// slots are added or removed); with --wait, waits for every one. An
    /// autoscaled service (`x-stackd-autoscale`) is refused unless
    /// --disable-autoscale.
    Scale {
        /// `SERVICE=N`, one or more.
        #[arg(required = true, value_parser = parse_scale, value_name = "SERVICE=N")]
        targets: Vec<(String, u64)>,
        /// Scale an autoscaled service by hand: its autoscaler is turned
        /// off until the stack is deployed again.
        #[arg(long)]
        disable_autoscale: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Move tasks from the nodes that run the most of them to those with
    /// room until the spread is even (after a node came back, for example),
    /// by the update policy's parallelism and order, never below the replica
    /// count: each replacement runs before the task it replaces stops.
    Rebalance {
        /// Service name (`<stack>_<name>`) or id.
        service: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// The kept revisions of a service: when each was deployed, what changed
    /// from the one before, and how the current rollout stands.
    History {
        /// Service name (`<stack>_<name>`) or id.
        service: String,
    },
}

/// `--wait` and `--timeout` of a command that starts a rollout.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Wait until the service has converged (exit 0), paused (3), rolled back
    /// after a failure (2), or the timeout passed (4).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit code 4).
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub timeout: Duration,
}

/// Node commands.
#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List nodes; managers show whether they lead and are reachable.
    Ls,
    /// Show a node in detail: role, state, address, engine, resources,
    /// labels, and its networks (subnet, its slices and gateway, VXLAN id).
    Inspect {
        /// Name or id.
        node: String,
    },
    /// Change a node's availability and labels: `pause` places nothing new
    /// on it, `drain` moves its tasks elsewhere, `active` takes tasks
    /// again; labels are what `node.labels.KEY == VALUE` constraints match.
    Update {
        /// Name or id.
        node: String,
        /// active, pause or drain.
        #[arg(long, value_enum)]
        availability: Option<NodeAvailability>,
        /// Add or replace a label, `KEY=VALUE` (`KEY` alone: an empty value); repeatable.
        #[arg(long = "label-add", value_name = "KEY=VALUE")]
        label_add: Vec<String>,
        /// Remove a label by key; repeatable.
        #[arg(long = "label-rm", value_name = "KEY")]
        label_rm: Vec<String>,
    },
    /// List the tasks on a node (those it runs and those it ran), as `ps` does.
    Ps {
        /// Name or id.
        node: String,
        /// Show ids and errors whole (errors still on one line).
        #[arg(long)]
        no_trunc: bool,
    },
    /// Make a worker a manager: it joins Raft as a learner and votes once it
    /// has caught up.
    Promote {
        /// Name or id.
        node: String,
    },
    /// Make a manager a worker. Refused when the remaining managers would
    /// have no reachable majority (quorum), unless `--force`.
    Demote {
        /// Name or id.
        node: String,
        /// Even if the managers lose their quorum.
        #[arg(long)]
        force: bool,
    },
    /// Remove a node that is gone for good (a dead machine). Its tasks are
    /// started elsewhere. Refused for a node that is still reachable, or when
    /// the remaining managers would have no quorum, unless `--force`.
    Rm {
        /// Name or id.
        node: String,
        /// Even if the node is reachable or the managers lose their quorum.
        #[arg(long)]
        force: bool,
    },
}

/// A node's availability, as `node update --availability` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NodeAvailability {
    /// Tasks may be placed on it.
    Active,
    /// No new tasks; those it runs stay.
    Pause,
    /// No tasks: those it runs move elsewhere.
    Drain,
}

/// The role a join token gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum JoinRole {
    /// Managers: Raft voters that also run tasks.
    Manager,
    /// Workers: run tasks only.
    Worker,
}

/// Cluster commands.
#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// The Raft status of the manager reached: leader, term, log indexes,
    /// quorum, state hash, and the managers as the leader sees them.
    Status,
    /// Print the join token of a role, alone on standard output, for
    /// `stackd join ADDR --token TOKEN`.
    JoinToken {
        /// The role the token gives.
        #[arg(value_enum)]
        role: JoinRole,
        /// Replace the token first: the old one stops working (nodes that
        /// joined with it stay).
        #[arg(long)]
        rotate: bool,
    },
    /// Print the public half of the recovery key that snapshots are
    /// encrypted to; with `--rotate`, make a new key here and give the
    /// cluster its public half (admin). The private half is written to
    /// `--out` (or printed) and never sent: keep it off the cluster.
    RecoveryKey {
        /// Make a new key pair; later snapshots are encrypted to it
        /// (earlier ones still need the old key).
        #[arg(long)]
        rotate: bool,
        /// With `--rotate`: write the private key to this file (mode 0600;
        /// it must not exist yet) instead of standard output.
        #[arg(long, requires = "rotate")]
        out: Option<std::path::PathBuf>,
    },
    /// Turn autolock on or off (admin). On: every manager's raft data is
    /// wrapped by an unlock key, printed here, that a manager needs to
    /// start; off: managers start without it.
    Autolock {
        /// `on` or `off`.
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Print the cluster's unlock key (autolock; admin), alone on standard
    /// output; with `--rotate`, replace it first.
    UnlockKey {
        /// Replace the key: managers rewrap their data with the new one. A
        /// manager stopped meanwhile still opens with the old key once.
        #[arg(long)]
        rotate: bool,
    },
    /// Give the locked managers of --addr (each of them) the unlock key, so
    /// that they start. No token needed: the key is the credential.
    Unlock {
        /// A file holding the key; without it, the key is read from
        /// standard input.
        #[arg(long)]
        key_file: Option<std::path::PathBuf>,
    },
}

/// `on` or `off`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    /// Turn it on.
    On,
    /// Turn it off.
    Off,
}

/// The S3 target of scheduled snapshots (`snapshot schedule`).
#[derive(clap::Args, Debug, Default)]
pub struct S3Args {
    /// Also upload each scheduled snapshot to this S3-compatible endpoint
    /// (`https://s3.eu-west-1.amazonaws.com`, `http://minio:9000`).
    #[arg(long, requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// The bucket (it must exist).
    #[arg(long, requires = "s3_endpoint")]
    pub s3_bucket: Option<String>,
    /// A key prefix in the bucket (`stackd/prod/`).
    #[arg(long, requires = "s3_endpoint")]
    pub s3_prefix: Option<String>,
    /// The region (default us-east-1).
    #[arg(long, requires = "s3_endpoint")]
    pub s3_region: Option<String>,
    /// Scheduled snapshots kept in the bucket (default: --retention).
    #[arg(long, requires = "s3_endpoint")]
    pub s3_retention: Option<u32>,
    /// An absolute path, on each manager, to a file with
    /// `aws_access_key_id` and `aws_secret_access_key`; default: each
    /// manager's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, requires = "s3_endpoint")]
    pub s3_credentials_file: Option<String>,
    /// Stop uploading to S3.
    #[arg(long, conflicts_with = "s3_endpoint")]
    pub no_s3: bool,
}

/// Snapshot commands.
#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Save a consistent snapshot of the whole cluster state, encrypted to
    /// the cluster's recovery key, to FILE (`-`: standard output) (admin).
    /// With `--stale`: the state the manager reached has applied, without
    /// a leader (when a majority of the managers is lost for good).
    Save {
        /// The file to write (written whole or not at all), or `-`.
        file: String,
    },
    /// Print a snapshot file's header; with `--key-file`, open it and
    /// summarise what it holds (secrets by name only).
    Inspect {
        /// The snapshot file.
        file: std::path::PathBuf,
        /// The recovery key (`recovery.key`, age's identity format).
        #[arg(long)]
        key_file: Option<std::path::PathBuf>,
    },
    /// Scheduled snapshots: the schedule, the next tick, and the last ones
    /// taken (by which manager, to which file).
    Ls,
    /// Set when the leader takes snapshots and how many each manager keeps
    /// (admin); flags not given keep their value.
    Schedule {
        /// A cron pattern in UTC (5 fields, or 6 with seconds first), such as
        /// `0 */6 * * *`; `off` turns scheduled snapshots off.
        #[arg(long)]
        cron: Option<String>,
        /// Scheduled snapshots kept in the directory of each manager.
        #[arg(long)]
        retention: Option<u32>,
        /// The directory on each manager (absolute; empty: DATA_DIR/snapshots).
        #[arg(long)]
        dir: Option<String>,
        /// Back to the defaults: every 6 hours, 10 kept, DATA_DIR/snapshots,
        /// no S3 target.
        #[arg(long, conflicts_with_all = ["cron", "retention", "dir", "s3_endpoint", "no_s3"])]
        default: bool,
        #[command(flatten)]
        s3: S3Args,
    },
}

/// The role of a client token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TokenRoleArg {
    /// Everything.
    Admin,
    /// Read everything; deploy and remove the stacks given with `--stack`.
    Deployer,
    /// Read everything, change nothing.
    Viewer,
}

/// Client token commands (admin).
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a client token and print it, alone on standard output: it is
    /// shown this once and never again.
    Create {
        /// A name for the token (unique).
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: TokenRoleArg,
        /// A stack a deployer token may deploy and remove; repeat for several.
        #[arg(long = "stack")]
        stacks: Vec<String>,
    },
    /// List client tokens (never their secrets).
    Ls,
    /// Revoke client tokens by id or name.
    Rm {
        /// Ids or names.
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn scale_targets_are_service_equals_count() {
        assert_eq!(parse_scale("app_web=3"), Ok(("app_web".to_string(), 3)));
        assert!(parse_scale("app_web").expect_err("no count").contains("expected SERVICE=N"));
        assert!(parse_scale("=3").expect_err("no name").contains("name is missing"));
        assert!(parse_scale("app_web=many").expect_err("not a number").contains("whole number"));
        assert!(parse_scale("app_web=-1").expect_err("negative").contains("whole number"));
    }

    use super::*;

    #[test]
    fn deploy_takes_an_env_file() {
        let cli = Cli::try_parse_from(["stackctl", "deploy", "-c", "a.yml", "--env-file", "prod.env", "shop"])
            .expect("valid command line");
        let Cmd::Deploy(d) = cli.command else { panic!("not a deploy: {:?}", cli.command) };
        assert_eq!(d.source.env_file, Some(PathBuf::from("prod.env")));
        let cli = Cli::try_parse_from(["stackctl", "deploy", "-c", "a.yml", "shop"]).expect("valid command line");
        let Cmd::Deploy(d) = cli.command else { panic!("not a deploy: {:?}", cli.command) };
        assert_eq!(d.source.env_file, None);
        assert!(d.source.profiles.is_empty());
        let cli = Cli::try_parse_from(["stackctl", "config", "-c", "a.yml", "--profile", "debug", "--profile", "ops"])
            .expect("valid command line");
        let Cmd::Config(c) = cli.command else { panic!("not a config: {:?}", cli.command) };
        assert_eq!(c.source.profiles, ["debug", "ops"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    // clap checks a command line's definition only when that subcommand is
    // parsed: a clash of names in a rarely used one would panic at run time.
    #[test]
    fn every_subcommand_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
