//! `stackctl snapshot save|inspect|ls|schedule` and `stackctl cluster recovery-key`.
//!
//! A snapshot file is made by a manager, encrypted to the cluster's
//! recovery key before it leaves the manager; `save` writes it whole or not
//! at all (a `.partial` file renamed at the end, mode 0600), and refuses
//! anything that is not an encrypted snapshot file. `inspect` needs no
//! cluster: the header is plain, and the key opens the rest.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use stackd_core::backup::{self, Header, Summary};
use stackd_core::model::rfc3339;
use stackd_proto::v1;
use stackd_tls::age::{self, Identity};
use tokio_stream::StreamExt;

use crate::args::{Global, Output};
use crate::client::{connect, status};
use crate::output::{print_document, print_rows};

/// A progress bar of the bytes received, on standard error when it is a terminal.
fn bar(total: u64) -> ProgressBar {
    let tty = std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
    if !tty {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("snapshot {bar:30} {bytes}/{total_bytes} {bytes_per_sec}") {
        bar.set_style(style);
    }
    bar
}

/// `stackctl snapshot save FILE|-`.
pub async fn save(g: &Global, file: &str) -> Result<i32> {
    let to_stdout = file == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        bail!("refusing to write a binary snapshot to a terminal: give a file, or redirect standard output");
    }
    let mut c = connect(g).await?;
    let mut stream = c
        .read(|mut c| async move { c.save_snapshot(v1::SaveSnapshotRequest { stale: g.stale }).await })
        .await
        .map_err(status)?
        .into_inner();
    let mut bytes = Vec::new();
    let mut progress: Option<ProgressBar> = None;
    let mut total = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(status).context("the manager stopped sending the snapshot")?;
        if progress.is_none() {
            total = piece.total;
            // The size is the server's word: reserve within reason.
            bytes.reserve(usize::try_from(piece.total.min(1 << 30)).unwrap_or(0));
            progress = Some(bar(piece.total));
        }
        bytes.extend_from_slice(&piece.data);
        if let Some(p) = &progress {
            p.set_position(bytes.len() as u64);
        }
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    if bytes.len() as u64 != total {
        bail!("the manager sent {} bytes of a {total}-byte snapshot: nothing written", bytes.len());
    }
    // What the manager sent must be an encrypted snapshot file, whole.
    let (header, sealed) = backup::split(&bytes).context("the manager sent something that is not a snapshot file")?;
    if !sealed.starts_with(age::VERSION_LINE.as_bytes()) || header.recipient.is_empty() {
        bail!("the manager sent an unencrypted snapshot: refusing to write it");
    }
    if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes).and_then(|()| out.flush()).context("writing the snapshot to standard output")?;
    } else {
        write_private(Path::new(file), &bytes)?;
    }
    eprintln!(
        "Snapshot of cluster {} at index {} (term {}), {} bytes, encrypted to {}{}",
        header.cluster_id,
        header.index,
        header.term,
        bytes.len(),
        header.recipient,
        if to_stdout { String::new() } else { format!(", written to {file}") }
    );
    Ok(crate::EXIT_OK)
}

/// Writes `bytes` to `path` whole or not at all: a private `.partial` file,
/// synced, then renamed over `path`.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().ok_or_else(|| anyhow!("{} is not a file name", path.display()))?;
    let mut partial = name.to_os_string();
    partial.push(".partial");
    let tmp = path.with_file_name(partial);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("writing {}: {e}", path.display())
    })
}

/// What `snapshot inspect` prints.
#[derive(Serialize)]
struct InspectDoc {
    #[serde(flatten)]
    header: Header,
    created: String,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    contents: Option<Summary>,
}

/// `stackctl snapshot inspect FILE [--key-file F]`.
pub fn inspect(g: &Global, file: &Path, key_file: Option<&Path>) -> Result<i32> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (header, sealed) = backup::split(&bytes).with_context(|| format!("{} is refused", file.display()))?;
    let contents = match key_file {
        None => None,
        Some(k) => {
            let text = std::fs::read_to_string(k).with_context(|| format!("reading the key file {}", k.display()))?;
            let ids = Identity::parse_file(&text).with_context(|| format!("{} is not a recovery key", k.display()))?;
            let plain = age::decrypt(&ids, sealed).with_context(|| format!("{} cannot be opened", file.display()))?;
            let state = backup::open(&header, &plain).with_context(|| format!("{} is refused", file.display()))?;
            Some(backup::summary(&state))
        }
    };
    let doc = InspectDoc { created: rfc3339(header.created_at), bytes: bytes.len() as u64, header, contents };
    if g.output != Output::Table {
        print_document(&doc, g.output)?;
        return Ok(crate::EXIT_OK);
    }
    let h = &doc.header;
    out!("Cluster:       {}", h.cluster_id);
    out!("Index:         {} (term {})", h.index, h.term);
    out!("Created:       {}", doc.created);
    out!("stackd:        {}", h.stackd_version);
    out!("Format:        {}", h.format);
    out!("Encrypted to:  {}", h.recipient);
    out!("Size:          {} bytes", doc.bytes);
    match &doc.contents {
        None => out!("Contents:      (give --key-file to open it)"),
        Some(s) => {
            out!("State hash:    {}", s.state_hash);
            let stacks: Vec<String> = s.stacks.iter().map(|(k, n)| format!("{k} ({n})")).collect();
            out!("Stacks:        {}", list(&stacks));
            out!("Services:      {}", s.services);
            out!("Tasks:         {} ({} running)", s.tasks, s.running);
            out!("Nodes:         {}", list(&s.nodes));
            out!("Secrets:       {}", list(&s.secrets));
            out!("Configs:       {}", list(&s.configs));
            out!("Tokens:        {}", list(&s.tokens));
        }
    }
    Ok(crate::EXIT_OK)
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "-".to_string() } else { items.join(", ") }
}

