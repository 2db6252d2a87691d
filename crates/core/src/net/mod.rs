//! Addresses of the cluster's container networks, allocated in the
//! replicated state (pure, deterministic: the same on every manager).
//!
//! - The cluster has one **address pool** ([`DEFAULT_POOL`] unless
//!   `stackd init --address-pool` chose another).
//! - Each stack network that stackd manages gets a **subnet** of the pool
//!   ([`NETWORK_PREFIX`]: a `/20`, 4,096 addresses) and a VXLAN id, for as
//!   long as a stack declares it or a task still holds one of its addresses.
//! - Each node that runs a task of the network gets a **slice** of the
//!   subnet ([`SLICE_PREFIX`]: a `/26`) and a second one when the first is
//!   full; the first address of its first slice is the node's gateway on the
//!   network (its bridge, its DNS server). Slices belong to the node until
//!   the network goes or the node is removed, so a node's addresses never
//!   move to another node while one of its containers may still use them.
//! - Each task gets one address per network from its node's slices, when it
//!   is assigned, so every node knows where an address lives before the
//!   container starts. A task keeps it until it has ended (an orphan that
//!   may still come back keeps it).
//! - Each service reached through a virtual address (`endpoint_mode: vip`)
//!   gets one per network, from the subnet's last `/24`.
//!
//! Allocation moves a cursor forward and takes the next free value, so an
//! address just released is not handed out again at once (stale DNS
//! answers and conntrack entries point at nothing rather than at a new
//! task).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{NodeId, ServiceId, TaskId};

/// The pool of a cluster initialised without `--address-pool`: far from
/// Docker's default pools (172.17–31.x, 192.168.x) and from the usual
/// office and cloud ranges at the bottom of 10/8.
pub const DEFAULT_POOL: Subnet = Subnet { addr: Ipv4Addr::new(10, 192, 0, 0), prefix: 12 };

/// The prefix length of a network's subnet.
pub const NETWORK_PREFIX: u8 = 20;

/// The prefix length of a node's slice of a network.
pub const SLICE_PREFIX: u8 = 26;

/// Slices per network: the last `/24` (four slices) holds the virtual addresses.
pub const NODE_SLICES: u32 = (1 << (SLICE_PREFIX - NETWORK_PREFIX)) - 4;

/// The first VXLAN id; a network's is this plus its subnet's index in the pool.
pub const VNI_BASE: u32 = 0x10_0000;

/// An IPv4 subnet: a network address and a prefix length, written `a.b.c.d/p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub prefix: u8,
}

impl Subnet {
    /// The subnet of `addr`/`prefix`, host bits cleared; `None` for a prefix over 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Subnet> {
        (prefix <= 32).then(|| Subnet { addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix })
    }

    /// How many addresses it holds.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `i`-th address (0: the network address); `None` past the end.
    pub fn nth(self, i: u64) -> Option<Ipv4Addr> {
        (i < self.size()).then(|| Ipv4Addr::from(u32::from(self.addr).wrapping_add(i as u32)))
    }

    /// Whether `ip` is in it.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Whether the two share an address.
    pub fn overlaps(self, other: Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        u32::from(self.addr) & mask(p) == u32::from(other.addr) & mask(p)
    }

    /// The `i`-th subnet of length `prefix` inside it; `None` past the end
    /// or when `prefix` is shorter than its own.
    pub fn child(self, prefix: u8, i: u64) -> Option<Subnet> {
        if prefix < self.prefix || prefix > 32 || i >= 1u64 << (prefix - self.prefix) {
            return None;
        }
        let step = 1u64 << (32 - u32::from(prefix));
        Some(Subnet { addr: Ipv4Addr::from(u32::from(self.addr).wrapping_add((i * step) as u32)), prefix })
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, bits) =
            s.split_once('/').ok_or_else(|| format!("{s:?} is not a subnet: write it like 10.192.0.0/12"))?;
        let addr: Ipv4Addr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix: u8 = bits
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{bits:?} is not a prefix length (0 to 32)"))?;
        let net = Subnet::new(addr, prefix).ok_or_else(|| format!("{s:?} is not a subnet"))?;
        if net.addr != addr {
            return Err(format!("{s:?} has host bits set: did you mean {net}?"));
        }
        Ok(net)
    }
}

