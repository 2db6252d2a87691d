//! The crate end to end on 127.0.0.1: a tonic server on `tls_incoming`, tonic
//! channels from `channel` / `lazy_channel`, and a handler that reads the
//! caller's identity the way the manager's handlers will.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use stackd_tls::testing::TestPki;
use stackd_tls::{ConnectError, PeerIdentity, Role};
use tokio::net::{TcpListener, TcpStream};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Channel, Server};
use tower::{Service, ServiceExt};

/// Answers every call with the caller's node id in `x-peer` ("anonymous"
/// without a client certificate).
#[derive(Clone)]
struct WhoAmI;

impl NamedService for WhoAmI {
    const NAME: &'static str = "test.WhoAmI";
}

impl Service<http::Request<Body>> for WhoAmI {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().expect("TLS connect info");
        let who = match info.peer_certs() {
            Some(chain) => PeerIdentity::from_chain(&chain).expect("identity").node_id,
            None => "anonymous".to_string(),
        };
        let response = http::Response::builder().header("x-peer", who).body(Body::empty()).expect("response");
        std::future::ready(Ok(response))
    }
}

/// Serves `WhoAmI` with `config` on a fresh port of 127.0.0.1.
async fn serve(config: Arc<ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = stackd_tls::tls_incoming(listener, config);
    tokio::spawn(Server::builder().add_service(WhoAmI).serve_with_incoming(incoming));
    addr
}

/// Who the server says we are.
async fn who(channel: Channel) -> String {
    let request = http::Request::builder()
        .method("POST")
        .uri("http://stackd-manager/test.WhoAmI/Who")
        .body(Body::empty())
        .expect("request");
    let response = channel.oneshot(request).await.expect("call");
    response.headers()["x-peer"].to_str().expect("header").to_string()
}

async fn connect(addr: SocketAddr, tls: Arc<ClientConfig>) -> Channel {
    stackd_tls::channel(&addr.to_string(), tls).await.expect("channel")
}

#[tokio::test]
async fn handlers_see_the_callers_certificate() {
    let pki = TestPki::new();
    let addr = serve(pki.server_config("m1")).await;
    let worker = pki.client_config(Some(("00000000000000w1", Role::Worker)));
    assert_eq!(who(connect(addr, worker).await).await, "00000000000000w1");
    assert_eq!(who(connect(addr, pki.client_config(None)).await).await, "anonymous");
    let https = stackd_tls::channel(&format!("https://{addr}"), pki.client_config(None)).await.expect("https");
    assert_eq!(who(https).await, "anonymous");
}

#[tokio::test]
async fn a_silent_client_does_not_hold_back_the_others() {
    let pki = TestPki::new();
    let addr = serve(pki.server_config("m1")).await;
    // Connects and never says hello: its handshake waits in a task of its own.
    let _silent = TcpStream::connect(addr).await.expect("tcp");
    let channel = tokio::time::timeout(Duration::from_secs(3), connect(addr, pki.client_config(None)))
        .await
        .expect("accepted while another handshake is pending");
    assert_eq!(who(channel).await, "anonymous");
}

#[tokio::test]
async fn joining_nodes_pin_the_ca_of_their_token() {
    let pki = TestPki::new();
    let addr = serve(pki.server_config("m1")).await;
    let pinned = stackd_tls::pinned_client_config(&pki.ca.digest()).expect("pinned");
    assert_eq!(who(connect(addr, pinned).await).await, "anonymous");

    let other = TestPki::for_cluster("other-cluster");
    let wrong = stackd_tls::pinned_client_config(&other.ca.digest()).expect("pinned");
    let err = stackd_tls::channel(&addr.to_string(), wrong).await.expect_err("another cluster's manager");
    assert!(matches!(err, ConnectError::Connect { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("not signed by the CA of this token"), "{message}");
    assert_eq!(message.matches("not signed").count(), 1, "{message}");
}

#[tokio::test]
async fn lazy_channels_connect_when_first_used() {
    let pki = TestPki::new();
    // Reserve a port, free it, and make the channel before anyone listens.
    let addr = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
    let channel = stackd_tls::lazy_channel(&addr.to_string(), pki.client_config(Some(("m2", Role::Manager))))
        .expect("lazy channel");
    let listener = TcpListener::bind(addr).await.expect("rebind");
    let incoming = stackd_tls::tls_incoming(listener, pki.server_config("m1"));
    tokio::spawn(Server::builder().add_service(WhoAmI).serve_with_incoming(incoming));
    assert_eq!(who(channel).await, "m2");
}

#[tokio::test]
async fn plaintext_addresses_are_refused() {
    let pki = TestPki::new();
    let err = stackd_tls::channel("http://127.0.0.1:1", pki.client_config(None)).await.expect_err("plaintext");
    assert!(matches!(err, ConnectError::Plaintext(_)), "{err}");
    assert!(matches!(
        stackd_tls::lazy_channel("127.0.0.1", pki.client_config(None)),
        Err(ConnectError::Address { .. })
    ));
}
