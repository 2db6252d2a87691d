//! A client of the routing mesh of an [`Engines`] cluster, for the tests
//! that must see no failed request while tasks move (rollouts, drains).
//!
//! - [`http_get`]: one `GET /` over TCP, the body's first line or what went
//!   wrong; [`mesh_serves`] waits until every node's mesh port answers.
//! - [`Poller`]: a client thread that polls a published port on some nodes'
//!   addresses, one request every 50 ms; each [`Request`] records when, to
//!   which node, how long it took and the answer. A request that takes more
//!   than 500 ms makes it look at the nodes' kernels while it hangs (its
//!   conntrack entries, the mesh's routes and rules).
//! - [`summary`] and [`logs_near_failures`]: what to print when requests
//!   failed.
//! - [`rfc3339_ms`], [`unix_ms`] and [`container_times`]: times in Unix
//!   milliseconds, to set a container's start and end against requests and
//!   other containers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engines::Engines;

/// `GET /` over TCP: the body's first line, or what went wrong.
pub fn http_get(addr: SocketAddr) -> Result<String, String> {
    http_get_from(addr, &AtomicU16::new(0))
}

/// [`http_get`], telling `local_port` the connection's local port once
/// connected. Waits 2 s for the connection (a lost SYN is sent again after
/// 1 s) and 3 s for the answer.
fn http_get_from(addr: SocketAddr, local_port: &AtomicU16) -> Result<String, String> {
    let mut c =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    let port = c.local_addr().map(|a| a.port()).unwrap_or_default();
    local_port.store(port, Ordering::Relaxed);
    c.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut text = Vec::new();
    if let Err(e) = c.read_to_end(&mut text) {
        return Err(format!("read from local port {port}: {e} (after {:?})", String::from_utf8_lossy(&text)));
    }
    let text = String::from_utf8_lossy(&text);
    if !text.starts_with("HTTP/1.") || text.get(8..13) != Some(" 200 ") {
        return Err(format!("answer: {text:?}"));
    }
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok(body.lines().next().unwrap_or_default().to_string())
}

/// [`http_get`] with a watchdog: when the answer takes more than 500 ms, a
/// look at the nodes' kernels while it hangs ([`kernel_state`]).
fn http_get_watched(addr: SocketAddr, namespaces: &[String]) -> (Result<String, String>, Option<String>) {
    let port = AtomicU16::new(0);
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let local_port = &port;
    std::thread::scope(|sc| {
        let watchdog = sc.spawn(move || {
            let slow = wait.recv_timeout(Duration::from_millis(500)).is_err();
            slow.then(|| kernel_state(namespaces, local_port.load(Ordering::Relaxed), addr.port()))
        });
        let result = http_get_from(addr, &port);
        let _ = done.send(());
        (result, watchdog.join().ok().flatten())
    })
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default()
}

/// What the nodes' kernels say of a connection from local port `port` (0,
/// not connected yet: of every connection to `target` or to a task's port
/// 8080 not in TIME_WAIT): its conntrack entries, the mesh's routes, and
/// the mesh's rules.
fn kernel_state(namespaces: &[String], port: u16, target: u16) -> String {
    let mut text = String::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let sh = |script: &str| {
            let o = std::process::Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]).output();
            o.map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
                .unwrap_or_else(|e| e.to_string())
        };
        let conntrack = if port == 0 {
            format!("grep -E 'dport=({target}|8080) ' /proc/net/nf_conntrack | grep -v TIME_WAIT")
        } else {
            format!("grep -F 'port={port} ' /proc/net/nf_conntrack")
        };
        text.push_str(&format!(
            "--- node {i} at {} ms: conntrack\n{}--- routes (table 5354)\n{}--- rules\n{}",
            unix_ms(),
            sh(&conntrack),
            sh("ip route show table 5354"),
            sh(&format!("iptables-save | grep -E 'STACKD-(PRE|FWD).*(--dport {target}|--dport 8080 )'")),
        ));
    }
    text
}

