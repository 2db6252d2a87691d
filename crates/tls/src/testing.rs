//! An ephemeral PKI for tests, here and in other crates: a fresh CA, and
//! certificates and configs for any node id and role. It panics on failure,
//! as test helpers do.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, ServerConfig};

use crate::{Ca, CertStore, Credentials, NodeKey, Role};

/// A throwaway CA.
#[derive(Debug)]
pub struct TestPki {
    /// The CA.
    pub ca: Ca,
}

impl TestPki {
    /// A new CA for the cluster `test-cluster`.
    pub fn new() -> Self {
        Self::for_cluster("test-cluster")
    }

    /// A new CA for `cluster_id`.
    pub fn for_cluster(cluster_id: &str) -> Self {
        TestPki { ca: Ca::generate(cluster_id).expect("test CA") }
    }

    /// A fresh key and a certificate for `node_id` in `role`.
    pub fn credentials(&self, node_id: &str, role: Role) -> Credentials {
        let key = NodeKey::generate().expect("test node key");
        let pem = self.ca.sign_key(&key, node_id, role).expect("test node certificate");
        let cert = CertificateDer::from_pem_slice(pem.as_bytes()).expect("test node certificate PEM");
        Credentials::new(cert, key.private_key_der(), self.ca.cert_der().clone())
    }

    /// A manager's server config for `node_id`.
    pub fn server_config(&self, node_id: &str) -> Arc<ServerConfig> {
        let store = CertStore::new(&self.credentials(node_id, Role::Manager)).expect("test cert store");
        crate::server_config(self.ca.cert_der(), Arc::new(store)).expect("test server config")
    }

    /// A client config that trusts this CA and, given a node id and role,
    /// presents a certificate for it.
    pub fn client_config(&self, identity: Option<(&str, Role)>) -> Arc<ClientConfig> {
        let creds = identity.map(|(node_id, role)| self.credentials(node_id, role));
        crate::client_config(self.ca.cert_der(), creds.as_ref()).expect("test client config")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
