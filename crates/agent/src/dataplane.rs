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

use stackd_core::net::{NetView, NodeView};

mod kernel;

use kernel::{AddrOf, Rule, hairpin_commands, json, route_commands, run, run_with_input, strings};
pub use kernel::{mtu_of, observe};

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

/// The node's data plane: its settings, and what it last applied.
#[derive(Debug)]
pub struct DataPlane {
    settings: Settings,
    /// The iptables rules last applied (rewritten only when they change).
    applied_rules: Option<String>,
    /// The UDP endpoints of the last view (a removed one's flows are flushed).
    udp_endpoints: BTreeSet<Ipv4Addr>,
    /// Syncs since the hooks were last checked.
    passes: u32,
    /// The PROXY protocol v2 hops of the mesh ports that ask for one, by port.
    proxies: BTreeMap<u16, crate::proxy::ProxyListener>,
}

/// How long the connections of a PROXY hop whose port went away may go on.
const PROXY_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How many syncs pass between checks that stackd's chains are still hooked.
const HOOK_CHECK_EVERY: u32 = 10;

impl DataPlane {
    /// A data plane with `settings`.
    pub fn new(settings: Settings) -> Self {
        DataPlane { settings, applied_rules: None, udp_endpoints: BTreeSet::new(), passes: 0, proxies: BTreeMap::new() }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The open connections of each PROXY protocol v2 hop, by published port.
    pub fn proxy_connections(&self) -> BTreeMap<u16, crate::proxy::OpenConnections> {
        self.proxies.iter().map(|(port, l)| (*port, l.open_connections())).collect()
    }

    /// Makes the kernel match `view`: VXLAN devices and entries, VIPs,
    /// translation rules, mesh routes. Returns how many changes were made.
    /// A failed command is reported and the others still run (the next
    /// sync retries what is still missing).
    pub async fn sync(&mut self, view: &NodeView) -> Result<usize, DataPlaneError> {
        let kernel = observe().await?;
        let mut cmds = plan(view, &kernel, &self.settings);
        let rules = crate::rules::plan(view, self.settings.node_ip);
        cmds.extend(self.vip_commands(&rules, &kernel).await?);
        cmds.extend(route_commands(&rules).await?);
        cmds.extend(hairpin_commands().await?);
        let mut first_error = None;
        let mut count = 0;
        for c in &cmds {
            count += 1;
            if let Err(e) = run(c).await {
                tracing::warn!(error = %e, "data plane: a command failed");
                first_error.get_or_insert(e);
            }
        }
        self.passes += 1;
        // The hooks, the routing rule and route_localnet are checked the
        // first time, after a failure, and every HOOK_CHECK_EVERY passes: not
        // on every change of the rules (four more processes, three taking
        // the xtables lock that Docker's container starts also wait for, per
        // endpoint that came or went).
        let check_hooks = self.applied_rules.is_none() || self.passes >= HOOK_CHECK_EVERY;
        if self.applied_rules.as_deref() != Some(rules.iptables.as_str()) || check_hooks {
            if check_hooks {
                self.passes = 0;
            }
            match self.apply_rules(&rules.iptables, check_hooks).await {
                Ok(()) => {
                    if self.applied_rules.as_deref() != Some(rules.iptables.as_str()) {
                        count += 1;
                    }
                    self.applied_rules = Some(rules.iptables.clone());
                }
                Err(e) => {
                    self.applied_rules = None;
                    first_error.get_or_insert(e);
                }
            }
        }
        count += self.flush_removed_udp(view).await;
        self.sync_proxies(view).await;
        match first_error {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// Rewrites stackd's chains and, with `check_hooks`, hooks them and sets
    /// what the mesh needs: the routing rule of its table and
    /// `route_localnet` (for connections the node makes to 127.0.0.1).
    async fn apply_rules(&self, text: &str, check_hooks: bool) -> Result<(), DataPlaneError> {
        run_with_input(&["iptables-restore", "--noflush"], text).await?;
        if !check_hooks {
            return Ok(());
        }
        for (table, ours, hook) in crate::rules::JUMPS {
            if hook == "DOCKER-USER" {
                // Docker creates it; make sure it exists without an engine's help.
                let _ = run(&strings(&["iptables", "-t", table, "-N", hook])).await;
            }
            let check = strings(&["iptables", "-t", table, "-C", hook, "-j", ours]);
            if run(&check).await.is_err() {
                run(&strings(&["iptables", "-t", table, "-I", hook, "1", "-j", ours])).await?;
            }
        }
        let rules: Vec<Rule> = json(&["ip", "-j", "rule", "show"]).await?;
        if !rules.iter().any(|r| r.priority == Some(crate::rules::MESH_TABLE)) {
            let mark = format!("{:#x}/{:#x}", crate::rules::MESH_MARK, crate::rules::MESH_MARK);
            let table = crate::rules::MESH_TABLE.to_string();
            run(&strings(&["ip", "rule", "add", "fwmark", &mark, "lookup", &table, "priority", &table])).await?;
        }
        if let Err(e) = tokio::fs::write("/proc/sys/net/ipv4/conf/all/route_localnet", "1").await {
            tracing::debug!(error = %e, "cannot set route_localnet: the mesh will not serve 127.0.0.1");
        }
        Ok(())
    }

    /// The VIPs to add to and remove from stackd's bridges.
    async fn vip_commands(&self, rules: &crate::rules::Rules, kernel: &Kernel) -> Result<Vec<Cmd>, DataPlaneError> {
        let mut out = Vec::new();
        for bridge in kernel.bridges.iter().filter(|b| b.starts_with("stk-")) {
            let addrs: Vec<AddrOf> = json(&["ip", "-j", "-4", "addr", "show", "dev", bridge]).await?;
            let have: BTreeSet<Ipv4Addr> = addrs
                .iter()
                .flat_map(|a| a.addr_info.iter())
                .filter(|i| i.prefixlen == Some(32))
                .filter_map(|i| i.local.as_deref()?.parse().ok())
                .collect();
            let empty = BTreeSet::new();
            let want = rules.vips.get(bridge).unwrap_or(&empty);
            for ip in have.difference(want) {
                out.push(strings(&["ip", "addr", "del", &format!("{ip}/32"), "dev", bridge]));
            }
            for ip in want.difference(&have) {
                out.push(strings(&["ip", "addr", "add", &format!("{ip}/32"), "dev", bridge]));
            }
        }
        Ok(out)
    }

    /// Starts, updates and stops the PROXY protocol v2 hops: one listener on
    /// every address of the node per mesh port that asks for it, balancing
    /// over the service's up tasks.
    async fn sync_proxies(&mut self, view: &NodeView) {
        let wanted: BTreeMap<u16, Vec<std::net::SocketAddr>> = view
            .published
            .iter()
            .filter(|p| p.proxy_protocol && p.protocol == stackd_core::model::Protocol::Tcp)
            .map(|p| (p.port, p.endpoints.iter().map(|e| std::net::SocketAddr::from((e.ip, p.target))).collect()))
            .collect();
        let gone: Vec<u16> = self.proxies.keys().filter(|p| !wanted.contains_key(*p)).copied().collect();
        for port in gone {
            if let Some(l) = self.proxies.remove(&port) {
                tokio::spawn(l.shutdown(PROXY_GRACE));
            }
        }
        for (port, backends) in wanted {
            if let Some(l) = self.proxies.get(&port) {
                l.set_backends(backends);
                continue;
            }
            let config = crate::proxy::ProxyConfig {
                backends,
                mark: Some(crate::rules::MESH_MARK),
                ..crate::proxy::ProxyConfig::default()
            };
            match crate::proxy::ProxyListener::bind(std::net::SocketAddr::from(([0, 0, 0, 0], port)), config).await {
                Ok(l) => {
                    tracing::info!(port, "routing mesh: PROXY protocol v2 hop listening");
                    self.proxies.insert(port, l);
                }
                Err(e) => tracing::warn!(port, error = %e, "routing mesh: cannot serve a PROXY protocol port"),
            }
        }
    }

    /// Flushes the UDP flows of endpoints that left the view (UDP has no
    /// end: its conntrack entry would keep sending to a removed task).
    async fn flush_removed_udp(&mut self, view: &NodeView) -> usize {
        let now: BTreeSet<Ipv4Addr> = view
            .published
            .iter()
            .filter(|p| p.protocol == stackd_core::model::Protocol::Udp)
            .flat_map(|p| p.endpoints.iter().map(|e| e.ip))
            .chain(view.services.iter().flat_map(|s| s.networks.iter().flat_map(|n| n.endpoints.iter().copied())))
            .collect();
        let gone: Vec<Ipv4Addr> = self.udp_endpoints.difference(&now).copied().collect();
        self.udp_endpoints = now;
        for ip in &gone {
            let args = strings(&["conntrack", "-D", "-p", "udp", "--reply-src", &ip.to_string()]);
            // conntrack exits 1 when nothing matched.
            if let Err(e) = run(&args).await
                && !e.to_string().contains("0 flow entries")
            {
                tracing::debug!(error = %e, "cannot flush the UDP flows of a removed endpoint");
            }
        }
        gone.len()
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
            published: Vec::new(),
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
