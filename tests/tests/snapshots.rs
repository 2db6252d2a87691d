//! Cluster snapshot files through `stackctl`, against a real manager
//! (`--no-agent`: no Docker needed): save, inspect with and without the
//! recovery key, the age tool opening a snapshot without stackd, the key's
//! rotation, and the refusals of a truncated file, a flipped byte, an
//! altered header and a wrong key.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use serde_json::Value;
use stackd_tests::Node;
use stackd_tests::cluster::Opts;

fn json(node: &Node, args: &[&str]) -> Value {
    let out = node.stackctl(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("stackctl {args:?}: not JSON ({e}): {out}"))
}

/// `stackctl snapshot inspect` that must fail: its message.
fn refused(node: &Node, args: &[&str]) -> String {
    let o = node.stackctl_output(args).expect("run stackctl");
    assert!(!o.status.success(), "stackctl {args:?} accepted: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn age_tool() -> bool {
    let found = Command::new("age").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "the age tool is missing (scripts/test.sh installs it)"
    );
    found
}

#[test]
fn a_snapshot_is_saved_encrypted_opened_with_the_key_only_and_refused_when_damaged() {
    let node = Node::init_opts("snap1", &Opts::manager()).expect("manager");
    let work = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| work.path().join(name).to_string_lossy().into_owned();

    // Something to find again: a secret (by name only) and a config.
    let secret = work.path().join("pw.txt");
    std::fs::write(&secret, "hunter2-the-value").expect("write");
    node.stackctl(&["secret", "create", "db_password", &secret.to_string_lossy()]);
    node.stackctl(&["configs", "create", "site", &secret.to_string_lossy()]);

    let key = node.dir.path().join("recovery.key");
    let mode = std::fs::metadata(&key).expect("stackd init wrote recovery.key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let recipient = node.stackctl(&["cluster", "recovery-key"]).trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");

    let file = p("one.snap");
    node.stackctl(&["snapshot", "save", &file]);
    let mode = std::fs::metadata(&file).expect("saved").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a snapshot file is private");
    assert!(!std::path::Path::new(&p("one.snap.partial")).exists(), "no partial file left");
    let bytes = std::fs::read(&file).expect("read");
    assert!(!bytes.windows(17).any(|w| w == b"hunter2-the-value"), "the secret is not in the clear");

    // Without the key: the header.
    let head = json(&node, &["snapshot", "inspect", &file, "-o", "json"]);
    let status = node.status(false).expect("status");
    assert_eq!(head["cluster_id"], status["cluster_id"]);
    assert_eq!(head["recipient"], recipient.as_str());
    assert!(head["index"].as_u64().is_some_and(|i| i > 0), "{head}");
    assert!(head.get("contents").is_none(), "nothing more without the key: {head}");

    // With it: what the state holds, secrets by name only.
    let key_s = key.to_string_lossy().into_owned();
    let full = json(&node, &["snapshot", "inspect", &file, "--key-file", &key_s, "-o", "json"]);
    let contents = &full["contents"];
    assert_eq!(contents["secrets"], serde_json::json!(["db_password"]), "{full}");
    assert_eq!(contents["configs"], serde_json::json!(["site"]), "{full}");
    assert_eq!(contents["tokens"], serde_json::json!(["admin"]), "{full}");
    assert_eq!(contents["state_hash"], status["state_hash"], "nothing changed since the save: the same state");
    assert!(!full.to_string().contains("hunter2"), "inspect never prints a secret's value");

    // Debian's age tool opens it without stackd, as docs/operations.md says.
    if age_tool() {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("tail -n +3 '{file}' | age -d -i '{key_s}'"))
            .stderr(Stdio::piped())
            .output()
            .expect("sh");
        assert!(out.status.success(), "age -d: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let (header, state) = text.split_once('\n').expect("header line");
        let header: Value = serde_json::from_str(header).expect("header JSON");
        assert_eq!(header["index"], head["index"]);
        let state: Value = serde_json::from_str(state).expect("state JSON");
        assert_eq!(state["cluster_id"], status["cluster_id"]);
    }

    // Standard output, for a pipe to another host.
    let o = node.stackctl_output(&["snapshot", "save", "-"]).expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.starts_with(b"STACKD-SNAPSHOT-FILE\n"));

    // Damaged files: each refused, saying what is wrong.
    let write = |name: &str, data: &[u8]| {
        std::fs::write(work.path().join(name), data).expect("write");
        p(name)
    };
    let truncated = write("truncated.snap", &bytes[..bytes.len() - 100]);
    let why = refused(&node, &["snapshot", "inspect", &truncated, "--key-file", &key_s]);
    assert!(why.contains("truncated or corrupted"), "{why}");
    let mut flipped = bytes.clone();
    let at = bytes.len() - 50;
    flipped[at] ^= 0x01;
    let flipped = write("flipped.snap", &flipped);
    let why = refused(&node, &["snapshot", "inspect", &flipped, "--key-file", &key_s]);
    assert!(why.contains("truncated or corrupted"), "{why}");
    let index = head["index"].as_u64().expect("index");
    let altered = String::from_utf8_lossy(&bytes).replacen(
        &format!("\"index\":{index},"),
        &format!("\"index\":{},", index + 1),
        1,
    );
    let altered = write("altered.snap", altered.as_bytes());
    let why = refused(&node, &["snapshot", "inspect", &altered, "--key-file", &key_s]);
    assert!(why.contains("altered"), "{why}");
    let foreign = write("foreign.snap", b"{\"not\":\"a snapshot\"}\n");
    let why = refused(&node, &["snapshot", "inspect", &foreign]);
    assert!(why.contains("not a stackd snapshot file"), "{why}");

    // A new recovery key: made by stackctl, only its public half sent.
    let new_key = p("new.key");
    node.stackctl(&["cluster", "recovery-key", "--rotate", "--out", &new_key]);
    let mode = std::fs::metadata(&new_key).expect("new key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = refused(&node, &["cluster", "recovery-key", "--rotate", "--out", &new_key]);
    assert!(again.contains("must not exist"), "an existing key file is never overwritten: {again}");
    let second = p("two.snap");
    node.stackctl(&["snapshot", "save", &second]);
    let why = refused(&node, &["snapshot", "inspect", &second, "--key-file", &key_s]);
    assert!(why.contains("does not open"), "the old key: {why}");
    let opened = json(&node, &["snapshot", "inspect", &second, "--key-file", &new_key, "-o", "json"]);
    assert_eq!(opened["contents"]["secrets"], serde_json::json!(["db_password"]));
    // The first snapshot still opens with the key it was made for.
    json(&node, &["snapshot", "inspect", &file, "--key-file", &key_s, "-o", "json"]);
}

