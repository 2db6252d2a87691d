//! The node's side of the cluster's networks: VXLAN between the nodes that
//! run a network's tasks, with forwarding entries taken from the state.
//!
//! Each stack network is, on every node that runs one of its tasks, a
//! Docker bridge network with the network's subnet and the node's gateway
//! (created by the task's runner, see [`bridge_name`]); containers get the
//! address the state chose for them and a MAC derived from it
//! ([`mac_for`]). This module adds, per network, one VXLAN device enslaved
//! to that bridge (`nolearning`, `proxy`), and for every container of the
//! network on another node a static forwarding entry (its MAC → its node's
//! address) and a neighbour entry (its address → its MAC), so ARP is
//! answered locally and nothing floods across the LAN. A device or entry
//! the view no longer has is removed.
//!
//! [`plan`] is pure: the view and what the kernel has now → the `ip` and
//! `bridge` commands that make them agree. [`DataPlane::sync`] reads the
//! kernel's state, plans and runs the commands; the worker calls it when a
//! view arrives and every few seconds (a bridge appears only once its first
//! container's network is created).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::Deserialize;
use stackd_core::net::{NetView, NodeView};
use tokio::process::Command;

/// The UDP port of stackd's VXLAN: not Swarm's 4789, so both can run on one
/// host during a migration.
pub const DEFAULT_VXLAN_PORT: u16 = 4790;

/// VXLAN's overhead over the underlay's MTU (IPv4 outer header).
pub const VXLAN_OVERHEAD: u32 = 50;

/// Prefix of the VXLAN devices stackd creates (and may remove).
const VXLAN_PREFIX: &str = "stkvx-";

/// The Linux bridge name of a network with VXLAN id `vni` (set on the
/// Docker network with `com.docker.network.bridge.name`).
pub fn bridge_name(vni: u32) -> String {
    format!("stk-{vni:06x}")
}

/// The VXLAN device of a network with VXLAN id `vni`.
pub fn vxlan_name(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni:06x}")
}

/// The MAC of a container with address `ip`: `02:42` and the address, as
/// Docker 20.10 derives it. stackd sets it explicitly, so every node knows
/// it from the address alone.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Why the data plane could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// A command could not run or failed.
    #[error("{command}: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output, or why it did not run.
        message: String,
    },
}

/// The node's settings for the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// This node's address on the LAN (the VXLAN tunnels' near end).
    pub node_ip: Ipv4Addr,
    /// The VXLAN UDP port.
    pub port: u16,
    /// The containers' MTU: the underlay's minus [`VXLAN_OVERHEAD`].
    pub mtu: u32,
}

/// What the kernel has for one VXLAN device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Its bridge (master), if enslaved.
    pub master: Option<String>,
    /// Forwarding entries: MAC → far end.
    pub fdb: BTreeMap<String, Ipv4Addr>,
    /// Neighbour entries: address → MAC.
    pub neigh: BTreeMap<Ipv4Addr, String>,
}

/// What the kernel has now: the VXLAN devices stackd made, and which bridges exist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kernel {
    /// stackd's VXLAN devices by name.
    pub vxlans: BTreeMap<String, Observed>,
    /// The names of the bridges that exist.
    pub bridges: BTreeSet<String>,
}

/// One command: a program and its arguments.
pub type Cmd = Vec<String>;

