//! High availability: three (or four) managers as separate `stackd`
//! processes (`--no-agent`, no Docker needed) on their own addresses.
//!
//! - (a) `kill -9` of the leader under a continuous writer: a new leader takes
//!   writes, every acknowledged write is on every manager afterwards.
//! - (b) the leader cut off (network namespaces, root only): the majority
//!   elects, the old leader refuses writes, all converge after healing;
//!   (b2) `--stale` reads on a follower answer at once during the partition.
//! - (c) all three killed and started again at once: the state is intact;
//!   (c2) after a power cut that took the leader's unsynced last entry, the
//!   old leader does not take up its term again, and all converge.
//! - (d) a 4th manager joins after compaction and catches up by snapshot.
//! - (e) joins with a wrong secret or another CA's digest change nothing.
//! - (f) deployer and viewer tokens created with `stackctl token create`.
//! - Membership: a demote that would lose quorum is refused; `node rm` of a
//!   dead manager leaves two voters; (h) a worker promoted becomes a voter
//!   (Docker needed: the worker runs its agent).
//!
//! The tests run one at a time (a process-wide lock): each starts its own
//! cluster, and elections on a loaded 2-core machine are what is measured.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use stackd_tests::cluster::{STACKCTL_TIMEOUT, run_timeout, text};
use stackd_tests::netns::{self, Netns};
use stackd_tests::{Cluster, Node, Opts, bin, require_docker};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A write acknowledged: the config's name and when.
type Acked = (String, Instant);
/// A write that failed: the config's name, when, and stackctl's output.
type Failed = (String, Instant, String);

/// A continuous writer: `configs create w<n> -` through every manager's
/// address, one after the other; records the names that were acknowledged
/// (exit 0) and when.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    failed: Arc<Mutex<Vec<Failed>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(cluster: &Cluster, prefix: &str) -> Writer {
        let env = cluster.client_env().expect("client env");
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let (s, a, f, prefix) = (stop.clone(), acked.clone(), failed.clone(), prefix.to_string());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let name = format!("{prefix}{n}");
                let mut cmd = std::process::Command::new(bin("stackctl"));
                for key in ["STACKCTL_ADDR", "STACKCTL_CA", "STACKCTL_TOKEN"] {
                    cmd.env_remove(key);
                }
                cmd.envs(env.iter().map(|(k, v)| (k, v))).args(["configs", "create", &name, "-"]);
                match run_timeout(cmd, Some(format!("value {n}").as_bytes()), STACKCTL_TIMEOUT) {
                    Ok((o, _)) if o.status.success() => a.lock().expect("lock").push((name, Instant::now())),
                    Ok((o, _)) => f.lock().expect("lock").push((name, Instant::now(), text(&o))),
                    Err(e) => f.lock().expect("lock").push((name, Instant::now(), format!("{e:#}"))),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Writer { stop, acked, failed, thread: Some(thread) }
    }

    fn acked(&self) -> Vec<Acked> {
        self.acked.lock().expect("lock").clone()
    }

    fn finish(mut self) -> (Vec<Acked>, Vec<Failed>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread");
        }
        (self.acked.lock().expect("lock").clone(), self.failed.lock().expect("lock").clone())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `configs create NAME -` through every manager; must succeed.
fn create_config(c: &Cluster, name: &str) {
    let o = c.stackctl_output(&["configs", "create", name, "-"], Some(name.as_bytes())).expect("run stackctl");
    assert!(o.status.success(), "configs create {name} failed: {}\n{}", text(&o), c.logs());
}

/// Creates the configs `<prefix>0` … `<prefix>{n-1}`, one after the other;
/// returns their names.
fn create_configs(c: &Cluster, prefix: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|k| {
            let name = format!("{prefix}{k}");
            create_config(c, &name);
            name
        })
        .collect()
}

/// Checks that manager `i` alone lists every name of `want` (through the
/// leader, then from its local state).
fn assert_has_all(c: &Cluster, i: usize, want: &BTreeSet<String>) {
    for stale in [false, true] {
        let have: BTreeSet<String> = c.config_names(i, stale).expect("configs ls").into_iter().collect();
        let missing: Vec<&String> = want.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "manager {} (stale: {stale}) lacks {} acknowledged config(s): {missing:?}\n{}",
            c.nodes[i].name,
            missing.len(),
            c.logs()
        );
    }
}

