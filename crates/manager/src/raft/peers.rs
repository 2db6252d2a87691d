//! The other managers: how to reach them and when they last answered.
//!
//! - [`PeerConnector`] makes a gRPC channel to an address. The default,
//!   [`PlainConnector`], dials plaintext HTTP/2; a TLS connector plugs in by
//!   implementing the same trait.
//! - [`Peers`] caches one lazy channel per `(raft id, address)` (openraft asks
//!   for a new network client per replication stream and per election, so
//!   making clients must be cheap) and records, per peer, the last time a
//!   Raft RPC to it succeeded: the contact tracker behind
//!   [`RaftNode::has_quorum`](super::RaftNode::has_quorum).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::util::lock;
use openraft::{RaftMetrics, ServerState};
use stackd_proto::v1::raft_client::RaftClient;
use tonic::transport::{Channel, Endpoint};

/// The largest gRPC message a manager sends or accepts on the Raft service
/// (tonic decodes at most 4 MiB by default; an append of 64 entries of large
/// stack specs can exceed that).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Why a channel to a peer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The address is not a valid URI authority.
    #[error("invalid manager address {addr:?}: {message}")]
    BadAddress {
        /// The address.
        addr: String,
        /// What is wrong with it.
        message: String,
    },
    /// The connector failed for another reason (a TLS configuration, …).
    #[error("cannot connect to {addr}: {message}")]
    Connector {
        /// The address.
        addr: String,
        /// What failed.
        message: String,
    },
}

/// Makes gRPC channels to other managers.
///
/// Implementations must return at once (lazy channels): the channel connects
/// on first use and reconnects after a failure by itself.
pub trait PeerConnector: Send + Sync + 'static {
    /// A channel to the manager at `addr` (`host:port`).
    fn channel(&self, addr: &str) -> Result<Channel, PeerError>;
}

/// Plaintext HTTP/2 channels (no TLS): the default until TLS lands.
#[derive(Clone, Debug)]
pub struct PlainConnector {
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
}

impl Default for PlainConnector {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(2) }
    }
}

/// The endpoint settings every peer channel needs, whatever the transport:
/// HTTP/2 keep-alive pings every second, a dead connection after 2 s without
/// an answer (TCP does not notice a cut link by itself), no Nagle delay.
pub fn peer_endpoint(addr: &str, connect_timeout: Duration) -> Result<Endpoint, PeerError> {
    let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| PeerError::BadAddress { addr: addr.to_string(), message: e.to_string() })?;
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

impl PeerConnector for PlainConnector {
    fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        Ok(peer_endpoint(addr, self.connect_timeout)?.connect_lazy())
    }
}

/// Channels to the other managers and when each last answered.
pub struct Peers {
    connector: Box<dyn PeerConnector>,
    channels: Mutex<HashMap<(u64, String), Channel>>,
    last_ok: Mutex<HashMap<u64, Instant>>,
    /// The term this node last led and since when (for the grace period).
    leading_since: Mutex<Option<(u64, Instant)>>,
    /// How long a peer counts as reachable after its last answer.
    window: Duration,
}

impl Peers {
    /// Peers reached through `connector`; a peer counts as reachable for
    /// `window` after its last successful RPC.
    pub fn new(connector: Box<dyn PeerConnector>, window: Duration) -> Self {
        Self {
            connector,
            channels: Mutex::new(HashMap::new()),
            last_ok: Mutex::new(HashMap::new()),
            leading_since: Mutex::new(None),
            window,
        }
    }

    /// A channel to `addr` of its own (a connection Raft's traffic does not
    /// share): for streams that may be busy for long, such as relayed logs.
    pub fn own_channel(&self, addr: &str) -> Result<Channel, PeerError> {
        self.connector.channel(addr)
    }

    /// The cached channel to `id` at `addr`, made on first use.
    pub fn channel(&self, id: u64, addr: &str) -> Result<Channel, PeerError> {
        let mut channels = lock(&self.channels);
        if let Some(c) = channels.get(&(id, addr.to_string())) {
            return Ok(c.clone());
        }
        let channel = self.connector.channel(addr)?;
        // A node that moved keeps one entry per address; drop the old ones.
        channels.retain(|(i, _), _| *i != id);
        channels.insert((id, addr.to_string()), channel.clone());
        Ok(channel)
    }

