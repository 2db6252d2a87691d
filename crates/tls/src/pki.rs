//! The cluster's PKI: the CA, node keys and certificate signing requests, and
//! the certificates the CA signs.
//!
//! ```text
//!  stackd init                         stackd join ADDR --token T
//!  ───────────                         ──────────────────────────
//!  Ca::generate(cluster_id)            NodeKey::generate() ─► csr_der() ──┐
//!  NodeKey::generate()                                                    │ JoinCluster
//!  ca.sign_key(&key, id, Manager)      ca.sign_csr(csr, id, role) ◄───────┘ (a manager)
//! ```
//!
//! The CA signs with parameters of its own: the CN is the node id, the OU the
//! role and the O the cluster id, whatever the request asked for. That is what
//! makes [`crate::PeerIdentity`] trustworthy once a chain has been verified.

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::{SERVER_NAME, WORKER_NAME};

/// The CA certificate's common name.
pub const CA_COMMON_NAME: &str = "stackd cluster CA";

/// How long the CA is valid: ten years.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a node certificate is valid: two years.
const NODE_VALIDITY: Duration = Duration::days(730);
/// Certificates start a day in the past so that clocks a little behind accept them.
const BACKDATE: Duration = Duration::days(1);

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen could not generate a key, or build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The certificate signing request is malformed or its signature is wrong.
    #[error("invalid certificate signing request: {0}")]
    Csr(rcgen::Error),
    /// A PEM input holds no certificate or key of the expected kind.
    #[error("invalid PEM for the {what}: {message}")]
    Pem {
        /// What was being read ("CA certificate", "CA key", "node key").
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The CA certificate could not be parsed or is not a CA of ours.
    #[error("invalid CA certificate: {0}")]
    CaCert(String),
    /// The CA key does not belong to the CA certificate.
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    /// A name that goes into a certificate is empty.
    #[error("the {0} must not be empty")]
    EmptyName(&'static str),
    /// A role name is neither `manager` nor `worker`.
    #[error("unknown role {0:?}: expected \"manager\" or \"worker\"")]
    UnknownRole(String),
}

/// What a node does in the cluster; it is written into the OU of its
/// certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A manager: runs Raft, serves the control API and the dispatcher.
    Manager,
    /// A worker: runs tasks only.
    Worker,
}

impl Role {
    /// The OU value: `manager` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => crate::OU_MANAGER,
            Role::Worker => crate::OU_WORKER,
        }
    }

    /// The DNS name in the certificate's SAN. Only manager certificates carry
    /// [`SERVER_NAME`], so a worker's certificate cannot serve as a manager's.
    pub fn dns_name(self) -> &'static str {
        match self {
            Role::Manager => SERVER_NAME,
            Role::Worker => WORKER_NAME,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            crate::OU_MANAGER => Ok(Role::Manager),
            crate::OU_WORKER => Ok(Role::Worker),
            other => Err(PkiError::UnknownRole(other.to_string())),
        }
    }
}

/// The lowercase hex SHA-256 of a certificate's DER: what a join token pins.
pub fn ca_digest(cert_der: &[u8]) -> String {
    crate::hex(&Sha256::digest(cert_der))
}

/// The cluster's certificate authority: its certificate and its key.
///
/// `Debug` never shows the key.
#[derive(Debug)]
pub struct Ca {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
    cluster_id: String,
}

