//! Encryption at rest and autolock, on real manager processes (`--no-agent`:
//! no Docker needed): no secret in the clear anywhere in the Raft data (log
//! and snapshot); a manager of an autolocked cluster that restarts waits
//! for its key (and says so to every caller) rather than exiting; `stackctl
//! cluster unlock` and `stackd unlock` give it the key, a wrong key is
//! refused; a rotation, `STACKD_UNLOCK_KEY`, a joined manager following
//! the cluster's setting, and autolock turned off again.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use stackd_tests::cluster::Opts;
use stackd_tests::{Node, wait_until};

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The files under `dir` that hold `needle`.
fn holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .map(|p| p.display().to_string())
        .collect()
}

fn secret_names(node: &Node) -> Vec<String> {
    let v = node.stackctl_json(&["secret", "ls"]);
    v.as_array().expect("array").iter().filter_map(|s| s["name"].as_str().map(String::from)).collect()
}

#[test]
fn the_raft_data_holds_no_secret_in_the_clear() {
    // A snapshot every 10 entries: the snapshot file is checked too.
    let opts = Opts::manager().flag("--raft-snapshot-every", "10").flag("--raft-keep-logs", "5");
    let mut node = Node::init_opts("atrest", &opts).expect("manager");
    let work = tempfile::tempdir().expect("tempdir");
    let value = "correct-horse-battery-staple-4f1d";
    let file = work.path().join("pw.txt");
    std::fs::write(&file, value).expect("write");
    node.stackctl(&["secret", "create", "db_password", &file.to_string_lossy()]);
    for i in 0..15 {
        node.stackctl(&["configs", "create", &format!("c{i}"), &file.to_string_lossy()]);
    }
    let raft = node.data_dir().join("raft");
    let snapshot = raft.join("snapshots").join("snapshot.current");
    wait_until(Duration::from_secs(20), "a raft snapshot", || snapshot.exists().then_some(()));
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    for needle in [value, b64.as_str(), &b64[..24], "db_password", "BEGIN PRIVATE KEY"] {
        let found = holding(&raft, needle.as_bytes());
        assert!(found.is_empty(), "{needle:?} is readable in {found:?}");
    }
    let head = std::fs::read(&snapshot).expect("snapshot");
    assert!(head.starts_with(b"STACKD-SEALED-SNAPSHOT\n"), "the snapshot file is sealed");
    let keys = std::fs::read_to_string(raft.join("keys.json")).expect("keys.json");
    assert!(keys.contains("\"local\""), "{keys}");
    // The local key sits outside the raft dir: a copy of raft/ alone opens nothing.
    assert!(node.data_dir().join("raft.kek").exists());

    // It all reads back after a restart.
    node.stop(Duration::from_secs(10));
    node.restart().expect("restart");
    let names = secret_names(&node);
    assert_eq!(names, vec!["db_password".to_string()]);
    assert!(node.log().contains("stackd node running"));
}