/// The scheduled snapshot files in a manager's `DATA_DIR/snapshots`.
fn scheduled_files(node: &Node) -> Vec<String> {
    let dir = node.dir.path().join("snapshots");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.retain(|n| n.starts_with("snapshot-") && n.ends_with(".snap"));
    names.sort();
    names
}

fn taken(c: &stackd_tests::cluster::Cluster) -> Vec<Value> {
    let out = c.stackctl(&["snapshot", "ls", "-o", "json"]);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("snapshot ls: {e}: {out}"));
    doc["taken"].as_array().cloned().unwrap_or_default()
}

#[test]
fn scheduled_snapshots_fire_once_per_tick_across_a_failover_and_retention_prunes() {
    use std::time::Duration;
    let mut c = stackd_tests::cluster::Cluster::managers(3, &Opts::manager()).expect("3 managers");
    let old = c.wait_leader(None, Duration::from_secs(10)).expect("leader");

    // A bad pattern is refused and changes nothing.
    let o = c.stackctl_output(&["snapshot", "schedule", "--cron", "every now and then"], None).expect("run");
    assert!(!o.status.success(), "a bad pattern was accepted");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a cron pattern"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ls: Value = serde_json::from_str(&c.stackctl(&["snapshot", "ls", "-o", "json"])).expect("json");
    assert_eq!(ls["schedule"], "0 */6 * * *", "the default schedule: {ls}");
    assert_eq!(ls["is_default"], true);

    // Every 2 seconds, 2 kept per manager.
    c.stackctl(&["snapshot", "schedule", "--cron", "*/2 * * * * *", "--retention", "2"]);
    stackd_tests::wait_until(Duration::from_secs(20), "3 scheduled snapshots", || {
        (taken(&c).iter().filter(|t| t["error"] == "").count() >= 3).then_some(())
    });
    let leader_name = c.nodes[old].name.clone();
    assert!(taken(&c).iter().all(|t| t["manager"] == leader_name.as_str()), "the leader takes them: {:?}", taken(&c));

    c.nodes[old].kill9();
    let new = c.wait_leader(Some(old), Duration::from_secs(10)).expect("a new leader");
    let new_name = c.nodes[new].name.clone();
    stackd_tests::wait_until(Duration::from_secs(20), "3 scheduled snapshots by the new leader", || {
        (taken(&c).iter().filter(|t| t["manager"] == new_name.as_str() && t["error"] == "").count() >= 3).then_some(())
    });
    c.stackctl(&["snapshot", "schedule", "--cron", "off"]);
    std::thread::sleep(Duration::from_millis(500));

    // Exactly one snapshot per tick: every tick recorded once, and no tick's
    // file on two managers.
    let records = taken(&c);
    let ticks: Vec<&str> = records.iter().filter_map(|t| t["tick"].as_str()).collect();
    let mut unique = ticks.clone();
    unique.dedup();
    assert_eq!(ticks, unique, "a tick recorded twice (ticks are sorted as taken): {records:?}");
    let mut all_files = Vec::new();
    for node in &c.nodes {
        let files = scheduled_files(node);
        assert!(files.len() <= 2, "retention keeps 2 per manager, {} has {files:?}", node.name);
        all_files.extend(files.into_iter().map(|f| f.split("-i").next().unwrap_or_default().to_string()));
    }
    let n = all_files.len();
    all_files.sort();
    all_files.dedup();
    assert_eq!(all_files.len(), n, "one tick's snapshot on two managers: {all_files:?}");
    assert_eq!(scheduled_files(&c.nodes[new]).len(), 2, "the new leader kept its newest 2");

    // Each opens with the cluster's recovery key (written by the first manager's init).
    let key = c.nodes[0].dir.path().join("recovery.key");
    let newest = c.nodes[new].dir.path().join("snapshots").join(scheduled_files(&c.nodes[new]).pop().expect("a file"));
    let out = c.stackctl(&[
        "snapshot",
        "inspect",
        &newest.to_string_lossy(),
        "--key-file",
        &key.to_string_lossy(),
        "-o",
        "json",
    ]);
    let doc: Value = serde_json::from_str(&out).expect("json");
    assert!(doc["contents"]["nodes"].as_array().is_some_and(|n| n.len() == 3), "{doc}");
}

