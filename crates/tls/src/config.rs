//! rustls configurations, all on the ring provider: the managers' server
//! config, the clients' config, and the pinned config a joining node uses
//! before it has the CA.
//!
//! ```text
//!  manager (server)                    client
//!  ────────────────                    ──────
//!  serves [leaf, CA] from CertStore    trusts the CA (client_config)
//!  client cert optional, verified      or only a CA whose digest is pinned
//!    against the CA                      (pinned_client_config, stackd join)
//!  ALPN h2                             ALPN h2, server name "stackd-manager"
//! ```

use std::path::Path;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};

use crate::{PeerError, PeerIdentity, ca_digest};

/// The ALPN protocol both sides speak: HTTP/2, for gRPC.
const ALPN_H2: &[u8] = b"h2";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A PEM input holds nothing usable of the expected kind.
    #[error("invalid PEM for the {what}: {message}")]
    Pem {
        /// What was being read.
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The CA file could not be read.
    #[error("reading the CA certificate {path}: {source}")]
    ReadCa {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// rustls refused a certificate, a key, or the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The certificate verifier could not be built (the CA is unusable).
    #[error("TLS certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    /// A CA digest is not 64 hex digits.
    #[error("a CA digest is 64 hex digits, got {0:?}")]
    Digest(String),
}

/// The ring crypto provider every configuration here is built on.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Installs ring as the process's default rustls provider, for code that
/// builds configurations without naming one. Call it once at the start of
/// every binary and test; calling it again does nothing.
pub fn install_default_provider() {
    // Err means a provider is installed already: fine either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A node's TLS identity: its certificate, its private key, and the CA it
/// chains to. `Debug` never shows the key.
pub struct Credentials {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
}

impl Credentials {
    /// Credentials from DER parts.
    pub fn new(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>, ca: CertificateDer<'static>) -> Self {
        Credentials { cert, key, ca }
    }

    /// Credentials from PEM: the node certificate (its first certificate is
    /// taken, so a `leaf + CA` file works), the node key, and the CA.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, ConfigError> {
        let cert = first_cert(cert_pem, "node certificate")?;
        let key = key_from_pem(key_pem)?;
        let ca = first_cert(ca_pem, "CA certificate")?;
        Ok(Credentials { cert, key, ca })
    }

    /// The node certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate.
    pub fn ca(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The node, role and cluster the certificate names.
    pub fn identity(&self) -> Result<PeerIdentity, PeerError> {
        PeerIdentity::from_der(&self.cert)
    }

    /// The key paired with `chain` for rustls, checked to match the leaf.
    fn certified_key(&self, chain: Vec<CertificateDer<'static>>) -> Result<CertifiedKey, ConfigError> {
        Ok(CertifiedKey::from_der(chain, self.key.clone_key(), &provider())?)
    }
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Credentials { cert: self.cert.clone(), key: self.key.clone_key(), ca: self.ca.clone() }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cert", &ca_digest(&self.cert))
            .field("key", &"<redacted>")
            .field("ca", &ca_digest(&self.ca))
            .finish()
    }
}

/// The certificate a manager serves, swappable while it serves (promotion,
/// demotion, renewal): new handshakes get the new one.
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// A store that serves `creds` (the chain `[leaf, CA]`, so that a joining
    /// node can find the CA its token pins).
    pub fn new(creds: &Credentials) -> Result<Self, ConfigError> {
        Ok(CertStore { current: RwLock::new(Arc::new(served_key(creds)?)) })
    }

    /// Serves `creds` from the next handshake on. On error the store keeps
    /// what it served.
    pub fn replace(&self, creds: &Credentials) -> Result<(), ConfigError> {
        let key = Arc::new(served_key(creds)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
        Ok(())
    }
}

fn served_key(creds: &Credentials) -> Result<CertifiedKey, ConfigError> {
    creds.certified_key(vec![creds.cert.clone(), creds.ca.clone()])
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertStore")
    }
}