/// `stackctl cluster recovery-key [--rotate [--out FILE]]`.
pub async fn recovery_key(g: &Global, rotate: bool, out: Option<&Path>) -> Result<i32> {
    let mut c = connect(g).await?;
    if !rotate {
        let r = c
            .read(|mut c| async move { c.cluster_status(v1::ClusterStatusRequest { stale: g.stale }).await })
            .await
            .map_err(status)?
            .into_inner();
        if r.recovery_recipient.is_empty() {
            bail!("the cluster has no recovery key: make one with `stackctl cluster recovery-key --rotate`");
        }
        out!("{}", r.recovery_recipient);
        return Ok(crate::EXIT_OK);
    }
    let key = Identity::generate().map_err(|e| anyhow!("generating a key: {e}"))?;
    let recipient = key.recipient().to_string();
    let text = key.to_file(
        &rfc3339(crate::output::now_ms()),
        "stackd recovery key: it opens the cluster's snapshots. Keep it off the cluster.\n\
         Without stackd: tail -n +3 SNAPSHOT | age -d -i recovery.key",
    );
    // The private half is kept before the cluster uses its public half.
    let written: Option<PathBuf> = match out {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Some(path.to_path_buf())
        }
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes()).and_then(|()| o.flush()).context("printing the key")?;
            None
        }
    };
    let req = v1::SetRecoveryKeyRequest { recipient: recipient.clone() };
    let answer = c.write(|mut c| {
        let req = req.clone();
        async move { c.set_recovery_key(req).await }
    });
    match answer.await {
        Ok(r) => {
            let r = r.into_inner();
            eprintln!("The cluster's snapshots are now encrypted to {recipient}.");
            if !r.previous.is_empty() {
                eprintln!("Snapshots taken before still need the previous key (of {}).", r.previous);
            }
            if let Some(p) = written {
                eprintln!("The private key is in {}: move it off the cluster.", p.display());
            }
            Ok(crate::EXIT_OK)
        }
        Err(e) => {
            use tonic::Code;
            // Only a request that surely changed nothing lets the key go: an
            // answer lost on the way may hide a key the cluster now uses.
            let refused = matches!(
                e.code(),
                Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated | Code::FailedPrecondition
            ) || stackd_tls::never_connected(&e);
            if refused {
                if let Some(p) = &written {
                    let _ = std::fs::remove_file(p);
                }
                return Err(status(e).context("the new key was NOT installed (the cluster keeps its previous one)"));
            }
            let kept = written.map(|p| format!(" The private key is kept in {}.", p.display())).unwrap_or_default();
            Err(status(e).context(format!(
                "the answer was lost: the cluster may or may not use the new key {recipient}.{kept} Compare with \
                 `stackctl cluster recovery-key`, and keep the private key if they match"
            )))
        }
    }
}

/// A scheduled snapshot as `snapshot ls` shows it.
#[derive(Serialize)]
struct TakenRow {
    tick: String,
    manager: String,
    file: String,
    bytes: u64,
    index: u64,
    error: String,
    remote: String,
}

/// A snapshot in the S3 target.
#[derive(Serialize)]
struct RemoteRow {
    url: String,
    bytes: u64,
    last_modified: String,
}

/// What `snapshot ls` prints.
#[derive(Serialize)]
struct LsDoc {
    schedule: String,
    retention: u32,
    dir: String,
    is_default: bool,
    next: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    s3: Option<String>,
    taken: Vec<TakenRow>,
    remote: Vec<RemoteRow>,
    #[serde(skip_serializing_if = "String::is_empty")]
    remote_error: String,
}

