//! Connecting to a manager: TLS only, with the cluster's CA, and the client
//! token in every call's `authorization` metadata.
//!
//! `--addr` may list several managers. [`Conn`] talks to one of them and
//! moves on to the next when a call fails for want of a manager:
//!
//! ```text
//!  Conn::read(|c| call)   transport error / unavailable ──► next manager, again
//!  Conn::write(|c| call)  only when the request surely never left
//!                         (connection refused, no route) ──► next manager, again
//! ```
//!
//! Each address is tried once per call. Any manager serves every call (a
//! follower forwards writes to the leader and reads through it), so the
//! order does not matter. An idempotent write (`DeployStack`) may go
//! through [`Conn::read`].

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use stackd_proto::v1::control_client::ControlClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::args::Global;

/// A control API client whose calls carry the token.
pub type Client = ControlClient<InterceptedService<Channel, TokenInterceptor>>;

/// Where stackctl's settings usually come from.
const ENV_HINT: &str = "e.g. `set -a; . DATA_DIR/stackctl.env; set +a` on a manager";

/// Adds `authorization: Bearer <token>` to every call (nothing without a
/// token: the manager then says what is missing).
#[derive(Clone)]
pub struct TokenInterceptor {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for TokenInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("TokenInterceptor").field("token", &self.header.as_ref().map(|_| "<redacted>")).finish()
    }
}

impl TokenInterceptor {
    /// An interceptor for `token` (the text of a client token), checked for
    /// its shape here so that a mistyped token is reported before any call.
    pub fn new(token: Option<&str>) -> Result<Self> {
        let header = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(text) => {
                let token = stackd_tls::ClientToken::parse(text)
                    .map_err(|e| anyhow::anyhow!("STACKCTL_TOKEN (--token) is {e}"))?;
                let mut value: MetadataValue<_> = format!("Bearer {}", token.reveal())
                    .parse()
                    .map_err(|_| anyhow::anyhow!("STACKCTL_TOKEN (--token) is not ASCII"))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Self { header })
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.header {
            req.metadata_mut().insert(stackd_proto::metadata::AUTHORIZATION, value.clone());
        }
        Ok(req)
    }
}

/// The TLS client configuration from `--ca`/`STACKCTL_CA` (a path or PEM).
pub(crate) fn tls(g: &Global) -> Result<std::sync::Arc<rustls::ClientConfig>> {
    let Some(ca) = g.ca.as_deref().filter(|c| !c.trim().is_empty()) else {
        bail!(
            "stackctl needs the cluster's CA certificate to check the manager: set STACKCTL_CA or --ca \
             to the path of DATA_DIR/tls/ca.crt or its PEM text ({ENV_HINT})"
        );
    };
    let ca = stackd_tls::read_ca(ca).context("STACKCTL_CA (--ca)")?;
    Ok(stackd_tls::client_config(&ca, None)?)
}

/// Refuses plaintext addresses before anything else is looked at.
pub(crate) fn check_addrs(addrs: &str) -> Result<Vec<&str>> {
    let list: Vec<&str> = addrs.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    if list.is_empty() {
        bail!("no manager address given: set STACKCTL_ADDR or --addr ({ENV_HINT})");
    }
    for addr in &list {
        if addr.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
            bail!("{addr}: stackctl talks TLS only; give host:port or https://host:port");
        }
    }
    Ok(list)
}

/// Connects to the first manager of `--addr` (comma-separated) that answers,
/// over TLS, with the token of `--token` on every call.
pub async fn connect(g: &Global) -> Result<Conn> {
    let addrs = check_addrs(&g.addr)?.into_iter().map(str::to_string).collect();
    let tls = tls(g)?;
    let interceptor = TokenInterceptor::new(g.token.as_ref().map(|t| t.0.as_str()))?;
    Conn::open(addrs, tls, interceptor).await.map_err(|e| explain_ca_mismatch(e, g.ca.as_deref().unwrap_or_default()))
}