impl Ca {
    /// Creates a new CA for the cluster `cluster_id` (the certificate's O),
    /// with a fresh ECDSA P-256 key, valid for ten years.
    pub fn generate(cluster_id: &str) -> Result<Self, PkiError> {
        if cluster_id.is_empty() {
            return Err(PkiError::EmptyName("cluster id"));
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert_pem: cert.pem(), cert: cert.der().clone(), key, cluster_id: cluster_id.to_string() })
    }

    /// Loads a CA from its certificate and key, as PEM (what the cluster state
    /// keeps). Checks that the certificate is a CA, that it names a cluster,
    /// and that the key is the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| PkiError::Pem { what: "CA certificate", message: e.to_string() })?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Pem { what: "CA key", message: e.to_string() })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert).map_err(|e| PkiError::CaCert(e.to_string()))?;
        if !parsed.is_ca() {
            return Err(PkiError::CaCert("it is not a CA certificate".into()));
        }
        let cluster_id = parsed
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .filter(|o| !o.is_empty())
            .ok_or_else(|| PkiError::CaCert("it names no cluster (no O in its subject)".into()))?
            .to_string();
        if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(PkiError::KeyMismatch);
        }
        Ok(Ca { cert, cert_pem: cert_pem.to_string(), key, cluster_id })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM (PKCS#8). A secret: store it only where the
    /// cluster keeps secrets, never print or log it.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The cluster id this CA was made for (its certificate's O).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The digest a join token pins: [`ca_digest`] of the CA certificate.
    pub fn digest(&self) -> String {
        ca_digest(&self.cert)
    }

    /// Signs a node certificate for the key of a certificate signing request
    /// (DER, as [`NodeKey::csr_der`] makes it). The request's signature is
    /// checked; its subject and extensions are ignored: the certificate says
    /// what the CA decided. Returns the certificate as PEM.
    pub fn sign_csr(&self, csr_der: &[u8], node_id: &str, role: Role) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
            .map_err(PkiError::Csr)?;
        self.sign_public_key(&csr.public_key, node_id, role)
    }

    /// Signs a node certificate for a key held here (the node that runs
    /// `stackd init`, and tests). Returns the certificate as PEM.
    pub fn sign_key(&self, key: &NodeKey, node_id: &str, role: Role) -> Result<String, PkiError> {
        self.sign_public_key(&key.key, node_id, role)
    }

    fn sign_public_key(&self, public_key: &impl PublicKeyData, node_id: &str, role: Role) -> Result<String, PkiError> {
        if node_id.is_empty() {
            return Err(PkiError::EmptyName("node id"));
        }
        let mut params = CertificateParams::new(vec![role.dns_name().to_string()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, role.as_str());
        dn.push(DnType::OrganizationName, self.cluster_id.as_str());
        params.distinguished_name = dn;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        // rcgen's default serial is a hash of the public key: a renewal with the
        // same key would repeat it.
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + NODE_VALIDITY;
        let issuer = Issuer::from_ca_cert_der(&self.cert, &self.key)?;
        Ok(params.signed_by(public_key, &issuer)?.pem())
    }
}

/// A node's private key (ECDSA P-256). `Debug` never shows it.
#[derive(Debug)]
pub struct NodeKey {
    key: KeyPair,
}

impl NodeKey {
    /// Generates a new key.
    pub fn generate() -> Result<Self, PkiError> {
        Ok(NodeKey { key: KeyPair::generate()? })
    }

    /// Loads a key from PEM (PKCS#8, as [`NodeKey::to_pem`] writes it).
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(pem).map_err(|e| PkiError::Pem { what: "node key", message: e.to_string() })?;
        Ok(NodeKey { key })
    }

    /// The key as PEM (PKCS#8). A secret: write it to a 0600 file only.
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The key in the form rustls loads.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// A certificate signing request for this key, DER. It carries no names:
    /// the CA decides them.
    pub fn csr_der(&self) -> Result<Vec<u8>, PkiError> {
        let params = CertificateParams::new(Vec::<String>::new())?;
        Ok(params.serialize_request(&self.key)?.der().to_vec())
    }
}