fn cmd(parts: &[&str]) -> Cmd {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The commands that make the kernel match the view: pure.
pub fn plan(view: &NodeView, kernel: &Kernel, settings: &Settings) -> Vec<Cmd> {
    let mut out = Vec::new();
    let wanted: BTreeMap<String, &NetView> = view.networks.iter().map(|n| (vxlan_name(n.vni), n)).collect();
    for name in kernel.vxlans.keys().filter(|n| !wanted.contains_key(*n)) {
        out.push(cmd(&["ip", "link", "del", name]));
    }
    for (vx, net) in &wanted {
        let bridge = bridge_name(net.vni);
        // The bridge appears with the network's first container here.
        if !kernel.bridges.contains(&bridge) {
            continue;
        }
        let empty = Observed::default();
        let seen = match kernel.vxlans.get(vx) {
            Some(o) => o,
            None => {
                let (vni, port, mtu, local) = (
                    net.vni.to_string(),
                    settings.port.to_string(),
                    settings.mtu.to_string(),
                    settings.node_ip.to_string(),
                );
                out.push(cmd(&[
                    "ip",
                    "link",
                    "add",
                    vx,
                    "mtu",
                    &mtu,
                    "type",
                    "vxlan",
                    "id",
                    &vni,
                    "dstport",
                    &port,
                    "local",
                    &local,
                    "nolearning",
                    "proxy",
                ]));
                &empty
            }
        };
        if seen.master.as_deref() != Some(bridge.as_str()) {
            out.push(cmd(&["ip", "link", "set", vx, "master", &bridge, "up"]));
        }
        let want_fdb: BTreeMap<String, Ipv4Addr> = net.peers.iter().map(|p| (mac_for(p.ip), p.node)).collect();
        let want_neigh: BTreeMap<Ipv4Addr, String> = net.peers.iter().map(|p| (p.ip, mac_for(p.ip))).collect();
        for (mac, dst) in &seen.fdb {
            if want_fdb.get(mac) != Some(dst) {
                out.push(cmd(&["bridge", "fdb", "del", mac, "dev", vx, "dst", &dst.to_string()]));
            }
        }
        for (ip, mac) in &seen.neigh {
            if want_neigh.get(ip) != Some(mac) {
                out.push(cmd(&["ip", "neigh", "del", &ip.to_string(), "dev", vx]));
            }
        }
        for (mac, dst) in &want_fdb {
            if seen.fdb.get(mac) != Some(dst) {
                out.push(cmd(&[
                    "bridge",
                    "fdb",
                    "append",
                    mac,
                    "dev",
                    vx,
                    "dst",
                    &dst.to_string(),
                    "self",
                    "permanent",
                ]));
            }
        }
        for (ip, mac) in &want_neigh {
            if seen.neigh.get(ip) != Some(mac) {
                out.push(cmd(&[
                    "ip",
                    "neigh",
                    "replace",
                    &ip.to_string(),
                    "lladdr",
                    mac,
                    "dev",
                    vx,
                    "nud",
                    "permanent",
                ]));
            }
        }
    }
    out
}

#[derive(Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    linkinfo: Option<LinkInfo>,
}

#[derive(Deserialize)]
struct LinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
}

#[derive(Deserialize)]
struct Fdb {
    mac: String,
    #[serde(default)]
    dst: Option<String>,
}

#[derive(Deserialize)]
struct Neigh {
    dst: String,
    #[serde(default)]
    lladdr: Option<String>,
}

#[derive(Deserialize)]
struct Addr {
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    #[serde(default)]
    local: Option<String>,
}

async fn run(args: &[String]) -> Result<String, DataPlaneError> {
    let line = args.join(" ");
    let (program, rest) = args
        .split_first()
        .ok_or_else(|| DataPlaneError::Command { command: line.clone(), message: "empty command".into() })?;
    let out = Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| DataPlaneError::Command { command: line.clone(), message: e.to_string() })?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(DataPlaneError::Command { command: line, message });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn json<T: for<'de> Deserialize<'de>>(args: &[&str]) -> Result<Vec<T>, DataPlaneError> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let text = run(&args).await?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&text)
        .map_err(|e| DataPlaneError::Command { command: args.join(" "), message: format!("unreadable output: {e}") })
}

/// Reads what the kernel has.
pub async fn observe() -> Result<Kernel, DataPlaneError> {
    let links: Vec<Link> = json(&["ip", "-j", "-d", "link", "show"]).await?;
    let mut kernel = Kernel::default();
    for l in links {
        let kind = l.linkinfo.and_then(|i| i.info_kind).unwrap_or_default();
        if kind == "bridge" {
            kernel.bridges.insert(l.ifname);
        } else if kind == "vxlan" && l.ifname.starts_with(VXLAN_PREFIX) {
            let mut o = Observed { master: l.master, ..Observed::default() };
            let fdb: Vec<Fdb> = json(&["bridge", "-j", "fdb", "show", "dev", &l.ifname]).await?;
            for e in fdb {
                if let Some(dst) = e.dst.and_then(|d| d.parse().ok()) {
                    o.fdb.insert(e.mac, dst);
                }
            }
            let neigh: Vec<Neigh> = json(&["ip", "-j", "-4", "neigh", "show", "dev", &l.ifname]).await?;
            for n in neigh {
                if let (Ok(ip), Some(mac)) = (n.dst.parse(), n.lladdr) {
                    o.neigh.insert(ip, mac);
                }
            }
            kernel.vxlans.insert(l.ifname, o);
        }
    }
    Ok(kernel)
}

/// The MTU of the interface that holds `ip`, if one does.
pub async fn mtu_of(ip: Ipv4Addr) -> Result<Option<u32>, DataPlaneError> {
    let addrs: Vec<Addr> = json(&["ip", "-j", "-4", "addr", "show"]).await?;
    let want = ip.to_string();
    Ok(addrs
        .into_iter()
        .find(|a| a.addr_info.iter().any(|i| i.local.as_deref() == Some(want.as_str())))
        .and_then(|a| a.mtu))
}