/// The managers' server config: serves the certificate in `certs`; a client
/// certificate is optional (stackctl may use a token instead, a joining node
/// has none yet) and, when presented, must chain to `ca`. ALPN h2.
pub fn server_config(ca: &CertificateDer<'static>, certs: Arc<CertStore>) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The config of a manager's HTTPS status page (`--status-addr`): the
/// same certificate as [`server_config`] (from `certs`, so a renewal
/// reaches it too), no client certificate asked for (a browser would offer
/// the user's own), ALPN `http/1.1`.
pub fn https_server_config(certs: Arc<CertStore>) -> Result<Arc<ServerConfig>, ConfigError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client config that trusts `ca` and, given `identity`, presents its
/// certificate (nodes, and stackctl with a client certificate). ALPN h2.
/// Dial with [`crate::channel`], which names the server [`crate::SERVER_NAME`].
pub fn client_config(
    ca: &CertificateDer<'static>,
    identity: Option<&Credentials>,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?);
    let mut config = match identity {
        Some(creds) => builder.with_client_auth_cert(vec![creds.cert.clone()], creds.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The config of a node that joins with a token: it trusts a manager only if
/// the chain it serves holds a CA whose SHA-256 is `ca_digest` (64 hex
/// digits) and the leaf is a manager certificate that CA signed. No client
/// certificate: the node has none yet. ALPN h2.
pub fn pinned_client_config(ca_digest: &str) -> Result<Arc<ClientConfig>, ConfigError> {
    if ca_digest.len() != 64 || !ca_digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ConfigError::Digest(ca_digest.to_string()));
    }
    let provider = provider();
    let verifier = PinnedCa { digest: ca_digest.to_ascii_lowercase(), provider: provider.clone() };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Trusts the CA of a join token: the one among the served certificates whose
/// digest is pinned, and then only for a leaf it signed.
#[derive(Debug)]
struct PinnedCa {
    digest: String,
    provider: Arc<CryptoProvider>,
}

/// Why a pinned handshake fails when the pinned CA is not among the
/// certificates the server sent.
const NOT_PINNED_CA: &str = "the manager's certificate is not signed by the CA of this token";

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| ca_digest(c) == self.digest)
            .ok_or_else(|| rustls::Error::General(NOT_PINNED_CA.to_string()))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("the pinned CA cannot verify: {e}")))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn roots(ca: &CertificateDer<'static>) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    Ok(roots)
}

/// Every certificate in a PEM text, in order; at least one.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::Pem { what: "certificates", message: e.to_string() })?;
    if certs.is_empty() {
        return Err(ConfigError::Pem { what: "certificates", message: "no CERTIFICATE block".into() });
    }
    Ok(certs)
}

/// The first certificate of a PEM text.
fn first_cert(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, ConfigError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| ConfigError::Pem { what, message: e.to_string() })
}

/// The private key in a PEM text (PKCS#8, SEC1 or PKCS#1).
pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| ConfigError::Pem { what: "private key", message: e.to_string() })
}

