//! Who is on the other end: the node id, role and cluster written in a peer's
//! certificate.
//!
//! Read an identity only from a chain rustls has verified against the
//! cluster's CA (on the server, tonic's `Request::peer_certs()`): the names are
//! trustworthy because the CA signs with names of its own choosing
//! ([`crate::Ca::sign_csr`]), not because this module checks anything.

use rustls::pki_types::CertificateDer;
use x509_parser::x509::AttributeTypeAndValue;

use crate::Role;

/// Why a certificate does not name a stackd node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The certificate is not valid DER X.509.
    #[error("the peer's certificate cannot be parsed: {0}")]
    Parse(String),
    /// A field of the subject is missing, empty or not text.
    #[error("the peer's certificate has no {0} in its subject")]
    Missing(&'static str),
    /// The OU is not a role we know.
    #[error("the peer's certificate has an unknown role: {0}")]
    Role(String),
}

/// The identity a node certificate carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The node id (the CN).
    pub node_id: String,
    /// The role the certificate was issued for (the OU). The cluster state has
    /// the last word: a demoted manager keeps its certificate until renewal.
    pub role: Role,
    /// The cluster id (the O).
    pub cluster_id: String,
}

impl PeerIdentity {
    /// Reads the identity of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, PeerError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| PeerError::Parse(e.to_string()))?;
        let subject = cert.subject();
        let node_id = first_text(subject.iter_common_name(), "common name (node id)")?;
        let role = first_text(subject.iter_organizational_unit(), "organizational unit (role)")?;
        let cluster_id = first_text(subject.iter_organization(), "organization (cluster id)")?;
        let role = role.parse().map_err(|_| PeerError::Role(role))?;
        Ok(PeerIdentity { node_id, role, cluster_id })
    }

    /// Reads the identity of the leaf of a verified chain (its first
    /// certificate).
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Result<Self, PeerError> {
        let leaf = chain.first().ok_or(PeerError::NoCertificate)?;
        Self::from_der(leaf)
    }
}

/// The first value of a subject attribute, as non-empty text.
fn first_text<'a, 'b: 'a>(
    mut values: impl Iterator<Item = &'a AttributeTypeAndValue<'b>>,
    what: &'static str,
) -> Result<String, PeerError> {
    values
        .next()
        .and_then(|v| v.as_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or(PeerError::Missing(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, NodeKey};
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn reads_the_names_the_ca_wrote() {
        let ca = Ca::generate("cluster-7").expect("CA");
        let key = NodeKey::generate().expect("key");
        let pem = ca.sign_key(&key, "0123456789abcdef", Role::Manager).expect("sign");
        let leaf = CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM");
        let id = PeerIdentity::from_chain(&[leaf, ca.cert_der().clone()]).expect("identity");
        assert_eq!(
            id,
            PeerIdentity { node_id: "0123456789abcdef".into(), role: Role::Manager, cluster_id: "cluster-7".into() }
        );
    }

    #[test]
    fn refuses_what_is_not_a_node_certificate() {
        assert_eq!(PeerIdentity::from_chain(&[]), Err(PeerError::NoCertificate));
        assert!(matches!(PeerIdentity::from_der(b"garbage"), Err(PeerError::Parse(_))));
        // The CA certificate has a CN and an O but no OU.
        let ca = Ca::generate("c").expect("CA");
        assert_eq!(PeerIdentity::from_der(ca.cert_der()), Err(PeerError::Missing("organizational unit (role)")));
    }
}