impl Serialize for Subnet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a pool given to `stackd init --address-pool`: big enough for
/// one network, and private.
pub fn check_pool(pool: Subnet) -> Result<(), String> {
    if pool.prefix > NETWORK_PREFIX {
        return Err(format!(
            "address pool {pool} is smaller than one network (/{NETWORK_PREFIX}): give a /{NETWORK_PREFIX} or larger"
        ));
    }
    if !pool.addr.is_private() {
        return Err(format!("address pool {pool} is not a private range (10/8, 172.16/12, 192.168/16)"));
    }
    Ok(())
}

/// Why an address could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Every subnet of the pool is taken.
    #[error(
        "the address pool {pool} has no subnet left for network {network} ({used} networks use it): remove unused stacks, or start the cluster with a larger --address-pool"
    )]
    PoolFull {
        /// The pool.
        pool: Subnet,
        /// The network that needed one.
        network: String,
        /// Networks in the pool.
        used: usize,
    },
    /// Every virtual address of the network is taken.
    #[error("network {network} has no virtual address left (every one of its {max} is taken)")]
    VipsFull {
        /// The network.
        network: String,
        /// How many it has.
        max: u32,
    },
    /// Every slice of the network is taken by other nodes, or the node's are full.
    #[error("network {network} has no address left for node {node}")]
    NetworkFull {
        /// The network.
        network: String,
        /// The node.
        node: NodeId,
    },
    /// The network has no allocation (external, or not declared).
    #[error("network {0} has no addresses allocated by stackd")]
    Unknown(String),
}

/// The addresses of every network stackd manages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Networks {
    /// The pool networks' subnets are taken from.
    pub pool: Subnet,
    /// Networks by engine name (`<stack>_<key>`, or its `name:`).
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkAlloc>,
    /// Where the next subnet search starts (index in the pool).
    #[serde(default)]
    pub cursor: u32,
}

impl Default for Networks {
    fn default() -> Self {
        Networks { pool: DEFAULT_POOL, networks: BTreeMap::new(), cursor: 0 }
    }
}

/// One network's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAlloc {
    /// Its subnet.
    pub subnet: Subnet,
    /// Its VXLAN id.
    pub vni: u32,
    /// Each node's slices (indexes in the subnet, the first one holds the gateway).
    #[serde(default)]
    pub slices: BTreeMap<NodeId, Vec<u32>>,
    /// Virtual addresses by service.
    #[serde(default)]
    pub vips: BTreeMap<ServiceId, Ipv4Addr>,
    /// Task addresses in use.
    #[serde(default)]
    pub tasks: BTreeMap<Ipv4Addr, TaskId>,
    /// Where the next search starts: offset in the subnet of the last task
    /// address handed out.
    #[serde(default)]
    pub cursor: u32,
    /// The same for virtual addresses.
    #[serde(default)]
    pub vip_cursor: u32,
}

/// The first address of a slice that tasks get (the one before is the
/// network address or a spare, the one at `+1` is the gateway).
const FIRST_TASK_OFFSET: u32 = 2;
/// Addresses per slice.
const SLICE_SIZE: u32 = 1 << (32 - SLICE_PREFIX);

impl NetworkAlloc {
    /// The slice `i` of the subnet.
    pub fn slice(&self, i: u32) -> Option<Subnet> {
        self.subnet.child(SLICE_PREFIX, u64::from(i))
    }

    /// The node's gateway on the network: the second address of its first slice.
    pub fn gateway(&self, node: &str) -> Option<Ipv4Addr> {
        let first = *self.slices.get(node)?.first()?;
        self.slice(first)?.nth(1)
    }

    /// The node whose slice holds `ip`.
    pub fn node_of(&self, ip: Ipv4Addr) -> Option<&NodeId> {
        let offset = u32::from(ip).wrapping_sub(u32::from(self.subnet.addr));
        let slice = offset / SLICE_SIZE;
        self.slices.iter().find(|(_, s)| s.contains(&slice)).map(|(n, _)| n)
    }