/// The CA certificate from `value`, which is either PEM text (it starts with
/// `-----BEGIN`) or the path of a PEM file: what `STACKCTL_CA` holds.
pub fn read_ca(value: &str) -> Result<CertificateDer<'static>, ConfigError> {
    if value.trim_start().starts_with("-----BEGIN") {
        return first_cert(value, "CA certificate");
    }
    let text = std::fs::read_to_string(Path::new(value))
        .map_err(|source| ConfigError::ReadCa { path: value.to_string(), source })?;
    first_cert(&text, "CA certificate")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestPki;
    use crate::{Ca, NodeKey, Role};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// What the server saw of a handshake: the client's certificates.
    type Seen = Option<Vec<CertificateDer<'static>>>;

    /// Runs one handshake over an in-memory pipe and a byte each way.
    /// Returns the client's result and, when the server finished, what it saw.
    async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> (Result<(), String>, Option<Seen>) {
        let (c, s) = duplex(64 * 1024);
        let server_side = tokio::spawn(async move {
            let mut tls = TlsAcceptor::from(server).accept(s).await.ok()?;
            let seen = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.ok()?;
            tls.write_all(&byte).await.ok()?;
            tls.flush().await.ok()?;
            Some(seen)
        });
        let name = ServerName::try_from(crate::SERVER_NAME).expect("server name");
        let client_result = async {
            let mut tls = TlsConnector::from(client).connect(name, c).await.map_err(|e| e.to_string())?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_H2));
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            Ok(())
        }
        .await;
        let seen = server_side.await.expect("server task");
        (client_result, seen)
    }

    #[tokio::test]
    async fn server_sees_the_client_certificate() {
        let pki = TestPki::new();
        let node = pki.credentials("00000000000000b2", Role::Worker);
        let client = client_config(pki.ca.cert_der(), Some(&node)).expect("client config");
        let (result, seen) = handshake(pki.server_config("00000000000000a1"), client).await;
        result.expect("handshake");
        let chain = seen.expect("server finished").expect("client certificate");
        let id = PeerIdentity::from_chain(&chain).expect("identity");
        assert_eq!((id.node_id.as_str(), id.role), ("00000000000000b2", Role::Worker));
        assert_eq!(id.cluster_id, pki.ca.cluster_id());
    }

    #[tokio::test]
    async fn anonymous_client_is_accepted() {
        let pki = TestPki::new();
        let client = client_config(pki.ca.cert_der(), None).expect("client config");
        let (result, seen) = handshake(pki.server_config("m1"), client).await;
        result.expect("handshake");
        assert_eq!(seen.expect("server finished"), None);
    }

    #[tokio::test]
    async fn client_trusting_another_ca_is_refused() {
        let pki = TestPki::new();
        let other = TestPki::for_cluster("other-cluster");
        let client = client_config(other.ca.cert_der(), None).expect("client config");
        let (result, seen) = handshake(pki.server_config("m1"), client).await;
        let err = result.expect_err("must not trust the server");
        assert!(err.contains("UnknownIssuer"), "{err}");
        // A CA of the same name is refused too (its signature does not match).
        let twin = TestPki::new();
        let client = client_config(twin.ca.cert_der(), None).expect("client config");
        assert!(handshake(pki.server_config("m1"), client).await.0.is_err());
        assert!(seen.is_none());
    }

    #[tokio::test]
    async fn client_certificate_of_another_ca_is_refused() {
        let pki = TestPki::new();
        let other = TestPki::new();
        let stranger = other.credentials("n9", Role::Manager);
        // The stranger trusts our CA but its own certificate comes from elsewhere.
        let client = client_config(pki.ca.cert_der(), Some(&stranger)).expect("client config");
        let (result, seen) = handshake(pki.server_config("m1"), client).await;
        assert!(result.is_err());
        assert!(seen.is_none(), "the server must not finish the handshake");
    }

    #[tokio::test]
    async fn worker_certificate_cannot_serve_as_a_manager() {
        let pki = TestPki::new();
        let worker = pki.credentials("w1", Role::Worker);
        let server =
            server_config(pki.ca.cert_der(), Arc::new(CertStore::new(&worker).expect("store"))).expect("server config");
        let client = client_config(pki.ca.cert_der(), None).expect("client config");
        let (result, _) = handshake(server, client).await;
        let err = result.expect_err("no stackd-manager name in a worker certificate");
        assert!(err.to_lowercase().contains("name"), "{err}");
    }

    #[tokio::test]
    async fn pinned_verifier_accepts_the_right_digest() {
        let pki = TestPki::new();
        let client = pinned_client_config(&pki.ca.digest()).expect("pinned config");
        let (result, seen) = handshake(pki.server_config("m1"), client).await;
        result.expect("handshake");
        assert_eq!(seen.expect("server finished"), None);
        // Upper-case hex pins the same CA.
        let client = pinned_client_config(&pki.ca.digest().to_ascii_uppercase()).expect("pinned config");
        handshake(pki.server_config("m1"), client).await.0.expect("handshake");
    }

    #[tokio::test]
    async fn pinned_verifier_rejects_another_cas_digest() {
        let pki = TestPki::new();
        let other = TestPki::new();
        let client = pinned_client_config(&other.ca.digest()).expect("pinned config");
        let (result, seen) = handshake(pki.server_config("m1"), client).await;
        let err = result.expect_err("another cluster's manager");
        assert!(err.contains("not signed by the CA of this token"), "{err}");
        assert!(seen.is_none());
    }

    #[tokio::test]
    async fn pinned_verifier_rejects_a_leaf_the_pinned_ca_did_not_sign() {
        // A server that sends our CA along with a certificate from another CA.
        let pki = TestPki::new();
        let other = TestPki::new();
        let foreign = other.credentials("m9", Role::Manager);
        let forged = Credentials::new(foreign.cert().clone(), foreign.key.clone_key(), pki.ca.cert_der().clone());
        let server =
            server_config(pki.ca.cert_der(), Arc::new(CertStore::new(&forged).expect("store"))).expect("server config");
        let client = pinned_client_config(&pki.ca.digest()).expect("pinned config");
        let (result, _) = handshake(server, client).await;
        assert!(result.is_err());
    }

    #[tokio::test]
    async fn cert_store_swaps_the_served_certificate() {
        let pki = TestPki::new();
        let store = Arc::new(CertStore::new(&pki.credentials("m1", Role::Manager)).expect("store"));
        let server = server_config(pki.ca.cert_der(), store.clone()).expect("server config");
        let client = || client_config(pki.ca.cert_der(), None).expect("client config");
        handshake(server.clone(), client()).await.0.expect("manager cert");
        // Demoted: now it serves a worker certificate, which new clients refuse
        // (a client config that resumes an earlier session does not look again).
        store.replace(&pki.credentials("m1", Role::Worker)).expect("replace");
        assert!(handshake(server, client()).await.0.is_err());
        // A key that does not match is refused and the store keeps the old one.
        let a = pki.credentials("m1", Role::Manager);
        let b = pki.credentials("m2", Role::Manager);
        let mismatched = Credentials::new(a.cert().clone(), b.key.clone_key(), a.ca().clone());
        assert!(store.replace(&mismatched).is_err());
    }

    #[test]
    fn pem_inputs() {
        let ca = Ca::generate("c").expect("CA");
        let key = NodeKey::generate().expect("key");
        let leaf = ca.sign_key(&key, "n1", Role::Manager).expect("sign");
        let bundle = format!("{leaf}{}", ca.cert_pem());
        let creds = Credentials::from_pem(&bundle, &key.to_pem(), ca.cert_pem()).expect("credentials");
        assert_eq!(creds.identity().expect("identity").node_id, "n1");
        assert_eq!(certs_from_pem(&bundle).expect("certs").len(), 2);
        assert!(matches!(certs_from_pem("nothing"), Err(ConfigError::Pem { .. })));
        assert!(matches!(key_from_pem(ca.cert_pem()), Err(ConfigError::Pem { .. })));
        assert!(!format!("{creds:?}").contains(key.to_pem().lines().nth(1).expect("PEM body")));

        assert_eq!(read_ca(ca.cert_pem()).expect("PEM text"), *ca.cert_der());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, ca.cert_pem()).expect("write");
        assert_eq!(read_ca(path.to_str().expect("utf-8")).expect("file"), *ca.cert_der());
        assert!(matches!(read_ca("/nonexistent/ca.crt"), Err(ConfigError::ReadCa { .. })));
        assert!(matches!(pinned_client_config("abc"), Err(ConfigError::Digest(_))));
    }
}
