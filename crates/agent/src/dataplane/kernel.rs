//! Reading and changing the node's kernel: `ip`, `bridge`, `iptables-restore`
//! and `conntrack` run as commands (iproute2's JSON output read back), so
//! the agent needs no netlink code of its own and every change it makes is
//! a command an operator can read and repeat.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;
use tokio::process::Command;

use super::{Cmd, DataPlaneError, Kernel, Observed, VXLAN_PREFIX};

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

pub(super) async fn run(args: &[String]) -> Result<String, DataPlaneError> {
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

pub(super) async fn json<T: for<'de> Deserialize<'de>>(args: &[&str]) -> Result<Vec<T>, DataPlaneError> {
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

/// Runs `args` with `input` on its standard input.
pub(super) async fn run_with_input(args: &[&str], input: &str) -> Result<(), DataPlaneError> {
    use tokio::io::AsyncWriteExt;
    let line = args.join(" ");
    let err = |message: String| DataPlaneError::Command { command: line.clone(), message };
    let (program, rest) = args.split_first().ok_or_else(|| err("empty command".into()))?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).await.map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().await.map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}

pub(super) fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[derive(Deserialize)]
struct Route {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Rule {
    #[serde(default)]
    pub(super) priority: Option<u32>,
}

#[derive(Deserialize)]
struct BridgePort {
    ifname: String,
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    hairpin: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct AddrOf {
    #[serde(default)]
    pub(super) addr_info: Vec<AddrInfoFull>,
}

#[derive(Deserialize)]
pub(super) struct AddrInfoFull {
    #[serde(default)]
    pub(super) local: Option<String>,
    #[serde(default)]
    pub(super) prefixlen: Option<u8>,
}

/// The mesh's routes to add and remove in its table.
pub(super) async fn route_commands(rules: &crate::rules::Rules) -> Result<Vec<Cmd>, DataPlaneError> {
    let table = crate::rules::MESH_TABLE.to_string();
    // A table that never had a route does not exist yet.
    let routes: Vec<Route> = match json(&["ip", "-j", "-4", "route", "show", "table", &table]).await {
        Ok(r) => r,
        Err(e) if e.to_string().contains("does not exist") => Vec::new(),
        Err(e) => return Err(e),
    };
    let have: BTreeMap<Ipv4Addr, Option<Ipv4Addr>> = routes
        .iter()
        .filter_map(|r| Some((r.dst.parse().ok()?, r.gateway.as_deref().and_then(|g| g.parse().ok()))))
        .collect();
    let mut out = Vec::new();
    for (ip, via) in &have {
        if rules.routes.get(ip).copied() != *via {
            out.push(strings(&["ip", "route", "del", &format!("{ip}/32"), "table", &table]));
        }
    }
    for (ip, via) in &rules.routes {
        if have.get(ip).copied().flatten() != Some(*via) {
            out.push(strings(&[
                "ip",
                "route",
                "replace",
                &format!("{ip}/32"),
                "via",
                &via.to_string(),
                "table",
                &table,
            ]));
        }
    }
    Ok(out)
}

/// Hairpin mode on every container port of stackd's bridges: a container
/// that reaches itself through its service's VIP.
pub(super) async fn hairpin_commands() -> Result<Vec<Cmd>, DataPlaneError> {
    // `-d`: without the details the JSON has no `hairpin`, and every pass
    // set it again on every port (a `bridge` process per container per
    // pass: 720 in a deploy of 30 replicas).
    let ports: Vec<BridgePort> = json(&["bridge", "-d", "-j", "link", "show"]).await?;
    Ok(hairpin_missing(ports))
}

/// The commands that turn hairpin on for the container ports of stackd's
/// bridges that do not have it.
fn hairpin_missing(ports: Vec<BridgePort>) -> Vec<Cmd> {
    ports
        .into_iter()
        .filter(|p| p.master.as_deref().is_some_and(|m| m.starts_with("stk-")))
        .filter(|p| !p.ifname.starts_with(VXLAN_PREFIX) && p.hairpin != Some(true))
        .map(|p| strings(&["bridge", "link", "set", "dev", &p.ifname, "hairpin", "on"]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hairpin_is_set_only_where_the_details_say_it_is_off() {
        // What `bridge -d -j link show` prints (trimmed): one port with
        // hairpin, one without, the VXLAN device, a port of Docker's bridge.
        let text = r#"[
            {"ifname":"vethaaa","master":"stk-100002","hairpin":true},
            {"ifname":"vethbbb","master":"stk-100002","hairpin":false},
            {"ifname":"stkvx-100002","master":"stk-100002","hairpin":false},
            {"ifname":"vethccc","master":"docker0","hairpin":false}
        ]"#;
        let ports: Vec<BridgePort> = serde_json::from_str(text).expect("parses");
        let cmds = hairpin_missing(ports);
        assert_eq!(cmds, vec![strings(&["bridge", "link", "set", "dev", "vethbbb", "hairpin", "on"])]);
    }
}