/// Running tasks of `stack` as `ps` shows them.
fn running(c: &stackd_tests::cluster::Cluster, stack: &str) -> usize {
    let ps: Value = serde_json::from_str(&c.stackctl(&["ps", stack, "-o", "json"])).unwrap_or_default();
    ps.as_array()
        .map(|a| a.iter().filter(|t| t["current_state"] == "running" && t["desired_state"] == "running").count())
        .unwrap_or(0)
}

/// The disaster: every manager of three is lost with its data dir. `stackd
/// restore` starts a new one from the snapshot on an old manager's address;
/// both workers reconnect and keep their containers (same ids, not
/// restarted), the old admin token still works, and the containers of a
/// stack deployed after the snapshot are removed. Refusals first: a
/// damaged file, a wrong key and a non-empty data dir leave nothing behind.
#[test]
fn all_managers_lost_are_restored_from_a_snapshot_and_the_workers_keep_their_containers() {
    use stackd_tests::{build_images, docker, require_docker, wait_until};
    use std::collections::BTreeSet;
    use std::time::Duration;
    if !require_docker() {
        return;
    }
    build_images();
    let mut c = stackd_tests::cluster::Cluster::managers(3, &Opts::manager()).expect("3 managers");
    c.add_worker("w1").expect("a worker");
    c.add_worker("w2").expect("a worker");
    let cluster_id = c.nodes[0].cluster_id();
    let stack = |name: &str, replicas: u32| {
        c.nodes[0].write_stack(
            &format!("{name}.yml"),
            &format!(
                "services:\n  web:\n    image: stackd-test/web:1\n    deploy:\n      replicas: {replicas}\n      update_config:\n        monitor: 1s\n"
            ),
        )
    };
    let keep = stack("keep", 4);
    let out = c.stackctl(&["deploy", "-c", &keep, "keep", "--wait", "--timeout", "60s"]);
    assert!(out.contains("converged"), "{out}");
    let label = format!("io.stackd.cluster={cluster_id}");
    let before: BTreeSet<String> = docker::running(&label).into_iter().map(|c| c.id).collect();
    assert_eq!(before.len(), 4);

    let work = tempfile::tempdir().expect("tempdir");
    let snap = work.path().join("cluster.snap");
    c.stackctl(&["snapshot", "save", &snap.to_string_lossy()]);
    let key = work.path().join("recovery.key");
    std::fs::copy(c.nodes[0].dir.path().join("recovery.key"), &key).expect("keep the key off the manager");
    // Deployed after the snapshot: the restored cluster does not know it.
    let later = stack("later", 1);
    let out = c.stackctl(&["deploy", "-c", &later, "later", "--wait", "--timeout", "60s"]);
    assert!(out.contains("converged"), "{out}");
    assert_eq!(docker::running(&label).len(), 5);

    // Refusals, before anything is written.
    let stackd = stackd_tests::bin("stackd");
    let refuse = |from: &std::path::Path, key: &std::path::Path, dir: &std::path::Path, extra: &[&str]| {
        let o = Command::new(&stackd)
            .args(["restore", "--from", &from.to_string_lossy(), "--key-file", &key.to_string_lossy()])
            .args(["--data-dir", &dir.to_string_lossy(), "--listen", "127.0.0.1:1", "--no-agent"])
            .args(extra)
            .output()
            .expect("stackd restore");
        assert!(!o.status.success(), "restore accepted {from:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let bytes = std::fs::read(&snap).expect("read");
    let truncated = work.path().join("truncated.snap");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let mut flipped = bytes.clone();
    flipped[bytes.len() - 10] ^= 0x80;
    let flipped_path = work.path().join("flipped.snap");
    std::fs::write(&flipped_path, &flipped).expect("write");
    let other_key = work.path().join("other.key");
    std::fs::write(&other_key, stackd_tls::age::Identity::generate().expect("key").to_file("now", "other")).expect("w");
    let fresh = work.path().join("never-made");
    for (from, k, why) in [
        (&truncated, &key, "truncated or corrupted"),
        (&flipped_path, &key, "truncated or corrupted"),
        (&snap, &other_key, "does not open"),
    ] {
        let said = refuse(from, k, &fresh, &[]);
        assert!(said.contains(why), "{from:?}: {said}");
        assert!(!fresh.exists(), "a refused restore left {fresh:?} behind");
    }
    let occupied = work.path().join("occupied");
    std::fs::create_dir_all(&occupied).expect("mkdir");
    std::fs::write(occupied.join("something"), b"x").expect("write");
    let said = refuse(&snap, &key, &occupied, &[]);
    assert!(said.contains("not empty"), "{said}");
    assert!(occupied.join("something").exists(), "a refused restore changed nothing");

    // The disaster: every manager and its data dir are gone.
    let settings = c.nodes[0].portable_settings().expect("settings");
    let addr = c.nodes[0].addr.clone();
    let mut old = Vec::new();
    for _ in 0..3 {
        let mut m = c.nodes.remove(0);
        m.kill9();
        // Wiped: its Raft state is gone. (The harness value lives on: its
        // drop at the end removes the test's containers.)
        std::fs::remove_dir_all(m.dir.path().join("raft")).expect("wipe the manager's Raft state");
        old.push(m);
    }
    let restored = Node::restore_at("m-restored", &Opts::manager(), &addr, &snap, &key, settings).expect("restore");
    assert_eq!(restored.status(false).expect("status")["cluster_id"], cluster_id.as_str());
    c.nodes.insert(0, restored);

    wait_until(Duration::from_secs(60), "both workers back and 4 tasks of keep running", || {
        let nodes: Value = serde_json::from_str(&c.stackctl(&["node", "ls", "-o", "json"])).unwrap_or_default();
        let ready =
            |w: &str| nodes.as_array().is_some_and(|a| a.iter().any(|n| n["name"] == w && n["state"] == "ready"));
        (ready("w1") && ready("w2") && running(&c, "keep") == 4).then_some(())
    });
    let nodes: Value = serde_json::from_str(&c.stackctl(&["node", "ls", "-o", "json"])).expect("json");
    assert_eq!(nodes.as_array().map(Vec::len), Some(3), "the restored manager and the two workers: {nodes}");
    wait_until(Duration::from_secs(30), "the container of the later stack removed", || {
        (docker::running(&label).len() == 4).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let after: BTreeSet<String> = docker::running(&label).into_iter().map(|c| c.id).collect();
    assert_eq!(after, before, "the worker's containers were replaced:\n{}", c.logs());
    let stacks = c.stackctl(&["stack", "ls"]);
    assert!(stacks.contains("keep") && !stacks.contains("later"), "{stacks}");
    drop(old);
}

/// Two of three managers lost for good: the survivor has no quorum, so its
/// state is saved with `--stale`, and restored on its address. A lost
/// manager that comes back with its old data is refused by the restored
/// cluster (restore generation), not merged.
#[test]
fn a_cluster_without_quorum_is_saved_stale_restored_and_an_old_manager_is_refused() {
    use stackd_tests::wait_until;
    use std::time::Duration;
    let mut c = stackd_tests::cluster::Cluster::managers(3, &Opts::manager()).expect("3 managers");
    c.wait_leader(None, Duration::from_secs(10)).expect("leader");
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("site.conf");
    std::fs::write(&data, "listen 80").expect("write");
    c.stackctl(&["configs", "create", "before-the-loss", &data.to_string_lossy()]);
    c.wait_converged(Duration::from_secs(20)).expect("converged");

    // m2 and m3 are lost: no quorum, so a consistent save is refused and a stale one works.
    c.nodes[1].kill9();
    c.nodes[2].kill9();
    let survivor = &c.nodes[0];
    let snap = work.path().join("stale.snap");
    let (o, _) = survivor
        .stackctl_timeout(&["snapshot", "save", &snap.to_string_lossy()], None, Duration::from_secs(15))
        .expect("run");
    assert!(!o.status.success(), "a consistent snapshot without a leader");
    let (o, _) = survivor
        .stackctl_timeout(&["snapshot", "save", "--stale", &snap.to_string_lossy()], None, Duration::from_secs(15))
        .expect("run");
    assert!(o.status.success(), "stale save: {}", String::from_utf8_lossy(&o.stderr));

    // The survivor is replaced by a restored manager on its address.
    let key = work.path().join("recovery.key");
    std::fs::copy(survivor.dir.path().join("recovery.key"), &key).expect("key");
    let settings = survivor.portable_settings().expect("settings");
    let addr = survivor.addr.clone();
    c.nodes[0].kill9();
    let restored = Node::restore_at("r1", &Opts::manager(), &addr, &snap, &key, settings).expect("restore");
    let configs = restored.stackctl(&["configs", "ls"]);
    assert!(configs.contains("before-the-loss"), "{configs}");
    let term = restored.status(false).expect("status")["term"].as_u64().expect("term");

    // m2 comes back with its old data: it campaigns at its old, higher term,
    // and the restored manager refuses it: its node is no manager of the
    // restored state (and its restore generation is older).
    c.nodes[1].start().expect("restart m2");
    wait_until(Duration::from_secs(20), "m2 refused by the restored manager", || {
        let log = c.nodes[1].log();
        (log.contains("no manager of this cluster") || log.contains("restore generation")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let status = restored.status(false).expect("the restored manager still serves");
    assert_eq!(status["term"].as_u64(), Some(term), "the old manager disturbed the restored one: {status}");
    assert_eq!(status["leader_id"], status["node_id"], "{status}");
    let managers = status["managers"].as_array().map(Vec::len);
    assert_eq!(managers, Some(1), "the old manager was merged: {status}");
    c.nodes[1].kill9();

    // A new manager joins the restored cluster afresh (the state reaches it
    // as a snapshot: the restore's entry is compacted away).
    let old = std::mem::replace(&mut c.nodes[0], restored);
    drop(old);
    let m4 = c.add_manager("m4", &Opts::manager()).expect("a new manager joins the restored cluster");
    c.wait_voters(2, Duration::from_secs(60)).expect("m4 becomes a voter");
    wait_until(Duration::from_secs(30), "m4 has the restored state", || {
        let s = c.nodes[m4].status(true)?;
        (s["state_hash"] == c.nodes[0].status(true)?["state_hash"]).then_some(())
    });
    let log = c.nodes[0].log();
    assert!(log.contains("the restored state is in a snapshot"), "{log}");
}

/// A real S3-compatible server for the test: moto's server mode
/// (`STACKD_TEST_MOTO`, installed by scripts/test.sh), on a free port.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    fn start() -> Option<S3Server> {
        let Some(bin) = std::env::var_os("STACKD_TEST_MOTO") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "STACKD_TEST_MOTO is not set: scripts/test.sh installs moto's server for the S3 tests"
            );
            eprintln!("skipped: no S3 server (STACKD_TEST_MOTO)");
            return None;
        };
        let port = stackd_tests::free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let server = S3Server { child, endpoint: format!("http://127.0.0.1:{port}") };
        stackd_tests::wait_until(std::time::Duration::from_secs(30), "the S3 server listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
        });
        Some(server)
    }

    /// Creates a bucket (moto takes unsigned requests).
    fn create_bucket(&self, name: &str) {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        write!(s, "PUT /{name} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("w");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "create bucket: {answer}");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scheduled snapshots uploaded to a real S3-compatible server, pruned to
/// the bucket's retention, listed by `snapshot ls`, and a cluster restored
/// from one with `stackd restore --from s3://…`.
#[test]
fn scheduled_snapshots_go_to_s3_and_a_cluster_is_restored_from_there() {
    use stackd_tests::wait_until;
    use std::time::Duration;
    let Some(s3) = S3Server::start() else { return };
    s3.create_bucket("backups");
    let work = tempfile::tempdir().expect("tempdir");
    let creds = work.path().join("s3.credentials");
    std::fs::write(&creds, "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n").expect("w");
    let creds_s = creds.to_string_lossy().into_owned();

    let mut c = stackd_tests::cluster::Cluster::managers(1, &Opts::manager()).expect("a manager");
    let data = work.path().join("site.conf");
    std::fs::write(&data, "listen 80").expect("write");
    c.stackctl(&["configs", "create", "kept-in-s3", &data.to_string_lossy()]);
    // A bucket that does not exist: each upload fails, saying so, and the local file is kept.
    c.stackctl(&[
        "snapshot",
        "schedule",
        "--cron",
        "*/2 * * * * *",
        "--retention",
        "5",
        "--s3-endpoint",
        &s3.endpoint,
        "--s3-bucket",
        "no-such-bucket",
        "--s3-credentials-file",
        &creds_s,
    ]);
    wait_until(Duration::from_secs(20), "a failed upload recorded", || {
        taken(&c).iter().any(|t| t["error"].as_str().is_some_and(|e| e.starts_with("upload:"))).then_some(())
    });
    c.stackctl(&[
        "snapshot",
        "schedule",
        "--s3-endpoint",
        &s3.endpoint,
        "--s3-bucket",
        "backups",
        "--s3-prefix",
        "prod/",
        "--s3-retention",
        "2",
        "--s3-credentials-file",
        &creds_s,
    ]);
    let listed = |c: &stackd_tests::cluster::Cluster| -> Value {
        serde_json::from_str(&c.stackctl(&["snapshot", "ls", "-o", "json"])).expect("json")
    };
    wait_until(Duration::from_secs(30), "4 snapshots uploaded", || {
        let uploaded = taken(&c).iter().filter(|t| t["remote"].as_str().is_some_and(|r| !r.is_empty())).count();
        (uploaded >= 4).then_some(())
    });
    c.stackctl(&["snapshot", "schedule", "--cron", "off"]);
    std::thread::sleep(Duration::from_millis(500));
    let ls = listed(&c);
    let remote = ls["remote"].as_array().cloned().unwrap_or_default();
    assert_eq!(remote.len(), 2, "the bucket keeps 2: {ls}");
    assert!(remote.iter().all(|r| r["url"].as_str().is_some_and(|u| u.starts_with("s3://backups/prod/snapshot-"))));
    let newest = remote.last().and_then(|r| r["url"].as_str()).expect("a url").to_string();

    // The manager is lost; a new one starts from the bucket.
    let key = work.path().join("recovery.key");
    std::fs::copy(c.nodes[0].dir.path().join("recovery.key"), &key).expect("key");
    let settings = c.nodes[0].portable_settings().expect("settings");
    let addr = c.nodes[0].addr.clone();
    c.nodes[0].kill9();
    let o = Command::new(stackd_tests::bin("stackd"))
        .args(["restore", "--from", &newest, "--key-file", &key.to_string_lossy(), "--no-agent"])
        .args(["--data-dir", &work.path().join("never").to_string_lossy(), "--listen", "127.0.0.1:1"])
        .output()
        .expect("run");
    assert!(!o.status.success(), "an s3:// source without --s3-endpoint");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--s3-endpoint"), "{}", String::from_utf8_lossy(&o.stderr));
    let restored = Node::restore_at_with(
        "from-s3",
        &Opts::manager(),
        &addr,
        &newest,
        &key,
        &["--s3-endpoint", &s3.endpoint, "--s3-credentials-file", &creds_s],
        settings,
        None,
    )
    .expect("restore from S3");
    let configs = restored.stackctl(&["configs", "ls"]);
    assert!(configs.contains("kept-in-s3"), "{configs}");
}

/// The ids of the running containers of the cluster `cluster_id` on an engine.
fn container_ids(mut docker: Command, cluster_id: &str) -> std::collections::BTreeSet<String> {
    let o = docker
        .args(["ps", "-q", "--no-trunc", "--filter"])
        .arg(format!("label=io.stackd.cluster={cluster_id}"))
        .output()
        .expect("docker ps");
    assert!(o.status.success(), "docker ps: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect()
}

/// The full disaster on the multi-engine harness: 3 managers and 2 workers,
/// each node with its own engine in its own namespace. Every manager is
/// lost with its Raft state; a new manager is restored from the snapshot
/// on the first one's address, in its namespace. Both workers reconnect
/// and their containers (on their own engines) keep running, same ids; the
/// container of a stack deployed after the snapshot is removed.
#[test]
fn the_full_disaster_on_separate_engines_keeps_the_workers_containers() {
    use stackd_tests::engines::Engines;
    use stackd_tests::{require_docker, wait_until};
    use std::time::Duration;
    if !require_docker() {
        return;
    }
    let mut e = Engines::start(5, 3, &Opts::default()).expect("5 nodes, 3 managers, an engine each");
    let cluster_id = e.node(0).cluster_id();
    let stack = |replicas: u32| {
        format!(
            "services:\n  web:\n    image: stackd-test/web:1\n    deploy:\n      replicas: {replicas}\n      \
             placement:\n        constraints: [node.role == worker]\n      update_config:\n        monitor: 1s\n"
        )
    };
    let keep = e.node(0).write_stack("keep.yml", &stack(4));
    let out = e.cluster.stackctl(&["deploy", "-c", &keep, "keep", "--wait", "--timeout", "90s"]);
    assert!(out.contains("converged"), "{out}");
    let before: Vec<_> = (3..5).map(|i| container_ids(e.docker(i), &cluster_id)).collect();
    assert_eq!(before.iter().map(|s| s.len()).sum::<usize>(), 4, "{before:?}");

    let work = tempfile::tempdir().expect("tempdir");
    let snap = work.path().join("cluster.snap");
    e.cluster.stackctl(&["snapshot", "save", &snap.to_string_lossy()]);
    let key = work.path().join("recovery.key");
    std::fs::copy(e.node(0).dir.path().join("recovery.key"), &key).expect("key");
    let later = e.node(0).write_stack("later.yml", &stack(1));
    let out = e.cluster.stackctl(&["deploy", "-c", &later, "later", "--wait", "--timeout", "90s"]);
    assert!(out.contains("converged"), "{out}");

    let settings = e.node(0).portable_settings().expect("settings");
    let (addr, ns) = (e.node(0).addr.clone(), e.node(0).netns().map(String::from));
    for i in 0..3 {
        e.kill_stackd(i);
        std::fs::remove_dir_all(e.node(i).dir.path().join("raft")).expect("wipe the manager's Raft state");
    }
    let restored = Node::restore_at_with(
        "restored",
        &Opts::manager(),
        &addr,
        &snap.to_string_lossy(),
        &key,
        &[],
        settings,
        ns.as_deref(),
    )
    .expect("restore in the first manager's namespace");
    wait_until(Duration::from_secs(60), "both workers ready and 4 tasks of keep running", || {
        let nodes: Value = serde_json::from_str(&restored.stackctl(&["node", "ls", "-o", "json"])).ok()?;
        let ready =
            |w: &str| nodes.as_array().is_some_and(|a| a.iter().any(|n| n["name"] == w && n["state"] == "ready"));
        let ps: Value = serde_json::from_str(&restored.stackctl(&["ps", "keep", "-o", "json"])).ok()?;
        let running = ps.as_array().map_or(0, |a| {
            a.iter().filter(|t| t["current_state"] == "running" && t["desired_state"] == "running").count()
        });
        (ready("n4") && ready("n5") && running == 4).then_some(())
    });
    wait_until(Duration::from_secs(30), "the later stack's container removed", || {
        let now: Vec<_> = (3..5).map(|i| container_ids(e.docker(i), &cluster_id)).collect();
        (now == before).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<_> = (3..5).map(|i| container_ids(e.docker(i), &cluster_id)).collect();
    assert_eq!(after, before, "the workers' containers were replaced");
    // The workers now refuse managers of the cluster before the restore.
    for i in 3..5 {
        let seen = std::fs::read_to_string(e.node(i).dir.path().join("restore-generation")).unwrap_or_default();
        assert_eq!(seen.trim(), "1", "node {i} keeps the restore generation it saw");
    }
}