#[test]
fn a_kill_leader_under_writes_loses_no_acknowledged_write() {
    let _g = serial();
    let mut c = Cluster::managers(3, &Opts::manager()).expect("3 managers");
    let old = c.wait_leader(None, Duration::from_secs(10)).expect("leader");
    let writer = Writer::start(&c, "w");

    std::thread::sleep(Duration::from_secs(2));
    let before = writer.acked().len();
    assert!(before > 0, "no write acknowledged in 2 s before the kill\n{}", c.logs());
    let old_id = c.nodes[old].node_id();
    c.nodes[old].kill9();
    let killed = Instant::now();
    eprintln!("killed leader {} ({old_id}) after {before} writes", c.nodes[old].name);

    let new = c.wait_leader(Some(old), Duration::from_secs(10)).expect("a new leader");
    eprintln!("new leader {} after {:.2} s", c.nodes[new].name, killed.elapsed().as_secs_f64());
    // A new leader accepts writes: the writer gets acknowledgements after the kill.
    let first_after = stackd_tests::wait_until(Duration::from_secs(10), "a write acknowledged after the kill", || {
        writer.acked().iter().find(|(_, t)| *t > killed).map(|(n, t)| (n.clone(), *t))
    });
    eprintln!(
        "first write acknowledged after the kill: {} at +{:.2} s",
        first_after.0,
        (first_after.1 - killed).as_secs_f64()
    );

    std::thread::sleep(Duration::from_secs(4));
    c.nodes[old].start().expect("restart the old leader");
    std::thread::sleep(Duration::from_secs(3));
    let (acked, failed) = writer.finish();
    let after = acked.iter().filter(|(_, t)| *t > killed).count();
    eprintln!("{} writes acknowledged ({after} after the kill), {} failed", acked.len(), failed.len());
    for (name, t, err) in failed.iter().take(5) {
        eprintln!("  failed {name} at +{:.2} s: {}", t.saturating_duration_since(killed).as_secs_f64(), err.trim());
    }
    assert!(after >= 5, "only {after} writes acknowledged after the kill\n{}", c.logs());

    c.wait_voters(3, Duration::from_secs(30)).expect("the old leader back as a voter");
    let hash = c.wait_converged(Duration::from_secs(30)).expect("all managers converge");
    eprintln!("converged: {hash}");
    let want: BTreeSet<String> = acked.into_iter().map(|(n, _)| n).collect();
    for i in 0..c.nodes.len() {
        assert_has_all(&c, i, &want);
    }
}