/// Waits until every node's mesh port `port` answers `want` 10 times in a
/// row (30 s at the most for each node).
pub fn mesh_serves(c: &Engines, port: u16, want: &str) {
    for i in 0..c.cluster.nodes.len() {
        let addr = SocketAddr::from((c.net.addr(i), port));
        let start = Instant::now();
        let mut streak = 0;
        while streak < 10 {
            let last = http_get(addr);
            streak = if last.as_deref() == Ok(want) { streak + 1 } else { 0 };
            assert!(start.elapsed() < Duration::from_secs(30), "n{} ({addr}) does not serve {want:?}: {last:?}", i + 1);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One request of a [`Poller`]: when (since the poller started), to which
/// node, how long it took, and the body or the error.
#[derive(Clone, Debug)]
pub struct Request {
    /// When it started, since the poller's start.
    pub at: Duration,
    /// Unix milliseconds at its start.
    pub wall: u128,
    /// The node's index (n1 is 0).
    pub node: usize,
    /// How long it took.
    pub took: Duration,
    /// The body's first line, or what went wrong.
    pub result: Result<String, String>,
    /// The nodes' kernels while it hung, if it took more than 500 ms.
    pub kernel: Option<String>,
}

/// A client thread that sends `GET /` to the given nodes' addresses in
/// turn, one request every 50 ms, until stopped (or dropped).
pub struct Poller {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Request>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// What the requests' times ([`Request::at`]) count from.
    pub started: Instant,
}

impl Poller {
    /// Polls port `port` on the addresses of nodes `nodes` (indices), the
    /// requests' times counted from `started`.
    pub fn start(c: &Engines, nodes: &[usize], port: u16, started: Instant) -> Poller {
        let addrs: Vec<(usize, SocketAddr)> =
            nodes.iter().map(|&i| (i, SocketAddr::from((c.net.addr(i), port)))).collect();
        let namespaces: Vec<String> = (0..c.cluster.nodes.len()).map(|i| c.engine(i).ns.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (node, addr) = addrs[k % addrs.len()];
                    k += 1;
                    let t0 = Instant::now();
                    let wall = unix_ms();
                    let (result, kernel) = http_get_watched(addr, &namespaces);
                    let r = Request { at: t0 - started, wall, node, took: t0.elapsed(), result, kernel };
                    log.lock().expect("poller log").push(r);
                    std::thread::sleep(Duration::from_millis(50).saturating_sub(t0.elapsed()));
                }
            })
        };
        Poller { stop, log, thread: Some(thread), started }
    }

    /// Stops the client; every request it made.
    pub fn finish(mut self) -> Vec<Request> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.log.lock().expect("poller log").clone()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the requests went, in a few lines: counts per node and answer, the
/// slowest, and every failure or slow request.
pub fn summary(log: &[Request]) -> String {
    let mut answers: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in log {
        let key = match &r.result {
            Ok(body) => body.clone(),
            Err(_) => "FAILED".to_string(),
        };
        *answers.entry((format!("n{}", r.node + 1), key)).or_default() += 1;
    }
    let slowest = log.iter().max_by_key(|r| r.took).map(|r| format!("{:?} at {:?}", r.took, r.at)).unwrap_or_default();
    let mut text = format!("{} requests: {answers:?}; slowest {slowest}\n", log.len());
    for r in log.iter().filter(|r| r.result.is_err() || r.took > Duration::from_millis(500)) {
        text.push_str(&format!(
            "  at {:?} ({} ms) to n{} (took {:?}): {:?}\n",
            r.at,
            r.wall,
            r.node + 1,
            r.took,
            r.result
        ));
        if let Some(k) = &r.kernel {
            text.push_str(&format!("    the nodes while it hung:\n{k}\n"));
        }
    }
    text
}

/// The lines of the nodes' logs (stackd's and dockerd's) within 1.5 s of
/// the failed requests of `log`; nothing if none failed.
pub fn logs_near_failures(c: &Engines, log: &[Request]) -> String {
    let times: Vec<i64> = log.iter().filter(|r| r.result.is_err()).map(|r| r.wall as i64).collect();
    if times.is_empty() {
        return String::new();
    }
    let near = |line: &str| {
        let stamp = line.split_whitespace().next().unwrap_or_default();
        let stamp = stamp.trim_start_matches("time=\"").trim_end_matches('"');
        rfc3339_ms(stamp).is_ok_and(|t| times.iter().any(|f| (t - f).abs() <= 1500))
    };
    let mut text = String::new();
    for i in 0..c.cluster.nodes.len() {
        let stackd = c.node(i).log();
        let dockerd = std::fs::read_to_string(c.engine(i).dir.join("dockerd.log")).unwrap_or_default();
        text.push_str(&format!("--- n{} near the failures:\n", i + 1));
        for l in stackd.lines().chain(dockerd.lines()).filter(|l| near(l)) {
            text.push_str(l);
            text.push('\n');
        }
    }
    text
}

/// `2024-05-01T12:34:56.789012345Z` as Unix milliseconds.
pub fn rfc3339_ms(t: &str) -> Result<i64, String> {
    let bad = || format!("not a UTC time: {t:?}");
    let (date, time) = t.trim_end_matches('Z').split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date.split('-').map(|x| x.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<i64> = hms.split(':').map(|x| x.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    if d.len() != 3 || h.len() != 3 {
        return Err(bad());
    }
    // Days since the epoch (Howard Hinnant's days_from_civil).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms: i64 = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().map_err(|_| bad())?;
    Ok(((days * 24 + h[0]) * 60 + h[1]) * 60_000 + h[2] * 1000 + ms)
}

/// A container's start and end (Unix milliseconds) on the engine of the
/// node named `node` (`n1` is node 0); the end is `None` while it runs.
pub fn container_times(c: &Engines, node: &str, id: &str) -> Result<(i64, Option<i64>), String> {
    let i: usize = node.trim_start_matches('n').parse::<usize>().map_err(|e| format!("node {node}: {e}"))? - 1;
    let o = c
        .docker(i)
        .args(["inspect", "-f", "{{.State.StartedAt}}|{{.State.FinishedAt}}|{{.State.Running}}", id])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let mut parts = text.split('|');
    let (Some(a), Some(b), Some(running)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("inspect {id} on {node}: {text} {}", String::from_utf8_lossy(&o.stderr)));
    };
    Ok((rfc3339_ms(a)?, if running == "true" { None } else { Some(rfc3339_ms(b)?) }))
}

#[cfg(test)]
mod tests {
    use super::rfc3339_ms;

    #[test]
    fn rfc3339_ms_reads_engine_times() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(rfc3339_ms("2024-05-01T12:34:56.789012345Z"), Ok(1_714_566_896_789));
        assert!(rfc3339_ms("0001-01-01T00:00:00Z").is_ok());
        assert!(rfc3339_ms("yesterday").is_err());
    }
}