    /// The block virtual addresses come from (the subnet's last `/24`).
    pub fn vip_block(&self) -> Option<Subnet> {
        self.subnet.child(24, (1u64 << (24 - NETWORK_PREFIX)) - 1)
    }

    /// Whether any task or service still holds one of its addresses.
    pub fn in_use(&self) -> bool {
        !self.tasks.is_empty() || !self.vips.is_empty()
    }

    /// A task address on `node` for `task`, taking a new slice for the node
    /// when its own are full.
    fn take_task_address(&mut self, network: &str, node: &str, task: &str) -> Result<Ipv4Addr, AllocError> {
        let full = || AllocError::NetworkFull { network: network.to_string(), node: node.to_string() };
        let slices = self.slices.get(node).cloned().unwrap_or_default();
        // The node's own slices first, from the cursor on.
        let mut offsets: Vec<u32> = Vec::new();
        for s in &slices {
            offsets.extend((FIRST_TASK_OFFSET..SLICE_SIZE - 1).map(|k| s * SLICE_SIZE + k));
        }
        offsets.sort_unstable();
        let start = offsets.partition_point(|o| *o <= self.cursor);
        let free = offsets[start..]
            .iter()
            .chain(&offsets[..start])
            .copied()
            .find(|o| !self.tasks.contains_key(&offset_addr(self.subnet, *o)));
        let offset = match free {
            Some(o) => o,
            None => {
                let taken: std::collections::BTreeSet<u32> = self.slices.values().flatten().copied().collect();
                let slice = (0..NODE_SLICES).find(|i| !taken.contains(i)).ok_or_else(full)?;
                self.slices.entry(node.to_string()).or_default().push(slice);
                slice * SLICE_SIZE + FIRST_TASK_OFFSET
            }
        };
        self.cursor = offset;
        let ip = offset_addr(self.subnet, offset);
        self.tasks.insert(ip, task.to_string());
        Ok(ip)
    }

    /// A virtual address for `service` (its own, when it has one).
    fn take_vip(&mut self, network: &str, service: &str) -> Result<Ipv4Addr, AllocError> {
        if let Some(ip) = self.vips.get(service) {
            return Ok(*ip);
        }
        let block = self.vip_block().ok_or_else(|| AllocError::Unknown(network.to_string()))?;
        // Not the block's first address (10.x.15.0) nor the subnet's broadcast address.
        let max = block.size() as u32 - 2;
        let used: std::collections::BTreeSet<Ipv4Addr> = self.vips.values().copied().collect();
        let k = (0..max)
            .map(|i| 1 + (self.vip_cursor + i) % max)
            .find(|k| block.nth(u64::from(*k)).is_some_and(|ip| !used.contains(&ip)))
            .ok_or_else(|| AllocError::VipsFull { network: network.to_string(), max })?;
        self.vip_cursor = k;
        let ip = block.nth(u64::from(k)).ok_or_else(|| AllocError::Unknown(network.to_string()))?;
        self.vips.insert(service.to_string(), ip);
        Ok(ip)
    }
}

fn offset_addr(subnet: Subnet, offset: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.addr).wrapping_add(offset))
}

impl Networks {
    /// Whether nothing was ever allocated and the pool is the default one.
    pub fn is_empty(&self) -> bool {
        *self == Networks::default()
    }

    /// How many networks the pool holds.
    pub fn capacity(&self) -> u32 {
        1u32 << (NETWORK_PREFIX - self.pool.prefix.min(NETWORK_PREFIX))
    }

    /// How many more networks fit.
    pub fn free(&self) -> usize {
        (self.capacity() as usize).saturating_sub(self.networks.len())
    }

