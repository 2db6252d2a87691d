//! The `stackctl` binary as a shell or a CI job runs it: exit codes of
//! usage errors, and output into a pipe that closes early.

use std::io::Read;
use std::process::{Command, Stdio};

fn stackctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stackctl"));
    // Nothing from the caller's environment may point at a cluster.
    for v in ["STACKCTL_ADDR", "STACKCTL_CA", "STACKCTL_TOKEN"] {
        c.env_remove(v);
    }
    c
}

/// Runs `stackctl ARGS` and returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = stackctl().args(args).output().expect("stackctl runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_exit_1_not_the_rolled_back_code() {
    // A typo in a flag, a bad value, a missing argument, no command at all:
    // exit 2 would read as "rolled back" to a CI job.
    for args in [
        &["deploy", "-c", "stack.yml", "--wiat", "shop"][..],
        &["deploy", "-c", "stack.yml", "--wait", "--timeout", "300", "shop"],
        &["deploy", "--wait", "shop"],
        &["no-such-command"],
        &[],
    ] {
        let (code, _, stderr) = run(args);
        assert_eq!(code, Some(1), "stackctl {args:?}: {stderr}");
        assert!(!stderr.is_empty(), "stackctl {args:?} says nothing");
    }
}

#[test]
fn help_and_version_exit_0() {
    for args in [&["--help"][..], &["deploy", "--help"], &["--version"], &["help"]] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, Some(0), "stackctl {args:?}: {stderr}");
        assert!(!stdout.is_empty(), "stackctl {args:?} prints nothing");
    }
}

#[test]
fn help_lists_the_exit_codes() {
    let (_, stdout, _) = run(&["--help"]);
    for code in ["0 ", "1 ", "2 ", "3 ", "4 "] {
        assert!(stdout.contains(&format!("  {code}")), "no exit code {code} in:\n{stdout}");
    }
    assert!(stdout.contains("usage"), "usage errors not listed:\n{stdout}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `stackctl config … | head -1`: a stack long enough to outgrow the pipe's buffer.
    let dir = std::env::temp_dir().join(format!("stackctl-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("stack.yml");
    let mut yaml = String::from("services:\n");
    for i in 0..2000 {
        yaml.push_str(&format!(
            "  svc{i}:\n    image: busybox:{i}\n    environment:\n      LONG: {}\n",
            "x".repeat(60)
        ));
    }
    std::fs::write(&file, yaml).expect("stack file");
    let mut child = stackctl()
        .args(["config", "-c"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stackctl runs");
    // Read one line, then close the pipe like `head -1`.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    let n = stdout.read(&mut first).expect("read");
    assert!(n > 0, "no output");
    drop(stdout);
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    let status = child.wait().expect("wait");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!stderr.contains("panicked"), "stackctl panicked: {stderr}");
    assert!(!stderr.contains("Broken pipe"), "stackctl complains: {stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
}