/// The id a `keys.json` names (autolock), or `None` while it is local.
fn wrapped_by(node: &Node) -> Option<String> {
    let text = std::fs::read_to_string(node.data_dir().join("raft").join("keys.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    (v["wrapped_by"] == "unlock_key").then(|| v["key_id"].as_str().unwrap_or_default().to_string())
}

fn key_id(node: &Node) -> String {
    node.status(false).expect("status")["unlock_key_id"].as_str().expect("id").to_string()
}

/// stackctl that must fail: its standard error.
fn refused(node: &Node, args: &[&str]) -> String {
    let o = node.stackctl_output(args).expect("run stackctl");
    assert!(!o.status.success(), "stackctl {args:?} accepted: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits until the manager, started again, says it is locked.
fn wait_locked(node: &Node) {
    wait_until(Duration::from_secs(30), "the manager to say it is locked", || {
        let o = node.stackctl_output(&["cluster", "status"]).ok()?;
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (!o.status.success() && err.contains("this manager is locked")).then_some(())
    });
    assert!(node.log().contains("this manager is locked (autolock)"), "and its log says so:\n{}", node.log());
}

#[test]
fn an_autolocked_manager_waits_for_its_key_and_a_wrong_key_is_refused() {
    let addr = format!("127.0.0.1:{}", stackd_tests::free_port());
    let http = format!("127.0.0.1:{}", stackd_tests::free_port());
    let opts = Opts::manager().flag("--metrics-addr", &http);
    let mut node = Node::init_with("lock1", &opts, &["--autolock"], &addr, None).expect("manager");
    let work = tempfile::tempdir().expect("tempdir");
    let key = node.stackctl(&["cluster", "unlock-key"]).trim().to_string();
    assert!(key.starts_with("STKLOCK-1-"), "{key}");
    let status = node.status(false).expect("status");
    assert_eq!(status["autolock"], true, "{status}");
    let id = key_id(&node);
    // keys.json is rewritten first, then the local key goes.
    wait_until(Duration::from_secs(10), "keys.json wrapped by the unlock key, and no local key", || {
        (wrapped_by(&node).as_deref() == Some(id.as_str()) && !node.data_dir().join("raft.kek").exists()).then_some(())
    });
    assert!(!node.log().contains(&key), "the key is never logged");
    let file = work.path().join("v.txt");
    std::fs::write(&file, "v").expect("write");
    node.stackctl(&["secret", "create", "before_restart", &file.to_string_lossy()]);

    // A second manager follows the cluster's setting.
    let token = node.stackctl(&["cluster", "join-token", "manager"]).trim().to_string();
    let second = Node::join(&node, &token, "lock2", &Opts::manager()).expect("second manager");
    wait_until(Duration::from_secs(15), "the joined manager's keys.json to follow", || {
        (wrapped_by(&second).as_deref() == Some(id.as_str())).then_some(())
    });

    // Restarted without its key: it waits, and every caller is told why.
    node.stop(Duration::from_secs(10));
    node.start().expect("start");
    wait_locked(&node);
    assert!(node.is_running(), "a locked manager does not exit");
    // systemd and load balancers see it too.
    let (code, body) = stackd_tests::http_get(&http, "/readyz").expect("/readyz of a locked manager");
    assert!(code == 503 && body.contains("locked (autolock)") && body.contains(&id), "{code} {body}");
    let (code, _) = stackd_tests::http_get(&http, "/healthz").expect("/healthz");
    assert_eq!(code, 200, "a locked manager is alive");
    let key_file = |name: &str, text: &str| {
        let p = work.path().join(name);
        std::fs::write(&p, text).expect("write key");
        p.to_string_lossy().into_owned()
    };
    let wrong = key_file("wrong.key", &format!("STKLOCK-1-{}", "A".repeat(43)));
    let why = refused(&node, &["cluster", "unlock", "--key-file", &wrong]);
    assert!(why.contains("wrong unlock key") && why.contains(&id), "{why}");
    let garbage = key_file("garbage.key", "SWMKEY-1-nope");
    let why = refused(&node, &["cluster", "unlock", "--key-file", &garbage]);
    assert!(why.contains("not an unlock key"), "{why}");
    wait_locked(&node);
    let right = key_file("right.key", &key);
    let out = node.stackctl_output(&["cluster", "unlock", "--key-file", &right]).expect("unlock");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    node.wait_ready().expect("the manager starts once unlocked");
    wait_until(Duration::from_secs(20), "/readyz to say ready once unlocked", || {
        let (code, body) = stackd_tests::http_get(&http, "/readyz")?;
        (code == 200 && body.contains("manager: ready")).then_some(())
    });
    assert_eq!(secret_names(&node), vec!["before_restart".to_string()], "its state is all there");
    let again = node.stackctl_output(&["cluster", "unlock", "--key-file", &right]).expect("unlock again");
    assert!(
        again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not locked"),
        "unlocking a running manager is harmless: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A rotation: the old key no longer opens it; `stackd unlock` on its host.
    let new_key = node.stackctl(&["cluster", "unlock-key", "--rotate"]).trim().to_string();
    assert_ne!(new_key, key);
    let new_id = key_id(&node);
    for n in [&node, &second] {
        wait_until(Duration::from_secs(15), "keys.json rewrapped by the new key", || {
            (wrapped_by(n).as_deref() == Some(new_id.as_str())).then_some(())
        });
    }
    node.stop(Duration::from_secs(10));
    node.start().expect("start");
    wait_locked(&node);
    let o = node.stackd_command(&["unlock"], Some(format!("{key}\n").as_bytes())).expect("stackd unlock");
    assert!(!o.status.success(), "the old key was accepted");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("wrong unlock key") && err.contains(&new_id), "{err}");
    let o = node.stackd_command(&["unlock"], Some(format!("{new_key}\n").as_bytes())).expect("stackd unlock");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    node.wait_ready().expect("unlocked by stackd unlock");

    // The key given at start: no wait.
    node.stop(Duration::from_secs(10));
    node.set_env("STACKD_UNLOCK_KEY", Some(&new_key));
    node.restart().expect("starts at once with STACKD_UNLOCK_KEY");
    assert!(!node.log().contains(&new_key), "the key is never logged");

    // Autolock off: every manager goes back to a local key; a restart needs none.
    node.stackctl(&["cluster", "autolock", "off"]);
    for n in [&node, &second] {
        wait_until(Duration::from_secs(15), "keys.json local again", || wrapped_by(n).is_none().then_some(()));
    }
    node.stop(Duration::from_secs(10));
    node.set_env("STACKD_UNLOCK_KEY", None);
    node.restart().expect("starts without a key");
    assert_eq!(node.status(false).expect("status")["autolock"], false);
    let why = refused(&node, &["cluster", "unlock-key"]);
    assert!(why.contains("autolock is off"), "{why}");
}