    /// The network's allocation, made if it has none yet.
    pub fn ensure(&mut self, network: &str) -> Result<&mut NetworkAlloc, AllocError> {
        if !self.networks.contains_key(network) {
            let cap = self.capacity();
            let used: std::collections::BTreeSet<Subnet> = self.networks.values().map(|n| n.subnet).collect();
            let pool = self.pool;
            let index = (0..cap)
                .map(|i| (self.cursor + i) % cap)
                .find(|i| pool.child(NETWORK_PREFIX, u64::from(*i)).is_some_and(|s| !used.contains(&s)))
                .ok_or_else(|| AllocError::PoolFull { pool, network: network.to_string(), used: used.len() })?;
            let subnet =
                pool.child(NETWORK_PREFIX, u64::from(index)).ok_or_else(|| AllocError::Unknown(network.to_string()))?;
            self.cursor = (index + 1) % cap;
            let alloc = NetworkAlloc {
                subnet,
                vni: VNI_BASE + index,
                slices: BTreeMap::new(),
                vips: BTreeMap::new(),
                tasks: BTreeMap::new(),
                cursor: 0,
                vip_cursor: 0,
            };
            self.networks.insert(network.to_string(), alloc);
        }
        self.networks.get_mut(network).ok_or_else(|| AllocError::Unknown(network.to_string()))
    }

    /// Addresses for a task being assigned to `node`, one per network of
    /// `networks` that stackd manages (others are skipped). All or nothing:
    /// on an error nothing is taken.
    pub fn assign_task(
        &mut self,
        task: &str,
        node: &str,
        networks: &[&str],
    ) -> Result<BTreeMap<String, Ipv4Addr>, AllocError> {
        let mut trial = self.clone_of(networks);
        let mut out = BTreeMap::new();
        for n in networks {
            let Some(alloc) = trial.get_mut(*n) else { continue };
            if out.contains_key(*n) {
                continue;
            }
            out.insert((*n).to_string(), alloc.take_task_address(n, node, task)?);
        }
        self.networks.extend(trial);
        Ok(out)
    }

    fn clone_of(&self, networks: &[&str]) -> BTreeMap<String, NetworkAlloc> {
        networks.iter().filter_map(|n| self.networks.get(*n).map(|a| ((*n).to_string(), a.clone()))).collect()
    }

    /// Gives back a task's addresses (those it still holds).
    pub fn release_task(&mut self, task: &str, addresses: &BTreeMap<String, Ipv4Addr>) {
        for (network, ip) in addresses {
            if let Some(alloc) = self.networks.get_mut(network)
                && alloc.tasks.get(ip).is_some_and(|t| t == task)
            {
                alloc.tasks.remove(ip);
            }
        }
    }

    /// Makes the virtual addresses of `service` exactly one per network of
    /// `networks` that stackd manages: new ones taken, others released.
    pub fn set_vips(&mut self, service: &str, networks: &[&str]) -> Result<(), AllocError> {
        let mut trial = self.clone_of(networks);
        for n in networks {
            if let Some(alloc) = trial.get_mut(*n) {
                alloc.take_vip(n, service)?;
            }
        }
        self.networks.extend(trial);
        for (name, alloc) in &mut self.networks {
            if !networks.contains(&name.as_str()) {
                alloc.vips.remove(service);
            }
        }
        Ok(())
    }

    /// A service's virtual addresses, by network.
    pub fn vips_of(&self, service: &str) -> BTreeMap<String, Ipv4Addr> {
        self.networks.iter().filter_map(|(n, a)| a.vips.get(service).map(|ip| (n.clone(), *ip))).collect()
    }

    /// A removed node's slices go back to their networks (its tasks' addresses
    /// were released when they ended).
    pub fn release_node(&mut self, node: &str) {
        for alloc in self.networks.values_mut() {
            alloc.slices.remove(node);
        }
    }

    /// Drops the networks that are no longer declared (`declared` says
    /// which are) and that no task or service uses any more.
    pub fn collect(&mut self, declared: impl Fn(&str) -> bool) {
        self.networks.retain(|name, alloc| declared(name) || alloc.in_use());
    }
}

pub mod view;

pub use view::{NetView, NodeView, Peer, PublishedView, ServiceNet, ServiceView, node_view};

#[cfg(test)]
mod tests;