/// A random positive 128-bit serial number.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PeerIdentity, Role};

    fn leaf_der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("leaf PEM")
    }

    #[test]
    fn csr_round_trip_gives_our_names_not_the_requests() {
        let ca = Ca::generate("c0ffee").expect("CA");
        let key = NodeKey::generate().expect("key");
        // A request that asks for a manager's names is still signed as we decide.
        let mut greedy = CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("params");
        greedy.distinguished_name.push(DnType::CommonName, "admin");
        let csr = greedy.serialize_request(&key.key).expect("csr");
        let pem = ca.sign_csr(csr.der(), "00000000000000aa", Role::Worker).expect("sign");

        let leaf = leaf_der(&pem);
        let id = PeerIdentity::from_der(&leaf).expect("identity");
        assert_eq!(id.node_id, "00000000000000aa");
        assert_eq!(id.role, Role::Worker);
        assert_eq!(id.cluster_id, "c0ffee");

        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("parse");
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .expect("SAN ext")
            .expect("has SAN")
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(sans, vec![format!("DNSName({WORKER_NAME})")]);
        assert!(!cert.is_ca());
        assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.key.der_bytes());
        assert_eq!(cert.issuer().to_string(), format!("CN={CA_COMMON_NAME}, O=c0ffee"));
    }

    #[test]
    fn node_csr_is_accepted_and_manager_gets_the_server_name() {
        let ca = Ca::generate("c1").expect("CA");
        let key = NodeKey::generate().expect("key");
        let pem = ca.sign_csr(&key.csr_der().expect("csr"), "n1", Role::Manager).expect("sign");
        let leaf = leaf_der(&pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("parse");
        let san = cert.subject_alternative_name().expect("SAN ext").expect("has SAN");
        assert_eq!(san.value.general_names.len(), 1);
        assert_eq!(san.value.general_names[0].to_string(), format!("DNSName({SERVER_NAME})"));
        assert_eq!(PeerIdentity::from_der(&leaf).expect("identity").role, Role::Manager);
    }

    #[test]
    fn tampered_csr_is_refused() {
        let ca = Ca::generate("c1").expect("CA");
        let mut csr = NodeKey::generate().expect("key").csr_der().expect("csr");
        let last = csr.len() - 1;
        csr[last] ^= 0x01;
        assert!(matches!(ca.sign_csr(&csr, "n1", Role::Worker), Err(PkiError::Csr(_))));
        assert!(matches!(ca.sign_csr(b"not a csr", "n1", Role::Worker), Err(PkiError::Csr(_))));
    }

    #[test]
    fn ca_survives_pem_and_refuses_a_foreign_key() {
        let ca = Ca::generate("c2").expect("CA");
        let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).expect("reload");
        assert_eq!(again.cluster_id(), "c2");
        assert_eq!(again.digest(), ca.digest());
        // The reloaded CA signs certificates that chain to the same certificate.
        let key = NodeKey::generate().expect("key");
        let pem = again.sign_key(&key, "n2", Role::Manager).expect("sign");
        let leaf_der = leaf_der(&pem);
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).expect("parse");
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("parse CA");
        leaf.verify_signature(Some(ca_cert.public_key())).expect("signed by the CA");

        let other = Ca::generate("c2").expect("other CA");
        assert!(matches!(Ca::from_pem(ca.cert_pem(), &other.key_pem()), Err(PkiError::KeyMismatch)));
        assert!(matches!(Ca::from_pem("junk", &ca.key_pem()), Err(PkiError::Pem { .. })));
        // A leaf is not a CA.
        assert!(matches!(Ca::from_pem(&pem, &key.to_pem()), Err(PkiError::CaCert(_))));
    }

    #[test]
    fn digest_is_64_lowercase_hex_and_keys_never_show_in_debug() {
        let ca = Ca::generate("c3").expect("CA");
        let d = ca.digest();
        assert_eq!(d.len(), 64);
        assert!(d.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
        let key_pem = ca.key_pem();
        let body = key_pem.lines().nth(1).expect("PEM body");
        assert!(!format!("{ca:?}").contains(body));
        let node = NodeKey::generate().expect("key");
        let node_pem = node.to_pem();
        assert!(!format!("{node:?}").contains(node_pem.lines().nth(1).expect("PEM body")));
        assert!(NodeKey::from_pem(&node_pem).is_ok());
    }

    #[test]
    fn roles_read_and_print_as_their_ou() {
        for role in [Role::Manager, Role::Worker] {
            assert_eq!(role.to_string().parse::<Role>().expect("role"), role);
        }
        let err = "admin".parse::<Role>().expect_err("unknown");
        assert_eq!(err.to_string(), "unknown role \"admin\": expected \"manager\" or \"worker\"");
    }

    #[test]
    fn empty_names_are_refused() {
        assert!(matches!(Ca::generate(""), Err(PkiError::EmptyName("cluster id"))));
        let ca = Ca::generate("c4").expect("CA");
        let key = NodeKey::generate().expect("key");
        assert!(matches!(ca.sign_key(&key, "", Role::Worker), Err(PkiError::EmptyName("node id"))));
    }
}
