//! Network namespaces for partition tests: one Linux bridge and, per node,
//! a namespace joined to it by a veth pair, so a test can cut a node off the
//! network and heal it again while its processes keep running.
//!
//! ```text
//!   host: bridge stkbr<pid> 10.231.<k>.254/24
//!           ├── stk<pid>v0 ══ veth ══ stk<pid>p0 10.231.<k>.1  (namespace stk<pid>n0)
//!           └── stk<pid>v1 ══ veth ══ stk<pid>p1 10.231.<k>.2  (namespace stk<pid>n1)
//! ```
//!
//! [`Netns::cut`] sets the host side of a node's veth down (its packets go
//! nowhere; TCP connections stay open but silent, like a pulled cable) and
//! [`Netns::heal`] sets it up again. The addresses are private to this
//! machine: `<k>` is the first third octet not already on a host interface.
//! The host reaches every node through the bridge's address.
//!
//! Docker sets the FORWARD policy to DROP and bridged frames go through
//! iptables (`br_netfilter`), so the harness inserts one ACCEPT rule for
//! traffic within its bridge and removes it again.
//!
//! Everything needs root: [`require_root`] tells a test to skip (or, with
//! `CI=true`, fails it). Dropping the [`Netns`] deletes the namespaces, the
//! links and the rule; creating one also removes what harnesses of processes
//! that are no longer alive left behind. Harnesses in one process are used
//! one at a time (a process-wide lock), since their names carry the pid.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context, Result, bail};

/// One harness per process at a time: names carry only the pid.
static IN_USE: Mutex<()> = Mutex::new(());

/// Whether this process runs as root (uid 0). Otherwise prints a notice and
/// returns false, or panics with `CI=true`: CI must run the partition tests.
pub fn require_root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    if !root {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but not root: the network-namespace tests must run in CI");
        }
        eprintln!("SKIPPED: network-namespace tests need root");
    }
    root
}

/// One node: a namespace with one interface into the bridge.
#[derive(Debug, Clone)]
pub struct NsNode {
    /// The namespace's name (`ip netns exec <ns> …`).
    pub ns: String,
    /// The host side of the veth pair, in the bridge (what `cut` sets down).
    pub host_veth: String,
    /// The node's address.
    pub addr: Ipv4Addr,
}

/// A bridge and one namespace per node; see the module docs.
pub struct Netns {
    bridge: String,
    bridge_addr: Ipv4Addr,
    nodes: Vec<NsNode>,
    /// Whether the iptables ACCEPT rule was inserted (and must be removed).
    rule: bool,
    _guard: MutexGuard<'static, ()>,
}

/// Runs `ip`/`iptables`-style commands; fails with the command and its stderr.
fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// Runs a cleanup command; failures (already gone) are ignored.
fn run_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

fn iptables_rule(bridge: &str) -> Vec<String> {
    ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"].iter().map(|s| s.to_string()).collect()
}

fn iptables(op: &str, bridge: &str) -> Result<()> {
    let mut args = vec!["-w".to_string(), op.to_string()];
    args.extend(iptables_rule(bridge));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("iptables", &args).map(|_| ())
}

/// The pid in a harness name (`stk<pid>n<i>`, `stk<pid>v<i>`, `stkbr<pid>`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("stkbr").or_else(|| name.strip_prefix("stk"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let tail = &rest[digits.len()..];
    let shape_ok = if name.starts_with("stkbr") {
        tail.is_empty()
    } else {
        (tail.starts_with('n') || tail.starts_with('v') || tail.starts_with('p'))
            && tail.len() > 1
            && tail[1..].chars().all(|c| c.is_ascii_digit())
    };
    if digits.is_empty() || !shape_ok {
        return None;
    }
    digits.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces, links and iptables rules of harnesses whose process
/// is gone.
fn clean_leftovers() {
    let me = std::process::id();
    let dead = |name: &str| owner_pid(name).is_some_and(|p| p != me && !pid_alive(p));
    if let Ok(out) = run("ip", &["netns", "list"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if dead(name) {
                run_quiet("ip", &["netns", "delete", name]);
            }
        }
    }
    if let Ok(out) = run("ip", &["-o", "link", "show"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "7: stk123v0@if6: <…" → "stk123v0"
            let name = line.split(':').nth(1).unwrap_or("").trim().split('@').next().unwrap_or("");
            if dead(name) {
                run_quiet("ip", &["link", "delete", name]);
            }
        }
    }
    if let Ok(out) = run("iptables", &["-w", "-S", "FORWARD"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"-A") && words.iter().any(|w| w.starts_with("stkbr") && dead(w)) {
                let mut args = vec!["-w", "-D"];
                args.extend(&words[1..]);
                run_quiet("iptables", &args);
            }
        }
    }
}

