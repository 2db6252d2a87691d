//! stackd's PKI and TLS: the cluster CA and node certificates, join and client
//! tokens, rustls configurations (ring only, never aws-lc), the tonic
//! connector for clients and the TLS accept stream for servers.
//!
//! ```text
//!  stackd init ──► Ca::generate ──► sign_key (own cert) ──► CertStore ──► server_config
//!  stackd join ──► JoinToken::parse ──► pinned_client_config(digest) ──► channel
//!                  NodeKey::csr_der ──► (manager) Ca::sign_csr ──► Credentials
//!  server:  tls_incoming(listener, server_config) ──► tonic serve_with_incoming
//!  handler: req.peer_certs() ──► PeerIdentity::from_chain
//! ```
//!
//! It depends on no crate of ours. Library code names the ring provider
//! explicitly ([`provider`]); binaries and tests also call
//! [`install_default_provider`] once, for code that does not.
//!
//! # Layout
//!
//! - `pki.rs`: the CA, node keys and CSRs, signing with our own names
//!   (CN = node id, OU = role, O = cluster id), [`ca_digest`].
//! - `token.rs`: join tokens (`STK-1-…`) and client tokens (`STKC-1-…`),
//!   redacted secrets, constant-time comparison.
//! - `config.rs`: rustls server and client configs (and the status page's
//!   HTTPS config), the pinned-CA config for
//!   joining, the swappable [`CertStore`], PEM helpers.
//! - `connect.rs`: tonic channels over our TLS ([`channel`], [`lazy_channel`]).
//! - `incoming.rs`: [`tls_incoming`], handshakes off the accept loop.
//! - `peer.rs`: [`PeerIdentity`], what a verified certificate says.
//! - `age.rs`: the age file format (X25519 recipients), what cluster
//!   snapshots are encrypted with: [`age::Identity`], [`age::Recipient`],
//!   [`age::encrypt`], [`age::decrypt`].
//! - `seal.rs`: encryption at rest of the Raft data: [`seal::DataKey`],
//!   wrapped by a [`seal::Kek`] or the cluster's [`seal::UnlockKey`] (autolock).
//! - `testing.rs`: an ephemeral PKI for tests (hidden from the docs).

pub mod age;
mod config;
mod connect;
mod incoming;
mod peer;
mod pki;
pub mod seal;
mod token;

#[doc(hidden)]
pub mod testing;

pub use config::{
    CertStore, ConfigError, Credentials, certs_from_pem, client_config, https_server_config, install_default_provider,
    key_from_pem, pinned_client_config, provider, read_ca, server_config,
};
pub use connect::{ConnectError, channel, lazy_channel, never_connected};
pub use incoming::{TlsIncoming, tls_incoming};
pub use peer::{PeerError, PeerIdentity};
pub use pki::{CA_COMMON_NAME, Ca, NodeKey, PkiError, Role, ca_digest};
pub use token::{ClientToken, JoinToken, SECRET_LEN, Secret, TokenError, ct_eq};

/// The DNS name in every manager certificate, and the name clients check
/// whatever address they dial.
pub const SERVER_NAME: &str = "stackd-manager";
/// The DNS name in every worker certificate.
pub const WORKER_NAME: &str = "stackd-worker";
/// The OU of a manager's certificate.
pub const OU_MANAGER: &str = "manager";
/// The OU of a worker's certificate.
pub const OU_WORKER: &str = "worker";

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes exactly `out.len()` bytes of hex (either case) from `text`;
/// false if `text` is anything else.
fn unhex(text: &str, out: &mut [u8]) -> bool {
    let digits = text.as_bytes();
    if digits.len() != out.len() * 2 {
        return false;
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return false;
        };
        *byte = hi << 4 | lo;
    }
    true
}

fn nibble(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x1a];
        let text = super::hex(&bytes);
        assert_eq!(text, "007f80ff1a");
        let mut back = [0u8; 5];
        assert!(super::unhex(&text.to_ascii_uppercase(), &mut back));
        assert_eq!(back, bytes);
        assert!(!super::unhex("007f80ff1", &mut back));
        assert!(!super::unhex("007f80ff1g", &mut back));
    }
}
