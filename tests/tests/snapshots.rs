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
