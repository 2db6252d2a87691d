//! The node's DNS server: service discovery for the stacks' containers
//! (issue 14, "Service discovery" and "Names").
//!
//! # Where it listens, and who asks
//!
//! One listener (UDP and TCP, port 53 in production) on the node's
//! **gateway of each network** it has: the bridge address, reachable from
//! every container of that network. The containers' DNS (`HostConfig.Dns`)
//! points at it; Docker's embedded resolver (127.0.0.11) inside each
//! container forwards the container's questions from the container's own
//! namespace, so a question arrives from the **container's own address**.
//! That source address is the asker: it lies in one network's subnet, and
//! the node's own tasks' addresses ([`OwnAddresses`]) tell the other
//! networks of a container on several. An asker is answered only the names
//! of services on its networks; a source on none of the node's networks is
//! REFUSED (the server is no open resolver).
//!
//! # Names
//!
//! For a service `web` of stack `shop`, on each network it joins:
//! `web`, `shop_web` and each of its aliases there lead to its virtual
//! address on that network (`endpoint_mode: vip`; its endpoints when it has
//! no virtual address), or to its endpoints (`dnsrr`); `tasks.web`,
//! `tasks.shop_web` and `tasks.<alias>` lead to every endpoint (tasks up, on
//! any node) on that network, as Docker registers them. Case-insensitive,
//! with or without the trailing dot. A name several services share on a
//! network leads to all their addresses (as Docker does).
//!
//! - A/`IN` questions get the addresses, turned by one at each answer
//!   (Docker shuffles); any other type about a name that has addresses gets
//!   NOERROR with no record (Docker does the same for AAAA).
//! - **No endpoint.** Swarm keeps a service's records only while it has
//!   tasks: with none, every form of its name is unknown to Docker's resolver
//!   and is forwarded, which ends in NXDOMAIN (moby/moby#37623, open, called
//!   a bug there). stackd answers `dnsrr` names and `tasks.*` without
//!   endpoints **NXDOMAIN** itself (the name is not leaked upstream), for
//!   every type, without SOA so that nobody caches the negative answer; a
//!   `vip` service keeps answering its **virtual address** (a client that
//!   resolved it at start keeps working when tasks come back, and a
//!   connection meanwhile is refused rather than failing in DNS).
//! - [`TTL`] is 1 second: answers follow task state and health within a
//!   second (Docker uses 600).
//!
//! Every other name — including another stack's services, not on the
//! asker's networks — is **forwarded** to the upstream resolvers with
//! hickory-resolver: the node's `/etc/resolv.conf` servers by default
//! ([`Upstreams`]), or a stack's own ([`DnsServer::set_stack_upstreams`],
//! the hook for compose's `dns:`). The upstream's answer (records, NXDOMAIN
//! with its SOA) goes back under the asker's query id; a failure or a
//! timeout is SERVFAIL.
//!
//! # Layout
//!
//! - `dns/names.rs`: [`Names`], the table a pure function builds from the
//!   [`NodeView`](stackd_core::net::NodeView) and the own addresses, and
//!   [`answer`], the pure decision for one question.
//! - `dns/server.rs`: [`DnsServer`], one hickory-server `Server` per listen
//!   address sharing one handler state (the current names behind a lock,
//!   swapped whole), and the forwarder.
//!
//! # Limits
//!
//! Packets are decoded by hickory-proto (malformed ones get FORMERR or are
//! dropped; names are at most 255 bytes); a UDP answer is cut at the
//! asker's EDNS size (at most [`MAX_UDP_PAYLOAD`], 512 without EDNS) with TC
//! set; at most [`MAX_FORWARDS_IN_FLIGHT`] questions wait on upstreams at
//! once (beyond: SERVFAIL); an idle TCP connection closes after
//! [`TCP_IDLE_TIMEOUT`].
//!
//! hickory-server logs every request at `info`; the agent's log filter
//! should hold `hickory_server` at `warn`.

mod names;
mod server;

use std::net::SocketAddr;
use std::time::Duration;

pub use names::{Answer, Names, OwnAddresses, answer, own_addresses};
pub use server::{DnsConfig, DnsServer, Upstreams, system_upstreams};

/// The TTL of every answer about the stacks' names, in seconds.
pub const TTL: u32 = 1;

/// The largest UDP answer, whatever the asker's EDNS offers.
pub const MAX_UDP_PAYLOAD: u16 = 4096;

/// How many questions may wait on upstream resolvers at once.
pub const MAX_FORWARDS_IN_FLIGHT: usize = 512;

/// How long a TCP connection may stay without a question.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the DNS server could not do something.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// An address could not be listened on.
    #[error("cannot listen for DNS on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The node's resolvers could not be read.
    #[error("cannot read the node's resolvers (/etc/resolv.conf): {0}")]
    Upstreams(#[source] hickory_resolver::net::NetError),
    /// Listeners can only run inside a Tokio runtime.
    #[error("the DNS server needs a Tokio runtime")]
    NoRuntime,
}