/// The node's data plane: its settings and the last view.
#[derive(Debug)]
pub struct DataPlane {
    settings: Settings,
}

impl DataPlane {
    /// A data plane with `settings`.
    pub fn new(settings: Settings) -> Self {
        DataPlane { settings }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Makes the kernel match `view`; returns how many commands ran. A
    /// failed command is reported and the others still run (the next sync
    /// retries what is still missing).
    pub async fn sync(&self, view: &NodeView) -> Result<usize, DataPlaneError> {
        let kernel = observe().await?;
        let cmds = plan(view, &kernel, &self.settings);
        let mut first_error = None;
        for c in &cmds {
            if let Err(e) = run(c).await {
                tracing::warn!(error = %e, "data plane: a command failed");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(cmds.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use stackd_core::net::Peer;

    use super::*;

    fn settings() -> Settings {
        Settings { node_ip: Ipv4Addr::new(10, 9, 0, 1), port: DEFAULT_VXLAN_PORT, mtu: 1350 }
    }

    fn view(peers: &[(u8, u8)]) -> NodeView {
        NodeView {
            networks: vec![NetView {
                name: "shop_default".into(),
                stack: "shop".into(),
                key: "default".into(),
                subnet: "10.192.0.0/20".parse().expect("subnet"),
                vni: 0x10_0001,
                gateway: Ipv4Addr::new(10, 192, 0, 1),
                internal: false,
                peers: peers
                    .iter()
                    .map(|(c, n)| Peer { ip: Ipv4Addr::new(10, 192, 0, *c), node: Ipv4Addr::new(10, 9, 0, *n) })
                    .collect(),
            }],
            services: Vec::new(),
        }
    }

    fn lines(cmds: &[Cmd]) -> Vec<String> {
        cmds.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn names_fit_linux_and_macs_follow_addresses() {
        assert_eq!(bridge_name(0x10_0001), "stk-100001");
        assert!(vxlan_name(0xff_ffff).len() <= 15);
        assert_eq!(mac_for(Ipv4Addr::new(10, 192, 0, 66)), "02:42:0a:c0:00:42");
    }

    #[test]
    fn nothing_is_done_before_the_bridge_exists() {
        assert!(plan(&view(&[(66, 2)]), &Kernel::default(), &settings()).is_empty());
    }

    #[test]
    fn a_new_network_gets_its_device_and_entries() {
        let kernel = Kernel { bridges: ["stk-100001".to_string()].into(), ..Kernel::default() };
        let got = lines(&plan(&view(&[(66, 2)]), &kernel, &settings()));
        assert_eq!(
            got,
            vec![
                "ip link add stkvx-100001 mtu 1350 type vxlan id 1048577 dstport 4790 local 10.9.0.1 nolearning proxy",
                "ip link set stkvx-100001 master stk-100001 up",
                "bridge fdb append 02:42:0a:c0:00:42 dev stkvx-100001 dst 10.9.0.2 self permanent",
                "ip neigh replace 10.192.0.66 lladdr 02:42:0a:c0:00:42 dev stkvx-100001 nud permanent",
            ]
        );
    }

    #[test]
    fn entries_follow_the_view_and_a_gone_network_loses_its_device() {
        let observed = Observed {
            master: Some("stk-100001".into()),
            fdb: [(mac_for(Ipv4Addr::new(10, 192, 0, 66)), Ipv4Addr::new(10, 9, 0, 2))].into(),
            neigh: [(Ipv4Addr::new(10, 192, 0, 66), mac_for(Ipv4Addr::new(10, 192, 0, 66)))].into(),
        };
        let kernel = Kernel {
            vxlans: [("stkvx-100001".to_string(), observed), ("stkvx-0000aa".to_string(), Observed::default())].into(),
            bridges: ["stk-100001".to_string()].into(),
        };
        // In sync: only the stale device goes.
        assert_eq!(lines(&plan(&view(&[(66, 2)]), &kernel, &settings())), vec!["ip link del stkvx-0000aa"]);
        // The peer moved away, another came.
        let got = lines(&plan(&view(&[(130, 3)]), &kernel, &settings()));
        assert!(got.contains(&"bridge fdb del 02:42:0a:c0:00:42 dev stkvx-100001 dst 10.9.0.2".to_string()), "{got:?}");
        assert!(got.contains(&"ip neigh del 10.192.0.66 dev stkvx-100001".to_string()), "{got:?}");
        assert!(got.iter().any(|l| l.starts_with("bridge fdb append 02:42:0a:c0:00:82 dev stkvx-100001 dst 10.9.0.3")));
    }
}