/// The first third octet `k` (from 1) with no host address in 10.231.k.0/24.
fn free_subnet() -> Result<u8> {
    let out = run("ip", &["-o", "-4", "addr", "show"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    (1..=254u8)
        .find(|k| !text.contains(&format!(" 10.231.{k}.")))
        .context("no free 10.231.<k>.0/24 subnet on this host")
}

impl Netns {
    /// Creates the bridge and `nodes` namespaces, each with its veth pair and
    /// address, all up. Needs root (see [`require_root`]).
    pub fn new(nodes: usize) -> Result<Netns> {
        assert!(nodes <= 200, "at most 200 nodes");
        let guard = IN_USE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        clean_leftovers();
        let pid = std::process::id();
        let k = free_subnet()?;
        let bridge = format!("stkbr{pid}");
        let bridge_addr = Ipv4Addr::new(10, 231, k, 254);
        // Built up step by step: if a step fails, Drop removes what exists.
        let mut net = Netns { bridge: bridge.clone(), bridge_addr, nodes: Vec::new(), rule: false, _guard: guard };
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run("ip", &["addr", "add", &format!("{bridge_addr}/24"), "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        match iptables("-I", &bridge) {
            Ok(()) => net.rule = true,
            Err(e) => eprintln!("netns: no iptables ACCEPT rule for {bridge} ({e:#}); bridged traffic may be dropped"),
        }
        for i in 0..nodes {
            let node = NsNode {
                ns: format!("stk{pid}n{i}"),
                host_veth: format!("stk{pid}v{i}"),
                addr: Ipv4Addr::new(10, 231, k, i as u8 + 1),
            };
            let peer = format!("stk{pid}p{i}");
            run("ip", &["netns", "add", &node.ns])?;
            net.nodes.push(node.clone());
            run("ip", &["link", "add", &node.host_veth, "type", "veth", "peer", "name", &peer, "netns", &node.ns])?;
            run("ip", &["link", "set", &node.host_veth, "master", &bridge])?;
            run("ip", &["link", "set", &node.host_veth, "up"])?;
            let ns = ["netns", "exec", node.ns.as_str(), "ip"];
            let in_ns = |args: &[&str]| run("ip", &[&ns[..], args].concat());
            in_ns(&["link", "set", "lo", "up"])?;
            in_ns(&["addr", "add", &format!("{}/24", node.addr), "dev", &peer])?;
            in_ns(&["link", "set", &peer, "up"])?;
        }
        Ok(net)
    }

    /// The nodes, in index order.
    pub fn nodes(&self) -> &[NsNode] {
        &self.nodes
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].addr
    }

    /// The bridge's address: how a node reaches the host.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.bridge_addr
    }

    /// A command that runs `program` inside node `i`'s namespace
    /// (`ip netns exec`); add arguments, env, stdio and spawn it as usual.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.nodes[i].ns]).arg(program);
        c
    }

    /// Partitions node `i`: the host side of its veth goes down.
    pub fn cut(&self, i: usize) -> Result<()> {
        run("ip", &["link", "set", &self.nodes[i].host_veth, "down"]).map(|_| ())
    }

    /// Ends node `i`'s partition: the host side of its veth comes up again.
    pub fn heal(&self, i: usize) -> Result<()> {
        run("ip", &["link", "set", &self.nodes[i].host_veth, "up"]).map(|_| ())
    }

    /// Whether node `from` gets an answer to one ping of `to` within a second
    /// (`ping`, else busybox's).
    pub fn can_ping(&self, from: usize, to: Ipv4Addr) -> Result<bool> {
        let to = to.to_string();
        let mut c = if Command::new("ping").arg("-V").output().is_ok() {
            self.command(from, "ping")
        } else {
            let mut c = self.command(from, "busybox");
            c.arg("ping");
            c
        };
        let status = c
            .args(["-c", "1", "-W", "1", &to])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running ping inside a namespace")?;
        Ok(status.success())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and so the pair.
        for n in &self.nodes {
            run_quiet("ip", &["netns", "delete", &n.ns]);
            run_quiet("ip", &["link", "delete", &n.host_veth]);
        }
        run_quiet("ip", &["link", "delete", &self.bridge]);
        if self.rule {
            let _ = iptables("-D", &self.bridge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_of_harness_names() {
        assert_eq!(owner_pid("stkbr1234"), Some(1234));
        assert_eq!(owner_pid("stk1234n0"), Some(1234));
        assert_eq!(owner_pid("stk1234v12"), Some(1234));
        assert_eq!(owner_pid("stk1234p3"), Some(1234));
        assert_eq!(owner_pid("stkbr"), None);
        assert_eq!(owner_pid("stk1234"), None);
        assert_eq!(owner_pid("stk1234x0"), None);
        assert_eq!(owner_pid("stackd0"), None);
        assert_eq!(owner_pid("stkbr12a"), None);
    }
}
