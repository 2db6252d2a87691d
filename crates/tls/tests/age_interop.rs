//! Our age files against Debian's `age` tool, both ways: an operator opens
//! a snapshot with `age -d -i recovery.key` when stackd is not at hand, and
//! `stackd` opens what `age -r` wrote. Without the tool the tests are
//! skipped, except in CI (`CI=true`), where they fail.

use std::io::Write;
use std::process::{Command, Stdio};

use stackd_tls::age::{self, Identity, Recipient};

fn tool() -> bool {
    let found = Command::new("age").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the age tool is missing (scripts/test.sh installs Debian's `age`)");
    }
    if !found {
        eprintln!("skipped: the age tool is not installed");
    }
    found
}

fn plaintext() -> Vec<u8> {
    // Three chunks and a bit: the chunk boundaries and the last-chunk flag.
    (0..(3 * 65536 + 123)).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

fn run(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new("age")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn age");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("age runs");
    let written = writer.join().expect("writer");
    // age stops reading when it refuses its input: the pipe then breaks.
    if out.status.success() {
        written.expect("write to age");
    }
    out
}

#[test]
fn the_age_tool_opens_what_we_encrypt() {
    if !tool() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let id = Identity::generate().expect("identity");
    let key = dir.path().join("recovery.key");
    std::fs::write(&key, id.to_file("2026-12-07T00:00:00Z", "test")).expect("write key");
    let plain = plaintext();
    let file = age::encrypt(&id.recipient(), &plain).expect("encrypt");
    let out = run(&["-d", "-i", key.to_str().expect("utf-8")], &file);
    assert!(out.status.success(), "age -d failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, plain);

    // And it refuses the same file with a byte flipped in the payload.
    let mut bad = file.clone();
    let at = bad.len() - 70_000;
    bad[at] ^= 1;
    let out = run(&["-d", "-i", key.to_str().expect("utf-8")], &bad);
    assert!(!out.status.success(), "age accepted a corrupted file");
}

#[test]
fn we_open_what_the_age_tool_encrypts_to_a_key_it_made() {
    if !tool() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("k.txt");
    let made = Command::new("age-keygen").arg("-o").arg(&key).output().expect("age-keygen");
    assert!(made.status.success(), "age-keygen: {}", String::from_utf8_lossy(&made.stderr));
    let text = std::fs::read_to_string(&key).expect("read key");
    let ids = Identity::parse_file(&text).expect("our parser reads age-keygen's file");
    let public = text.lines().find_map(|l| l.strip_prefix("# public key: ")).expect("public key comment");
    assert_eq!(ids[0].recipient().to_string(), public, "the same recipient derived from the identity");
    Recipient::parse(public).expect("the recipient parses");

    let plain = plaintext();
    let out = run(&["-r", public], &plain);
    assert!(out.status.success(), "age -r failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(age::decrypt(&ids, &out.stdout).expect("decrypt"), plain);

    // Empty input: one empty last chunk.
    let out = run(&["-r", public], b"");
    assert!(out.status.success());
    assert_eq!(age::decrypt(&ids, &out.stdout).expect("decrypt empty"), Vec::<u8>::new());
}