#[test]
fn b_partitioned_leader_steps_down_and_all_converge_after_heal() {
    if !netns::require_root() {
        return;
    }
    let _g = serial();
    let net = Netns::new(3).expect("namespaces");
    let c = Cluster::managers_netns(&net, 3, &Opts::manager()).expect("3 managers in namespaces");
    for n in 0..5 {
        create_config(&c, &format!("pre{n}"));
    }
    let old = c.wait_leader(None, Duration::from_secs(10)).expect("leader");
    eprintln!("cutting off leader {} ({})", c.nodes[old].name, c.nodes[old].addr);
    net.cut(old).expect("cut the leader");
    let cut = Instant::now();
    // A write sent to the old leader right after the cut, before it can know
    // it lost the majority: it must fail too, within a few seconds (never hang).
    let early = std::thread::scope(|s| {
        let early = s.spawn(|| {
            c.nodes[old]
                .stackctl_timeout(&["configs", "create", "early-to-old", "-"], Some(b"x"), Duration::from_secs(30))
                .expect("stackctl on the old leader")
        });

        // The majority elects a new leader (1.5–2 s here; the bound leaves
        // room for a busy 2-core CI and for a follower with a shorter log).
        let new = c.wait_leader(Some(old), Duration::from_secs(15)).expect("the majority elects a new leader");
        eprintln!("new leader {} after {:.2} s", c.nodes[new].name, cut.elapsed().as_secs_f64());
        early.join().expect("early writer")
    });
    let (o, took) = early;
    eprintln!(
        "write to the old leader at the cut: {} after {:.2} s: {}",
        o.status,
        took.as_secs_f64(),
        text(&o).trim()
    );
    assert_eq!(o.status.code(), Some(1), "a write to the leader at the cut did not fail: {}\n{}", text(&o), c.logs());
    assert!(took < Duration::from_secs(10), "the cut-off leader took {took:?} to refuse a write sent at the cut");

    // The old leader alone refuses writes, within a few seconds.
    let (o, took) = c.nodes[old]
        .stackctl_timeout(&["configs", "create", "to-old-leader", "-"], Some(b"x"), Duration::from_secs(20))
        .expect("stackctl on the old leader");
    eprintln!("write to the old leader: {} after {:.2} s: {}", o.status, took.as_secs_f64(), text(&o).trim());
    assert_eq!(o.status.code(), Some(1), "a write to the cut-off leader did not fail: {}\n{}", text(&o), c.logs());
    assert!(took < Duration::from_secs(8), "the cut-off leader took {took:?} to refuse a write");
    assert!(text(&o).contains("majority"), "the refusal does not say why: {}", text(&o));

    // Writes through the majority succeed.
    let majority: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let mut written = BTreeSet::new();
    for n in 0..5 {
        let name = format!("during{n}");
        let (o, _) = c.nodes[majority[n % 2]]
            .stackctl_timeout(&["configs", "create", &name, "-"], Some(b"x"), STACKCTL_TIMEOUT)
            .expect("stackctl");
        assert!(o.status.success(), "write {name} through the majority failed: {}\n{}", text(&o), c.logs());
        written.insert(name);
    }
    let s = c.nodes[old].status(true).expect("the old leader's local status");
    eprintln!("old leader's view while cut: leader_id {}, has_quorum {}", s["leader_id"], s["has_quorum"]);
    assert!(s["has_quorum"] != true || s["leader_id"] != s["node_id"], "the cut-off leader still claims a quorum: {s}");

    net.heal(old).expect("heal");
    let hash = c.wait_converged(Duration::from_secs(20)).expect("all three converge after healing");
    eprintln!("converged after heal: {hash}");
    for i in 0..3 {
        assert_has_all(&c, i, &written);
        let names = c.config_names(i, true).expect("configs ls");
        for refused in ["to-old-leader", "early-to-old"] {
            assert!(
                !names.contains(&refused.to_string()),
                "the refused write {refused} was applied on {}",
                c.nodes[i].name
            );
        }
    }
}

/// `--stale` reads answer from the manager's local state: during a
/// partition a follower answers at once, whether or not its leader does.
#[test]
fn b2_stale_reads_do_not_wait_for_a_cut_off_leader() {
    if !netns::require_root() {
        return;
    }
    let _g = serial();
    let net = Netns::new(3).expect("namespaces");
    let c = Cluster::managers_netns(&net, 3, &Opts::manager()).expect("3 managers in namespaces");
    let old = c.wait_leader(None, Duration::from_secs(10)).expect("leader");
    let follower = (old + 1) % 3;
    net.cut(old).expect("cut the leader");
    std::thread::sleep(Duration::from_millis(300));
    let mut slow = Vec::new();
    for args in [&["configs", "ls", "-o", "json", "--stale"][..], &["cluster", "status", "-o", "json", "--stale"][..]] {
        let (o, took) = c.nodes[follower].stackctl_timeout(args, None, STACKCTL_TIMEOUT).expect("stackctl");
        eprintln!("{args:?} on a follower right after the cut: {} in {:.2} s", o.status, took.as_secs_f64());
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        // Waiting for the cut-off leader would take the 10 s forward timeout;
        // process start-up and TLS on a busy CI take well under 5 s.
        if took > Duration::from_secs(5) {
            slow.push(format!("{args:?} took {took:?}"));
        }
    }
    net.heal(old).expect("heal");
    assert!(slow.is_empty(), "stale reads on a follower waited for the cut-off leader: {slow:?}");
}