    /// A Raft client to `id` at `addr` with the raised message limits.
    pub fn client(&self, id: u64, addr: &str) -> Result<RaftClient<Channel>, PeerError> {
        Ok(RaftClient::new(self.channel(id, addr)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// Records that `id` answered a Raft RPC just now.
    pub fn record_ok(&self, id: u64) {
        lock(&self.last_ok).insert(id, Instant::now());
    }

    /// Whether `id` answered within the window.
    pub fn is_reachable(&self, id: u64) -> bool {
        let last_ok = lock(&self.last_ok);
        last_ok.get(&id).is_some_and(|t| t.elapsed() < self.window)
    }

    /// Whether a leader whose metrics are `m` still hears from a majority of
    /// every voter configuration (both halves of a joint configuration).
    ///
    /// openraft 0.9 has no check-quorum: a leader cut off from the others
    /// stays `ServerState::Leader` for ever and `client_write` never returns
    /// there. This is our soft step-down: a leader that heard from no
    /// majority within the window is treated as not leading. In its first
    /// window after winning an election a leader counts as having a quorum
    /// (it just got the votes). `RaftMetrics::millis_since_quorum_ack` is not
    /// usable instead: metrics are only published on changes, so a cut-off
    /// leader keeps showing the last, small value.
    pub fn leader_has_quorum(&self, self_id: u64, m: &RaftMetrics<u64, openraft::BasicNode>) -> bool {
        if m.state != ServerState::Leader {
            return false;
        }
        {
            let mut since = lock(&self.leading_since);
            match *since {
                Some((term, at)) if term == m.current_term => {
                    if at.elapsed() < self.window {
                        return true;
                    }
                }
                _ => {
                    *since = Some((m.current_term, Instant::now()));
                    return true;
                }
            }
        }
        let membership = m.membership_config.membership();
        membership.get_joint_config().iter().all(|voters| {
            let reached = voters.iter().filter(|v| **v == self_id || self.is_reachable(**v)).count();
            reached > voters.len() / 2
        })
    }

    /// The ids among `ids` that answered within the window (`self_id` always).
    pub fn reachable(&self, self_id: u64, ids: impl IntoIterator<Item = u64>) -> BTreeSet<u64> {
        ids.into_iter().filter(|i| *i == self_id || self.is_reachable(*i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_address_is_an_error_not_a_panic() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let peers = Peers::new(Box::new(PlainConnector::default()), Duration::from_secs(1));
            assert!(matches!(peers.channel(2, "bad addr with spaces"), Err(PeerError::BadAddress { .. })));
            // Cached per (id, addr): the same address gives the same entry.
            peers.channel(2, "127.0.0.1:1").expect("lazy channel");
            peers.channel(2, "127.0.0.1:1").expect("cached");
            peers.channel(2, "127.0.0.1:2").expect("moved");
            assert_eq!(peers.channels.lock().expect("lock").len(), 1);
        });
    }

    fn leader_metrics(term: u64, configs: Vec<BTreeSet<u64>>) -> RaftMetrics<u64, openraft::BasicNode> {
        let mut m = RaftMetrics::new_initial(1);
        m.state = ServerState::Leader;
        m.current_term = term;
        let membership = openraft::Membership::new(configs, None);
        m.membership_config = std::sync::Arc::new(openraft::StoredMembership::new(None, membership));
        m
    }

    #[test]
    fn quorum_needs_a_majority_of_every_configuration_after_the_grace() {
        let window = Duration::from_millis(40);
        let peers = Peers::new(Box::new(PlainConnector::default()), window);
        let three = leader_metrics(2, vec![BTreeSet::from([1, 2, 3])]);
        // A new leader is granted the window: it just won the votes.
        assert!(peers.leader_has_quorum(1, &three));
        std::thread::sleep(window * 2);
        assert!(!peers.leader_has_quorum(1, &three), "alone among three voters");
        peers.record_ok(3);
        assert!(peers.leader_has_quorum(1, &three), "itself and m3 are a majority of three");
        // A joint configuration needs a majority in both halves.
        let joint = leader_metrics(2, vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])]);
        assert!(!peers.leader_has_quorum(1, &joint), "1 of {{3, 4, 5}} reached");
        peers.record_ok(4);
        assert!(peers.leader_has_quorum(1, &joint));
        // A single voter always has its quorum; a follower never "has" one.
        assert!(peers.leader_has_quorum(1, &leader_metrics(2, vec![BTreeSet::from([1])])));
        let mut follower = three.clone();
        follower.state = ServerState::Follower;
        assert!(!peers.leader_has_quorum(1, &follower));
        // A new term starts a new grace period.
        std::thread::sleep(window * 2);
        let five = leader_metrics(3, vec![BTreeSet::from([1, 2, 3, 4, 5])]);
        assert!(peers.leader_has_quorum(1, &five));
    }

    #[test]
    fn contact_tracker_forgets_after_the_window() {
        let peers = Peers::new(Box::new(PlainConnector::default()), Duration::from_millis(50));
        assert!(!peers.is_reachable(2));
        peers.record_ok(2);
        assert!(peers.is_reachable(2));
        assert_eq!(peers.reachable(1, [1, 2, 3]), BTreeSet::from([1, 2]));
        std::thread::sleep(Duration::from_millis(80));
        assert!(!peers.is_reachable(2));
    }
}
