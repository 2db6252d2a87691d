//! `stackctl logs TARGET [-f] [--since D] [--tail N] [-t] [--no-task-ids]`:
//! the output of a service's tasks (or of one task) on whichever nodes
//! they ran, as `docker service logs` prints it: each line after its task
//! and node (`web.2.k3j2h1g0f9e8@node3 | …`), stdout lines on stdout,
//! stderr lines on stderr, and what the managers say of a task (its
//! container is gone, it finished) on stderr too.
//!
//! `-o json` prints one object per line instead (`time`, `task`, `task_id`,
//! `node`, `stream`, `line`; a notice has `notice` in place of the line).
//!
//! With `-f`, when the manager relaying goes away (a failover), the command
//! asks the next one for the lines since the last it printed, and skips
//! those it already printed (by each task's last timestamp).

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use stackd_proto::v1;
use tokio::time::Instant;
use tokio_stream::StreamExt;

use crate::EXIT_OK;
use crate::args::{Global, LogsArgs, Since};
use crate::client::{Conn, connect, manager_gone, status};

/// How long `-f` tries other managers after the relaying one went away.
const RESUME_FOR: Duration = Duration::from_secs(30);

/// Runs `stackctl logs`.
pub async fn logs(g: &Global, args: &LogsArgs) -> Result<i32> {
    let mut c = connect(g).await?;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let since = match args.since {
        None => 0,
        Some(Since::At(secs)) => secs.max(1),
        Some(Since::Ago(d)) => (now - d.as_secs() as i64).max(1),
    };
    let mut req = v1::LogsRequest {
        target: args.target.clone(),
        options: Some(v1::LogOptions { follow: args.follow, since, tail: args.tail.and_then(|t| t.0) }),
    };
    let json = matches!(g.output, crate::args::Output::Json);
    let mut printer = Printer { args, json, last: HashMap::new(), skip: HashMap::new() };
    let tail = args.tail.and_then(|t| t.0);
    // While following resumes after a failover: until when it tries.
    let mut resuming: Option<Instant> = None;
    loop {
        let why = match open(&mut c, &req).await {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Some(Ok(msg)) => {
                        resuming = None;
                        printer.print(msg)?;
                    }
                    // The end: all was sent (a followed task: its container stopped).
                    None => return Ok(EXIT_OK),
                    Some(Err(s)) if args.follow && manager_gone(&s) => break s.message().to_string(),
                    Some(Err(s)) => return Err(status(s)),
                }
            },
            // No manager relays yet (a leader is being elected): try again.
            Err(s) if resuming.is_some_and(|until| Instant::now() < until) && manager_gone(&s) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                reconnect(&mut c, resuming.unwrap_or_else(Instant::now)).await?;
                continue;
            }
            Err(s) => return Err(status(s)),
        };
        eprintln!("warning: {why}; following on another manager");
        if resuming.is_none() {
            req.options = Some(resume_options(&printer.last, since, tail));
            printer.skip = printer.last.clone();
        }
        let until = *resuming.get_or_insert_with(|| Instant::now() + RESUME_FOR);
        reconnect(&mut c, until).await?;
    }
}

/// What a resumed `-f` asks for: from the second of the earliest last line
/// of a task (its lines up to it are skipped: [`Printer::skip`]), or, when
/// nothing was printed yet, what was asked at first.
fn resume_options(last: &HashMap<String, i128>, since: i64, tail: Option<u64>) -> v1::LogOptions {
    match last.values().min() {
        Some(earliest) => v1::LogOptions {
            follow: true,
            since: i64::try_from(earliest.div_euclid(1_000_000_000)).unwrap_or(since).max(1),
            tail: None,
        },
        None => v1::LogOptions { follow: true, since, tail },
    }
}