#[test]
fn c_restart_all_three_keeps_the_state() {
    let _g = serial();
    let mut c = Cluster::managers(3, &Opts::manager()).expect("3 managers");
    let want = create_configs(&c, "keep", 10);
    let before = c.wait_converged(Duration::from_secs(20)).expect("converged before");
    for n in &mut c.nodes {
        n.kill9();
    }
    // All three at once: no manager may wait for a leader before it serves.
    for n in &mut c.nodes {
        n.start().expect("start");
    }
    c.wait_voters(3, Duration::from_secs(30)).expect("3 voters after restarting all");
    let after = c.wait_converged(Duration::from_secs(30)).expect("converged after");
    assert_eq!(before, after, "the state hash changed across a restart of all managers\n{}", c.logs());
    for i in 0..3 {
        assert_has_all(&c, i, &want);
    }
    // And the cluster still takes writes.
    create_config(&c, "after-restart");
}

/// The data key of the manager in `data_dir` (wrapped by its local key
/// file: no autolock), which seals its log's records.
fn data_key(data_dir: &std::path::Path) -> stackd_tls::seal::DataKey {
    use base64::Engine as _;
    let keys: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("raft/keys.json")).expect("keys.json")).expect("JSON");
    assert_eq!(keys["wrapped_by"], "local", "{keys}");
    let wrapped =
        base64::engine::general_purpose::STANDARD.decode(keys["data_key"].as_str().expect("data_key")).expect("base64");
    let kek = stackd_tls::seal::Kek::from_text(&std::fs::read_to_string(data_dir.join("raft.kek")).expect("raft.kek"))
        .expect("a key");
    stackd_tls::seal::DataKey::unwrap(&wrapped, &kek).expect("the local key opens the data key")
}

/// Cuts the last entry record, and all after it, off the write-ahead log
/// in `data_dir` (zeros, as a segment allocated whole holds past its
/// records): what a power cut leaves of a leader that had written the entry
/// but not synced it. Returns the offset cut at.
fn cut_last_entry(data_dir: &std::path::Path) -> u64 {
    let log = data_dir.join("raft/log");
    let mut segments: Vec<_> = std::fs::read_dir(&log)
        .expect("the raft log dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment");
    let mut bytes = std::fs::read(last).expect("read the segment");
    let key = data_key(data_dir);
    // record = len: u32 LE (top bit: sealed) | crc32: u32 LE | the record's
    // JSON, sealed with the manager's data key
    let (mut at, mut last_entry) = (0usize, None);
    while at + 8 <= bytes.len() {
        let word = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let len = (word & !(1 << 31)) as usize;
        if len == 0 {
            break;
        }
        let payload = &bytes[at + 8..at + 8 + len];
        let json =
            if word & (1 << 31) != 0 { key.open(payload).expect("the data key opens it") } else { payload.to_vec() };
        if json.starts_with(b"{\"entry\"") {
            last_entry = Some(at);
        }
        at += 8 + len;
    }
    let cut = last_entry.expect("an entry record in the last segment");
    bytes[cut..at].fill(0);
    std::fs::write(last, &bytes).expect("write the segment");
    cut as u64
}

/// A power cut of the whole cluster, the leader having written but not
/// synced its last entry (the followers hold it): on the first start after
/// the machines restarted, the old leader must not take up its term again
/// (it would propose other entries under the log ids the followers hold).
/// All converge, with every acknowledged write.
#[test]
fn c2_a_leader_that_lost_its_unsynced_tail_in_a_power_cut_does_not_lead_that_term_again() {
    let _g = serial();
    let mut c = Cluster::managers(3, &Opts::manager()).expect("3 managers");
    let mut want = create_configs(&c, "keep", 5);
    c.wait_converged(Duration::from_secs(20)).expect("converged before");
    let leader = c.wait_leader(None, Duration::from_secs(5)).expect("leader");
    for n in &mut c.nodes {
        n.kill9();
    }
    let cut = cut_last_entry(c.nodes[leader].dir.path());
    eprintln!("cut the leader's log at byte {cut}");
    // Every machine restarted: another boot.
    for n in &c.nodes {
        std::fs::write(n.dir.path().join("raft/log/boot_id"), "an-earlier-boot\n").expect("boot id");
    }
    for n in &mut c.nodes {
        n.start().expect("start");
    }
    c.wait_voters(3, Duration::from_secs(30)).expect("3 voters after the power cut");
    want.extend(create_configs(&c, "after", 3));
    c.wait_converged(Duration::from_secs(30)).expect("all three converge after the power cut");
    for i in 0..3 {
        assert_has_all(&c, i, &want);
    }
}