/// A connect error that is a certificate signed by another CA becomes what
/// it means: `STACKCTL_CA` is not this cluster's CA (not "cannot reach").
fn explain_ca_mismatch(e: anyhow::Error, ca: &str) -> anyhow::Error {
    let mismatch =
        e.chain().any(|c| c.downcast_ref::<stackd_tls::ConnectError>().is_some_and(|c| c.is_unknown_issuer()));
    if !mismatch {
        return e;
    }
    let given = if ca.contains("-----BEGIN") {
        "given as PEM text in STACKCTL_CA (--ca)".to_string()
    } else {
        format!("in STACKCTL_CA (--ca) {}", ca.trim())
    };
    anyhow::anyhow!(
        "the manager's certificate is not signed by the CA {given}: the CA does not match this cluster. \
         Use the cluster's own CA (DATA_DIR/tls/ca.crt of one of its managers, or the STACKCTL_CA of its \
         stackctl.env), and check that --addr / STACKCTL_ADDR names a manager of that cluster ({})",
        e.root_cause()
    )
}

/// A connection to one of the managers of `--addr`, moving on to the next
/// when the one it talks to is gone (see the module documentation).
pub struct Conn {
    addrs: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
    interceptor: TokenInterceptor,
    /// The index in `addrs` of the manager `client` talks to.
    current: usize,
    client: Client,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("addrs", &self.addrs).field("current", &self.current).finish_non_exhaustive()
    }
}

/// Calls made on the client directly go to the current manager, without
/// moving on (for call sites not converted to [`Conn::read`]/[`Conn::write`]).
impl std::ops::Deref for Conn {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Conn {
    /// Connects to the first of `addrs` that answers.
    async fn open(addrs: Vec<String>, tls: Arc<rustls::ClientConfig>, interceptor: TokenInterceptor) -> Result<Conn> {
        let (current, client) = dial(&addrs, 0, &tls, &interceptor).await?;
        Ok(Conn { addrs, tls, interceptor, current, client })
    }

    /// The client of the current manager.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The address of the current manager.
    pub fn addr(&self) -> &str {
        &self.addrs[self.current]
    }

    /// Connects to the next manager of the list that answers (the current
    /// one last: with a single address, that is a reconnection).
    pub async fn next(&mut self) -> Result<()> {
        let (current, client) = dial(&self.addrs, self.current + 1, &self.tls, &self.interceptor).await?;
        self.current = current;
        self.client = client;
        Ok(())
    }

    /// Runs `call` (a read, or an idempotent write) on the current manager;
    /// when it fails for want of a manager, on the next ones, each once.
    pub async fn read<T, F, Fut>(&mut self, call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.retrying(call, manager_gone).await
    }

    /// Runs the write `call` on the current manager; on the next ones only
    /// when the request surely never reached it (the connection was refused
    /// or had no route): a write whose answer was lost may have been applied.
    pub async fn write<T, F, Fut>(&mut self, call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.retrying(call, stackd_tls::never_connected).await
    }

    async fn retrying<T, F, Fut>(&mut self, mut call: F, retry: fn(&tonic::Status) -> bool) -> Result<T, tonic::Status>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut left = self.addrs.len();
        loop {
            let status = match call(self.client.clone()).await {
                Ok(v) => return Ok(v),
                Err(status) => status,
            };
            left -= 1;
            if left == 0 || !retry(&status) {
                return Err(status);
            }
            let failed = self.addr().to_string();
            // No other manager answers: the first failure says it best.
            if self.next().await.is_err() {
                return Err(status);
            }
            eprintln!("manager {failed} is unavailable ({}); trying {}", status.message(), self.addr());
        }
    }
}