async fn open(c: &mut Conn, req: &v1::LogsRequest) -> Result<tonic::Streaming<v1::LogsMessage>, tonic::Status> {
    c.read(|mut c| {
        let req = req.clone();
        async move { c.logs(req).await }
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Moves to the next manager that answers, once a second until `deadline`.
async fn reconnect(c: &mut Conn, deadline: Instant) -> Result<()> {
    loop {
        match c.next().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Prints lines and notices, and remembers each task's last timestamp.
struct Printer<'a> {
    args: &'a LogsArgs,
    /// `-o json`: one object per line, on stdout, notices included.
    json: bool,
    /// Each task's last line printed (nanoseconds since the epoch).
    last: HashMap<String, i128>,
    /// After a failover, each task's last line printed before it: the
    /// resumed stream's lines up to it were printed already.
    skip: HashMap<String, i128>,
}

/// Whether a line of `task` at `at` was printed before a failover (`skip`
/// holds each task's last line then). Only lines of a resumed stream are
/// skipped, so lines of one time (the pieces of a long line, stdout and
/// stderr out of order) are never lost otherwise.
fn printed_before(skip: &HashMap<String, i128>, task: &str, at: Option<i128>) -> bool {
    match (skip.get(task), at) {
        (Some(last), Some(at)) => at <= *last,
        _ => false,
    }
}

impl Printer<'_> {
    fn print(&mut self, msg: v1::LogsMessage) -> Result<()> {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for line in msg.lines {
            let at = parse_rfc3339(&line.timestamp);
            if printed_before(&self.skip, &line.task_id, at) {
                continue;
            }
            if let Some(at) = at {
                let last = self.last.entry(line.task_id.clone()).or_insert(at);
                *last = (*last).max(at);
            }
            let (text, sink): (Vec<u8>, &mut dyn Write) = if self.json {
                (json_line(&line), &mut out)
            } else {
                let text = format_line(&line, self.args.timestamps, !self.args.no_task_ids);
                (text, if line.stream == 2 { &mut err } else { &mut out })
            };
            if let Err(e) = sink.write_all(&text) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    std::process::exit(EXIT_OK);
                }
                return Err(e.into());
            }
        }
        for n in msg.notices {
            if self.json {
                let v = serde_json::json!({
                    "task": n.task, "task_id": n.task_id, "node": n.node, "notice": n.text,
                });
                let _ = writeln!(out, "{v}");
                continue;
            }
            let who = match (n.task.is_empty(), n.node.is_empty()) {
                (false, false) => format!("{}@{}", n.task, n.node),
                (false, true) => n.task.clone(),
                (true, false) => n.node.clone(),
                (true, true) => n.task_id.clone(),
            };
            let _ = writeln!(err, "{who}: {}", n.text);
        }
        let _ = out.flush();
        Ok(())
    }
}

/// One line as printed: `[time ]task[.id]@node | text\n`.
pub(crate) fn format_line(line: &v1::LogEntry, timestamps: bool, task_ids: bool) -> Vec<u8> {
    let mut s = String::new();
    if timestamps && !line.timestamp.is_empty() {
        s.push_str(&line.timestamp);
        s.push(' ');
    }
    s.push_str(if line.task.is_empty() { &line.task_id } else { &line.task });
    if task_ids && !line.task.is_empty() {
        s.push('.');
        s.push_str(line.task_id.get(..12).unwrap_or(&line.task_id));
    }
    if !line.node.is_empty() {
        s.push('@');
        s.push_str(&line.node);
    }
    s.push_str(" | ");
    let mut bytes = s.into_bytes();
    bytes.extend_from_slice(&line.data);
    bytes.push(b'\n');
    bytes
}

/// One line as `-o json` prints it: an object on a line of its own.
pub(crate) fn json_line(line: &v1::LogEntry) -> Vec<u8> {
    let v = serde_json::json!({
        "time": line.timestamp,
        "task": line.task,
        "task_id": line.task_id,
        "node": line.node,
        "stream": if line.stream == 2 { "stderr" } else { "stdout" },
        "line": String::from_utf8_lossy(&line.data),
    });
    let mut bytes = v.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Nanoseconds since the epoch of an RFC 3339 time in UTC or with an
/// offset (`2026-12-07T10:00:00Z`, `…00.123456789+01:00`).
pub(crate) fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: i128 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
        if digits == 0 {
            return None;
        }
        let mut f = frac[..digits.min(9)].to_string();
        while f.len() < 9 {
            f.push('0');
        }
        nanos = f.parse().ok()?;
        rest = &frac[digits..];
    }
    let o = rest.as_bytes();
    let offset = match o {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let mins = rest.get(1..3)?.parse::<i64>().ok()? * 60 + rest.get(4..6)?.parse::<i64>().ok()?;
            if *sign == b'-' { -mins * 60 } else { mins * 60 }
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(i128::from(secs) * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_the_engine_writes_them() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-12-07T10:00:00Z"), Some(1_796_637_600 * 1_000_000_000));
        assert_eq!(parse_rfc3339("2026-12-07T10:00:00.5Z"), Some(1_796_637_600 * 1_000_000_000 + 500_000_000));
        // Trimmed fractions compare by value, not as text.
        assert!(parse_rfc3339("2026-12-07T10:00:00.1234Z") < parse_rfc3339("2026-12-07T10:00:00.12345Z"));
        assert_eq!(parse_rfc3339("2026-12-07T11:00:00+01:00"), parse_rfc3339("2026-12-07T10:00:00Z"));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400 * 1_000_000_000));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-12-07T10:00:00",
            "2026-12-07T10:00:00.Z",
            "2026-12-07T10:00:00é:00",
            "2026-12-07T10:00:00+é:0",
            "2026-12-07T10:00:00+0é:0",
            "2026-12-07T1é:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_a_resumed_stream_skips_lines_and_it_resumes_from_the_earliest_task() {
        let (t1, t2) = (1_000_000_000_000i128, 2_000_000_000_000i128);
        // Not resumed: lines of one time (a long line's pieces) all print.
        assert!(!printed_before(&HashMap::new(), "a", Some(t1)));
        let skip = HashMap::from([("a".to_string(), t1)]);
        assert!(printed_before(&skip, "a", Some(t1)));
        assert!(!printed_before(&skip, "a", Some(t1 + 1)));
        assert!(!printed_before(&skip, "b", Some(t1)), "another task is not skipped");
        assert!(!printed_before(&skip, "a", None), "a line without a time is printed");
        let last = HashMap::from([("a".to_string(), t1), ("b".to_string(), t2)]);
        let o = resume_options(&last, 5, Some(10));
        assert_eq!((o.since, o.tail, o.follow), (1000, None, true), "from the task that was behind");
        let o = resume_options(&HashMap::new(), 5, Some(10));
        assert_eq!((o.since, o.tail), (5, Some(10)), "nothing printed yet: as first asked");
    }

    #[test]
    fn a_line_is_named_by_its_task_and_node() {
        let line = v1::LogEntry {
            task_id: "abcdefghijklmnop".into(),
            task: "web.2".into(),
            node: "node3".into(),
            stream: 1,
            timestamp: "2026-12-07T10:00:00.5Z".into(),
            data: b"hello".to_vec(),
        };
        assert_eq!(format_line(&line, false, true), b"web.2.abcdefghijkl@node3 | hello\n");
        assert_eq!(format_line(&line, false, false), b"web.2@node3 | hello\n");
        assert_eq!(format_line(&line, true, false), b"2026-12-07T10:00:00.5Z web.2@node3 | hello\n");
        let v: serde_json::Value = serde_json::from_slice(&json_line(&line)).expect("JSON");
        assert_eq!(v["task"], "web.2");
        assert_eq!(v["node"], "node3");
        assert_eq!(v["stream"], "stdout");
        assert_eq!(v["line"], "hello");
        assert_eq!(v["time"], "2026-12-07T10:00:00.5Z");
    }
}
