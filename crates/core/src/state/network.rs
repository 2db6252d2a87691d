//! Applying commands to the networks' addresses ([`crate::net`]): a subnet
//! for every network a stack declares, a virtual address per service and
//! network, an address per task from its node's slice when it is assigned,
//! given back when the task has ended.

use std::net::Ipv4Addr;

use super::*;
use crate::model::EndpointMode;
use crate::net::{AllocError, Networks};

impl From<AllocError> for Refusal {
    fn from(e: AllocError) -> Self {
        Refusal::failed_precondition(e.to_string())
    }
}

/// Whether stackd allocates the network's addresses and spans it across
/// nodes: a network it creates, with the bridge (or overlay) driver.
pub fn is_managed(spec: &NetworkSpec) -> bool {
    !spec.external && spec.driver.as_deref().is_none_or(|d| d == "bridge" || d == "overlay")
}

/// Whether a task still holds its addresses: until it has ended, or, an
/// orphan, while it may still come back.
pub fn holds_addresses(t: &Task) -> bool {
    !t.status.state.is_terminal() || (t.is_orphaned() && t.desired_state == DesiredState::Running)
}

impl ClusterState {
    /// The managed networks (engine names) of `stack` among `names`.
    fn managed<'a>(&self, stack: &str, names: impl Iterator<Item = &'a String>) -> Vec<String> {
        let Some(st) = self.stacks.get(stack) else { return Vec::new() };
        let mut out: Vec<String> =
            names.filter(|name| st.networks.values().any(|n| n.name == **name && is_managed(n))).cloned().collect();
        out.dedup();
        out
    }

    /// The networks of a deploy and the virtual addresses of its services,
    /// made on `net`; what a deploy would fail on, tried first on a copy.
    fn allocate_stack(net: &mut Networks, state: &ClusterState, stack: &str) -> Result<(), AllocError> {
        let Some(st) = state.stacks.get(stack) else { return Ok(()) };
        for n in st.networks.values().filter(|n| is_managed(n)) {
            net.ensure(&n.name)?;
        }
        for s in state.services.values().filter(|s| s.stack == stack) {
            let nets = state.managed(stack, s.spec.task.networks.iter().map(|a| &a.network));
            let vip = s.spec.endpoint_mode == EndpointMode::Vip;
            let nets: Vec<&str> = if vip { nets.iter().map(String::as_str).collect() } else { Vec::new() };
            net.set_vips(&s.id, &nets)?;
        }
        Ok(())
    }

    /// After a deploy changed stack `stack`: its networks and virtual addresses.
    /// Cannot fail once [`Self::check_network_room`] passed for the same deploy.
    pub(super) fn allocate_stack_networks(&mut self, stack: &str) -> Result<(), AllocError> {
        let mut net = std::mem::take(&mut self.net);
        let r = Self::allocate_stack(&mut net, self, stack);
        self.net = net;
        r
    }

    /// Whether the deploy of `spec` finds room for its networks and virtual
    /// addresses; tried on a copy of the state, so a refusal changes nothing.
    pub(super) fn check_network_room(&self, spec: &StackSpec, prune: bool) -> Result<(), Refusal> {
        let mut trial = ClusterState {
            cluster_id: self.cluster_id.clone(),
            stacks: self.stacks.clone(),
            services: self
                .services
                .values()
                .filter(|s| s.stack == spec.name)
                .map(|s| (s.id.clone(), s.clone()))
                .collect(),
            ..ClusterState::default()
        };
        let networks = self.kept_networks(spec, prune);
        let now = Stack {
            name: spec.name.clone(),
            volumes: BTreeMap::new(),
            networks,
            registry_auth: Default::default(),
            created_at: 0,
            updated_at: 0,
        };
        trial.stacks.insert(spec.name.clone(), now);
        // The services after the deploy: the spec's (ids of new ones made up), and the kept others.
        if prune {
            trial.services.retain(|_, s| spec.services.contains_key(&s.spec.name));
        }
        for svc in spec.services.values() {
            let full = format!("{}_{}", spec.name, svc.name);
            let id = trial.services.values().find(|s| s.name == full).map(|s| s.id.clone());
            let id = id.unwrap_or_else(|| format!("new:{full}"));
            trial.services.insert(
                id.clone(),
                Service {
                    autoscale: None,
                    id,
                    stack: spec.name.clone(),
                    name: full,
                    spec: svc.clone(),
                    revision: 0,
                    history: Vec::new(),
                    update: UpdateStatus::default(),
                    image: crate::model::ImagePin::unrecorded(),
                    task_failures: 0,
                    rebalance: None,
                    created_at: 0,
                    updated_at: 0,
                },
            );
        }
        let mut net = self.net.clone();
        Self::allocate_stack(&mut net, &trial, &spec.name).map_err(Refusal::from)
    }

    /// Whether the ports the deploy of `spec` publishes through the routing
    /// mesh are free: a mesh port is served on every node, so no other
    /// service may publish it, through the mesh or on a node (`mode: host`).
    pub(super) fn check_published(&self, spec: &StackSpec, prune: bool) -> Result<(), Refusal> {
        use crate::model::{Protocol, PublishMode};
        type Owner = (u16, Protocol);
        let mut others: Vec<(String, Owner, PublishMode)> = Vec::new();
        for s in self.services.values() {
            let replaced = s.stack == spec.name && (prune || spec.services.contains_key(&s.spec.name));
            if replaced {
                continue;
            }
            for p in &s.spec.task.ports {
                if let Some(pp) = p.published {
                    others.push((s.name.clone(), (pp, p.protocol), p.mode));
                }
            }
        }
        let mut mine: Vec<(String, Owner, PublishMode)> = Vec::new();
        for svc in spec.services.values() {
            let full = format!("{}_{}", spec.name, svc.name);
            for p in &svc.task.ports {
                if let Some(pp) = p.published {
                    mine.push((full.clone(), (pp, p.protocol), p.mode));
                }
            }
        }
        for (i, (name, key, mode)) in mine.iter().enumerate() {
            let clash = others
                .iter()
                .chain(mine[..i].iter().filter(|(n, _, _)| n != name))
                .find(|(_, k, m)| k == key && (*mode == PublishMode::Ingress || *m == PublishMode::Ingress));
            if let Some((other, (port, proto), _)) = clash {
                return Err(Refusal::failed_precondition(format!(
                    "port {port}/{} of {name} is already published by {other}: a port published through the routing mesh (mode: ingress, the default) is taken on every node; choose another port, or publish both with mode: host on different nodes",
                    proto_name(*proto)
                )));
            }
        }
        Ok(())
    }

    /// Addresses for task `id` on `node`, one per managed network it joins.
    /// On an error nothing is taken and the task is left as it was.
    pub(super) fn assign_addresses(&mut self, id: &str, node: &str) -> Result<(), AllocError> {
        let Some(t) = self.tasks.get(id) else { return Ok(()) };
        if !t.addresses.is_empty() {
            return Ok(());
        }
        let nets = self.managed(&t.stack, t.template.networks.iter().map(|a| &a.network));
        if nets.is_empty() {
            return Ok(());
        }
        let nets: Vec<&str> = nets.iter().map(String::as_str).collect();
        let addresses = self.net.assign_task(id, node, &nets)?;
        if let Some(t) = self.tasks.get_mut(id) {
            t.addresses = addresses;
        }
        Ok(())
    }

    /// Gives back the addresses of the tasks this command ended, and the
    /// networks no stack declares and nothing uses any more.
    pub(super) fn release_addresses(&mut self, cx: &Ctx) {
        let mut released = false;
        for e in cx.out.events.iter().filter(|e| e.kind == ObjectKind::Task) {
            if let Some(t) = self.tasks.get(&e.id)
                && !t.addresses.is_empty()
                && !holds_addresses(t)
            {
                self.net.release_task(&t.id, &t.addresses);
                released = true;
            }
        }
        let structural = cx.out.deploy.is_some()
            || cx.out.events.iter().any(|e| e.action == Action::Remove && e.kind != ObjectKind::Task);
        if released || structural {
            let declared: std::collections::BTreeSet<&str> = self
                .stacks
                .values()
                .flat_map(|s| s.networks.values())
                .filter(|n| is_managed(n))
                .map(|n| n.name.as_str())
                .collect();
            self.net.collect(|name| declared.contains(name));
        }
    }

    /// A task leaves the table: its addresses go back.
    pub(super) fn forget_task(&mut self, t: &Task) {
        self.net.release_task(&t.id, &t.addresses);
    }

    /// The virtual addresses of a service, by network.
    pub fn vips_of(&self, service: &str) -> BTreeMap<String, Ipv4Addr> {
        self.net.vips_of(service)
    }
}

fn proto_name(p: crate::model::Protocol) -> &'static str {
    match p {
        crate::model::Protocol::Tcp => "tcp",
        crate::model::Protocol::Udp => "udp",
        crate::model::Protocol::Sctp => "sctp",
    }
}