/// Connects to the first of `addrs` that answers, starting at `start` and
/// going round once.
async fn dial(
    addrs: &[String],
    start: usize,
    tls: &Arc<rustls::ClientConfig>,
    interceptor: &TokenInterceptor,
) -> Result<(usize, Client)> {
    let mut last_err = None;
    for k in 0..addrs.len() {
        let i = (start + k) % addrs.len();
        match stackd_tls::channel(&addrs[i], tls.clone()).await {
            Ok(ch) => {
                let client =
                    ControlClient::with_interceptor(ch, interceptor.clone()).max_decoding_message_size(64 << 20);
                return Ok((i, client));
            }
            Err(e) => last_err = Some(anyhow::Error::new(e)),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no manager address given")))
        .context(format!("cannot reach a stackd manager (set --addr or STACKCTL_ADDR, {ENV_HINT})"))
}

/// Whether a call failed for want of a manager: it refused for want of a
/// leader or quorum (`unavailable`), or the connection failed (an error
/// raised on this side, which has a cause; a manager's own refusals have none).
pub(crate) fn manager_gone(status: &tonic::Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal | Code::Cancelled => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// Turns a gRPC status into an error that reads well: the manager's message
/// (never the token), with what was refused when it is about credentials.
pub fn status(s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::Unauthenticated => anyhow::anyhow!("unauthenticated: {}", s.message()),
        tonic::Code::PermissionDenied if !s.message().starts_with("permission denied") => {
            anyhow::anyhow!("permission denied: {}", s.message())
        }
        _ => anyhow::anyhow!("{}", s.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn global(args: &[&str]) -> Global {
        let mut argv = vec!["stackctl"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["node", "ls"]);
        crate::Cli::try_parse_from(argv).expect("arguments").global
    }

    #[tokio::test]
    async fn plaintext_is_refused() {
        let e = connect(&global(&["--addr", "http://127.0.0.1:1", "--ca", "/nonexistent"])).await.expect_err("http");
        assert!(e.to_string().contains("TLS only"), "{e:#}");
        let e = connect(&global(&["--addr", "10.0.0.1:1,HTTP://127.0.0.1:1"])).await.expect_err("http");
        assert!(e.to_string().contains("TLS only"), "{e:#}");
    }

    #[tokio::test]
    async fn a_missing_ca_or_a_bad_token_is_explained() {
        let e = connect(&global(&["--addr", "127.0.0.1:1", "--ca", ""])).await.expect_err("no CA");
        assert!(e.to_string().contains("STACKCTL_CA"), "{e:#}");
        let e = TokenInterceptor::new(Some("STKC-1-secret")).expect_err("bad token");
        let text = format!("{e:#}");
        assert!(text.contains("STACKCTL_TOKEN") && !text.contains("secret"), "{text}");
        let good = stackd_tls::ClientToken::generate();
        let interceptor = TokenInterceptor::new(Some(&good.reveal())).expect("good token");
        assert!(!format!("{interceptor:?}").contains(&good.reveal()));
    }

    use std::task::{Context, Poll};
    use tonic::Code;
    use tonic::body::Body;
    use tonic::codegen::http;

    /// A manager whose Control service answers every call with `code`
    /// (whatever the calls of the API are).
    #[derive(Clone)]
    struct Answer(Code);

    impl tonic::codegen::Service<http::Request<Body>> for Answer {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            std::future::ready(Ok(tonic::Status::new(self.0, format!("answered {:?}", self.0)).into_http()))
        }
    }

    impl tonic::server::NamedService for Answer {
        const NAME: &'static str = "stackd.v1.Control";
    }

    /// Serves `Answer(code)` over TLS; returns its address.
    async fn manager(pki: &stackd_tls::testing::TestPki, code: Code) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::new(Answer(code)))
                .serve_with_incoming(stackd_tls::tls_incoming(listener, pki.server_config("m1"))),
        );
        addr
    }

    /// An address where nothing listens.
    async fn closed_port() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").to_string()
    }

    async fn list_nodes(c: &mut Conn, write: bool) -> Result<v1::ListNodesResponse, tonic::Status> {
        let call = |mut c: Client| async move { c.list_nodes(v1::ListNodesRequest::default()).await };
        let r = if write { c.write(call).await } else { c.read(call).await };
        r.map(tonic::Response::into_inner)
    }

    use stackd_proto::v1;

    #[tokio::test]
    async fn calls_move_on_to_the_next_manager_when_one_is_gone() {
        let pki = stackd_tls::testing::TestPki::new();
        let tls = pki.client_config(None);
        let interceptor = TokenInterceptor::new(None).expect("no token");
        let (closed, unavailable, serving) =
            (closed_port().await, manager(&pki, Code::Unavailable).await, manager(&pki, Code::NotFound).await);
        let addrs = vec![closed.clone(), unavailable.clone(), serving.clone()];

        // The closed port is skipped at connect.
        let mut c = Conn::open(addrs.clone(), tls.clone(), interceptor.clone()).await.expect("connect");
        assert_eq!(c.addr(), unavailable);
        // A read refused with `unavailable` lands on the next manager.
        let e = list_nodes(&mut c, false).await.expect_err("answered");
        assert_eq!((e.code(), c.addr()), (Code::NotFound, serving.as_str()), "{e:?}");
        // A write refused by a manager is not sent again: it may have been applied.
        let mut c = Conn::open(addrs[1..].to_vec(), tls.clone(), interceptor.clone()).await.expect("connect");
        let e = list_nodes(&mut c, true).await.expect_err("answered");
        assert_eq!((e.code(), c.addr()), (Code::Unavailable, unavailable.as_str()), "{e:?}");

        // A connection refused (the manager went away since): the request
        // never left, so even a write goes to the next manager.
        let gone = ControlClient::with_interceptor(
            stackd_tls::lazy_channel(&closed, tls.clone()).expect("lazy channel"),
            interceptor.clone(),
        );
        let mut c = Conn { addrs: vec![closed.clone(), serving.clone()], tls, interceptor, current: 0, client: gone };
        let e = list_nodes(&mut c, true).await.expect_err("answered");
        assert_eq!((e.code(), c.addr()), (Code::NotFound, serving.as_str()), "{e:?}");

        // Nobody answers: the connect error says so, without a token.
        let e = Conn::open(vec![closed], pki.client_config(None), TokenInterceptor::new(None).expect("none"))
            .await
            .expect_err("nobody");
        assert!(format!("{e:#}").contains("cannot reach a stackd manager"), "{e:#}");
    }

    #[tokio::test]
    async fn a_ca_of_another_cluster_is_named_as_such() {
        let (ours, theirs) = (stackd_tls::testing::TestPki::new(), stackd_tls::testing::TestPki::for_cluster("other"));
        let addr = manager(&ours, Code::NotFound).await;
        let dir = std::env::temp_dir().join(format!("stackctl-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, theirs.ca.cert_pem()).expect("write CA");
        let ca_arg = ca.display().to_string();
        let e = connect(&global(&["--addr", &addr, "--ca", &ca_arg])).await.expect_err("wrong CA");
        let text = format!("{e:#}");
        assert!(
            text.starts_with(&format!(
                "the manager's certificate is not signed by the CA in STACKCTL_CA (--ca) {ca_arg}: the CA does not match this cluster"
            )),
            "{text}"
        );
        assert!(!text.contains("cannot reach"), "{text}");
        // The PEM text itself is not printed, only said to be given.
        let e = connect(&global(&["--addr", &addr, &format!("--ca={}", theirs.ca.cert_pem())]))
            .await
            .expect_err("wrong CA");
        let text = format!("{e:#}");
        assert!(text.contains("not signed by the CA given as PEM text in STACKCTL_CA (--ca)"), "{text}");
        assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
        // The right CA connects.
        std::fs::write(&ca, ours.ca.cert_pem()).expect("write CA");
        connect(&global(&["--addr", &addr, "--ca", &ca_arg])).await.expect("the cluster's CA");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