/// `stackctl snapshot ls`.
pub async fn ls(g: &Global) -> Result<i32> {
    let mut c = connect(g).await?;
    let r = c
        .read(|mut c| async move { c.list_snapshots(v1::ListSnapshotsRequest { stale: g.stale }).await })
        .await
        .map_err(status)?
        .into_inner();
    let policy = r.policy.unwrap_or_default();
    let bucket = policy.s3.as_ref().map(|t| t.bucket.clone()).unwrap_or_default();
    let doc = LsDoc {
        s3: policy
            .s3
            .as_ref()
            .map(|t| format!("{} bucket {} prefix {:?}, {} kept", t.endpoint, t.bucket, t.prefix, t.retention)),
        remote: r
            .remote
            .into_iter()
            .map(|o| RemoteRow {
                url: format!("s3://{bucket}/{}", o.key),
                bytes: o.bytes,
                last_modified: o.last_modified,
            })
            .collect(),
        remote_error: r.remote_error,
        schedule: policy.schedule,
        retention: policy.retention,
        dir: if policy.dir.is_empty() { "DATA_DIR/snapshots".to_string() } else { policy.dir },
        is_default: policy.is_default,
        next: if r.next_tick == 0 { String::new() } else { rfc3339(r.next_tick) },
        taken: r
            .taken
            .into_iter()
            .map(|t| TakenRow {
                tick: rfc3339(t.tick),
                manager: if t.node_name.is_empty() { t.node } else { t.node_name },
                file: t.file,
                bytes: t.bytes,
                index: t.index,
                error: if t.remote_error.is_empty() { t.error } else { format!("upload: {}", t.remote_error) },
                remote: t.remote,
            })
            .collect(),
    };
    if g.output != Output::Table {
        print_document(&doc, g.output)?;
        return Ok(crate::EXIT_OK);
    }
    let schedule = if doc.schedule.is_empty() { "off".to_string() } else { format!("{} (UTC)", doc.schedule) };
    out!("Schedule:   {schedule}{}", if doc.is_default { " (default)" } else { "" });
    out!("Retention:  {} per manager, in {}", doc.retention, doc.dir);
    out!("Next:       {}", if doc.next.is_empty() { "-" } else { &doc.next });
    out!("S3:         {}", doc.s3.as_deref().unwrap_or("-"));
    out!();
    if doc.taken.is_empty() {
        out!("No scheduled snapshot taken yet (`stackctl snapshot save FILE` takes one now).");
    } else {
        print_rows(&doc.taken, &["tick", "manager", "file", "bytes", "index", "error"], Output::Table)?;
    }
    if doc.s3.is_some() {
        out!();
        if !doc.remote_error.is_empty() {
            out!("The bucket could not be listed: {}", doc.remote_error);
        } else if doc.remote.is_empty() {
            out!("No scheduled snapshot in the bucket yet.");
        } else {
            print_rows(&doc.remote, &["url", "bytes", "last_modified"], Output::Table)?;
        }
    }
    Ok(crate::EXIT_OK)
}

/// `stackctl snapshot schedule [--cron C] [--retention N] [--dir D] [--default]`.
pub async fn schedule(
    g: &Global,
    cron: Option<&str>,
    retention: Option<u32>,
    dir: Option<&str>,
    default: bool,
    s3: &crate::args::S3Args,
) -> Result<i32> {
    let mut c = connect(g).await?;
    let policy = if default {
        v1::SnapshotPolicy { is_default: true, ..Default::default() }
    } else {
        if cron.is_none() && retention.is_none() && dir.is_none() && s3.s3_endpoint.is_none() && !s3.no_s3 {
            bail!(
                "give --cron, --retention, --dir, --s3-…, --no-s3 or --default (`stackctl snapshot ls` shows the schedule)"
            );
        }
        let current = c
            .read(|mut c| async move { c.list_snapshots(v1::ListSnapshotsRequest { stale: false }).await })
            .await
            .map_err(status)?
            .into_inner()
            .policy
            .unwrap_or_default();
        v1::SnapshotPolicy {
            schedule: match cron {
                Some("off") => String::new(),
                Some(c) => c.to_string(),
                None => current.schedule,
            },
            retention: retention.unwrap_or(current.retention),
            dir: dir.map_or(current.dir, str::to_string),
            is_default: false,
            s3: match (&s3.s3_endpoint, &s3.s3_bucket) {
                _ if s3.no_s3 => None,
                (Some(endpoint), Some(bucket)) => Some(v1::S3Target {
                    endpoint: endpoint.clone(),
                    bucket: bucket.clone(),
                    prefix: s3.s3_prefix.clone().unwrap_or_default(),
                    region: s3.s3_region.clone().unwrap_or_default(),
                    retention: s3.s3_retention.or(retention).unwrap_or(current.retention),
                    credentials_file: s3.s3_credentials_file.clone().unwrap_or_default(),
                }),
                _ => current.s3,
            },
        }
    };
    let req = v1::SetSnapshotPolicyRequest { policy: Some(policy) };
    c.write(|mut c| {
        let req = req.clone();
        async move { c.set_snapshot_policy(req).await }
    })
    .await
    .map_err(status)?;
    ls(g).await
}