#[test]
fn d_fourth_manager_catches_up_by_snapshot() {
    let _g = serial();
    let opts = Opts::manager().flag("--raft-snapshot-every", "50").flag("--raft-keep-logs", "5");
    let mut c = Cluster::managers(3, &opts).expect("3 managers");
    // 200 writes, 4 writers at once.
    std::thread::scope(|s| {
        for w in 0..4 {
            let c = &c;
            s.spawn(move || {
                for n in 0..50 {
                    create_config(c, &format!("s{w}-{n}"));
                }
            });
        }
    });
    // Group commit puts writes that queue up into one entry, so 200 writes
    // make fewer than 200 entries: write on, one at a time, until a
    // snapshot covers index 150 (a snapshot every 50 entries). At most 100
    // more: a leader that never compacts fails here.
    let mut written = 200;
    let s = loop {
        c.wait_converged(Duration::from_secs(20)).expect("converged");
        let leader = c.wait_leader(None, Duration::from_secs(5)).expect("leader");
        let s = c.nodes[leader].status(true).expect("status");
        if s["snapshot_index"].as_u64().unwrap_or(0) >= 150 || written >= 300 {
            break s;
        }
        for n in 0..10 {
            create_config(&c, &format!("more-{written}-{n}"));
        }
        written += 10;
    };
    eprintln!(
        "leader after {written} writes: last_log_index {}, snapshot_index {}",
        s["last_log_index"], s["snapshot_index"]
    );
    assert!(s["snapshot_index"].as_u64().unwrap_or(0) >= 150, "the leader did not compact: {s}");

    let i = c.add_manager("m4", &opts).expect("join a 4th manager");
    c.wait_voters(4, Duration::from_secs(30)).expect("4 voters");
    // wait_converged: the same state hash on all four (the join itself changed it).
    let hash = c.wait_converged(Duration::from_secs(20)).expect("4 managers converge");
    eprintln!("4 managers converged: {hash}");
    let s = c.nodes[i].status(true).expect("the 4th manager's status");
    assert!(s["snapshots_installed"].as_u64().unwrap_or(0) >= 1, "the 4th manager installed no snapshot: {s}");
    let names = c.config_names(i, true).expect("configs on the 4th manager");
    assert_eq!(names.len(), written, "the 4th manager holds {} configs of {written}", names.len());
}

/// `STK-1-<digest>-<secret>` → (digest, secret).
fn token_parts(token: &str) -> (String, String) {
    let rest = token.strip_prefix("STK-1-").unwrap_or_else(|| panic!("not a join token: {token}"));
    let (digest, secret) = rest.rsplit_once('-').expect("token shape");
    (digest.to_string(), secret.to_string())
}

#[test]
fn e_joins_with_a_wrong_token_change_nothing() {
    let _g = serial();
    let c = Cluster::managers(3, &Opts::manager()).expect("3 managers");
    let other = Node::init_opts("other", &Opts::manager()).expect("another cluster");
    let token = c.join_token("manager").expect("token");
    let (digest, secret) = token_parts(&token);
    let other_token = other.stackctl(&["cluster", "join-token", "manager"]).trim().to_string();
    let (other_digest, _) = token_parts(&other_token);
    assert_ne!(digest, other_digest);

    let count = |c: &Cluster| c.stackctl_json_len(&["node", "ls", "-o", "json"]);
    let nodes_before = count(&c);
    let hash_before = c.wait_converged(Duration::from_secs(10)).expect("converged");

    // A valid shape, the right CA, a wrong secret.
    let zeros: String = secret.chars().map(|ch| if ch == '0' { '1' } else { '0' }).collect();
    let wrong = format!("STK-1-{digest}-{zeros}");
    let (node, status) = Node::join_expect_exit(&c.nodes[0].addr, &wrong, "intruder", &Opts::manager()).expect("join");
    let log = node.log();
    assert!(!status.success(), "a join with a wrong secret succeeded:\n{log}");
    assert!(log.contains("invalid join token"), "the refusal does not say why:\n{log}");
    assert!(!log.contains(&zeros), "the secret is in the log");
    assert!(!node.dir.path().join("node.json").exists(), "node.json written by a refused join");

    // The right secret, another CA's digest: the joiner does not trust our manager.
    let foreign = format!("STK-1-{other_digest}-{secret}");
    let (node2, status) =
        Node::join_expect_exit(&c.nodes[1].addr, &foreign, "intruder2", &Opts::manager()).expect("join");
    let log2 = node2.log();
    assert!(!status.success(), "a join pinned to another CA succeeded:\n{log2}");
    eprintln!("pinned join refused:\n{log2}");
    assert!(!node2.dir.path().join("node.json").exists(), "node.json written by a refused join");

    assert_eq!(count(&c), nodes_before, "the node count changed");
    let hash_after = c.wait_converged(Duration::from_secs(10)).expect("converged");
    assert_eq!(hash_before, hash_after, "refused joins changed the state");
}

