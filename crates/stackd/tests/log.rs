//! The daemon's log as a service manager or a file receives it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Issue 12, defect 8: a log that is not a terminal (journald, a file) gets
/// no ANSI colour codes.
#[test]
fn a_log_that_is_not_a_terminal_has_no_colours() {
    let dir = std::env::temp_dir().join(format!("stackd-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A manager without the agent (no Docker, no tmpfs); the loopback
    // address makes `init` log a line at once.
    let mut child = Command::new(env!("CARGO_BIN_EXE_stackd"))
        .args(["init", "--no-agent", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stackd runs");
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let done = line.contains("loopback");
            lines.push(line);
            if done || Instant::now() > deadline {
                break;
            }
        }
        lines
    });
    let lines = reader.join().expect("reader");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let log = lines.join("\n");
    assert!(log.contains("loopback"), "no log line: {log}");
    assert!(!log.contains('\u{1b}'), "ANSI codes in a log that is not a terminal: {log:?}");
}