trait JsonLen {
    fn stackctl_json_len(&self, args: &[&str]) -> usize;
}

impl JsonLen for Cluster {
    fn stackctl_json_len(&self, args: &[&str]) -> usize {
        let v: Value = serde_json::from_str(&self.stackctl(args)).expect("JSON");
        v.as_array().map_or(0, Vec::len)
    }
}

#[test]
fn f_deployer_and_viewer_tokens_from_the_cli() {
    let _g = serial();
    let c = Cluster::managers(3, &Opts::manager()).expect("3 managers");
    let file = c.nodes[0].write_stack("stack.yml", "services:\n  web:\n    image: stackd-test/web:1\n");
    let deployer =
        c.stackctl(&["token", "create", "ci-app", "--role", "deployer", "--stack", "app"]).trim().to_string();
    let viewer = c.stackctl(&["token", "create", "dash", "--role", "viewer"]).trim().to_string();
    assert!(deployer.starts_with("STKC-1-") && viewer.starts_with("STKC-1-"), "tokens: {deployer:?} {viewer:?}");
    let listed = c.stackctl(&["token", "ls"]);
    assert!(listed.contains("ci-app") && listed.contains("dash") && !listed.contains(&deployer), "{listed}");

    // Each manager alone, so that forwarding of authenticated writes is exercised.
    let run = |token: &str, i: usize, args: &[&str], input: Option<&[u8]>| {
        let mut cmd = c.stackctl_command().expect("cmd");
        cmd.env("STACKCTL_TOKEN", token).env("STACKCTL_ADDR", format!("https://{}", c.nodes[i].addr)).args(args);
        run_timeout(cmd, input, STACKCTL_TIMEOUT).expect("stackctl").0
    };
    for i in 0..3 {
        let o = run(&deployer, i, &["deploy", "-c", &file, "app"], None);
        assert!(o.status.success(), "deployer could not deploy app via {}: {}", c.nodes[i].name, text(&o));
        let o = run(&deployer, i, &["deploy", "-c", &file, "db"], None);
        assert_eq!(o.status.code(), Some(1), "deployer deployed db: {}", text(&o));
        assert!(text(&o).contains("permission denied"), "{}", text(&o));

        let o = run(&viewer, i, &["stack", "ls"], None);
        assert!(o.status.success(), "viewer could not list stacks: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("app"), "{}", text(&o));
        let o = run(&viewer, i, &["deploy", "-c", &file, "app"], None);
        assert_eq!(o.status.code(), Some(1), "viewer deployed: {}", text(&o));
        assert!(text(&o).contains("permission denied"), "{}", text(&o));
        let o = run(&viewer, i, &["configs", "create", "v", "-"], Some(b"x"));
        assert_eq!(o.status.code(), Some(1), "viewer created a config: {}", text(&o));
        assert!(text(&o).contains("permission denied"), "{}", text(&o));
    }
    let stacks = c.stackctl(&["stack", "ls", "-o", "json"]);
    assert!(!stacks.contains("\"db\""), "db was deployed: {stacks}");

    c.stackctl(&["token", "rm", "ci-app"]);
    // The revocation is committed; every manager refuses the token afterwards.
    c.wait_converged(Duration::from_secs(10)).expect("converged");
    for i in 0..3 {
        let o = run(&deployer, i, &["deploy", "-c", &file, "app"], None);
        assert_eq!(o.status.code(), Some(1), "a revoked token deployed via {}: {}", c.nodes[i].name, text(&o));
        assert!(text(&o).contains("unauthenticated"), "{}", text(&o));
    }
}

#[test]
fn g_demote_refused_without_quorum_and_rm_of_a_dead_manager() {
    let _g = serial();
    let mut c = Cluster::managers(3, &Opts::manager()).expect("3 managers");
    let leader = c.wait_leader(None, Duration::from_secs(10)).expect("leader");
    let dead = (leader + 1) % 3;
    let live = (leader + 2) % 3;
    c.nodes[dead].kill9();
    let (dead_name, live_name) = (c.nodes[dead].name.clone(), c.nodes[live].name.clone());

    // Demoting a live manager would leave the leader and a dead one: no
    // majority. First wait until the leader sees the dead one unreachable
    // (before that, the demote would be allowed, and rightly so).
    let dead_id = c.nodes[dead].node_id();
    stackd_tests::wait_until(Duration::from_secs(15), "the leader to see the killed manager unreachable", || {
        let s = c.nodes[leader].status(true)?;
        s["managers"]
            .as_array()?
            .iter()
            .any(|m| m["node_id"] == dead_id.as_str() && m["reachable"] == false)
            .then_some(())
    });
    let o = stackd_tests::wait_until(Duration::from_secs(15), "the demote to be refused for quorum", || {
        let o = c.stackctl_output(&["node", "demote", &live_name], None).expect("stackctl");
        (!o.status.success() && text(&o).contains("quorum")).then_some(o)
    });
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = c.nodes[leader].status(false).expect("status");
    let voters = s["managers"].as_array().map_or(0, |m| m.iter().filter(|m| m["voter"] == true).count());
    assert_eq!(voters, 3, "the refused demote changed the voters: {s}");

    // Removing the dead one leaves two voters that both answer.
    stackd_tests::wait_until(Duration::from_secs(15), "node rm of the dead manager", || {
        let o = c.stackctl_output(&["node", "rm", &dead_name], None).expect("stackctl");
        if !o.status.success() {
            eprintln!("node rm {dead_name}: {}", text(&o).trim());
        }
        o.status.success().then_some(())
    });
    c.nodes.remove(dead);
    c.wait_voters(2, Duration::from_secs(20)).expect("2 voters");
    let nodes = c.stackctl(&["node", "ls", "-o", "json"]);
    assert!(!nodes.contains(&format!("\"{dead_name}\"")), "the removed node is still listed: {nodes}");
    create_config(&c, "after-rm");
}

#[test]
fn h_a_promoted_worker_becomes_a_voter() {
    if !require_docker() {
        return;
    }
    let _g = serial();
    let mut c = Cluster::managers(3, &Opts::manager()).expect("3 managers");
    create_config(&c, "before-promote");
    let w = c.add_worker("w1").expect("join a worker");
    let nodes = c.stackctl(&["node", "ls", "-o", "json"]);
    assert!(nodes.contains("\"worker\""), "no worker listed: {nodes}");
    c.stackctl(&["node", "promote", "w1"]);
    c.wait_voters(4, Duration::from_secs(45)).expect("the promoted worker becomes the 4th voter");
    let hash = c.wait_converged(Duration::from_secs(20)).expect("4 managers converge");
    eprintln!("4 managers converged: {hash}");
    // It serves the control API now, with the cluster's state.
    let names = c.config_names(w, false).expect("configs on the promoted node");
    assert!(names.contains(&"before-promote".to_string()), "{names:?}");
    let v: Value = serde_json::from_str(&c.stackctl(&["node", "ls", "-o", "json"])).expect("JSON");
    let row = v.as_array().and_then(|a| a.iter().find(|n| n["name"] == "w1")).cloned().unwrap_or_default();
    assert_eq!(row["role"], "manager", "{row}");
}
