//! Connecting to a manager: TLS only, with the cluster's CA, and the client
//! token in every call's `authorization` metadata.

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
            req.metadata_mut().insert("authorization", value.clone());
        }
        Ok(req)
    }
}

/// The TLS client configuration from `--ca`/`STACKCTL_CA` (a path or PEM).
fn tls(g: &Global) -> Result<std::sync::Arc<rustls::ClientConfig>> {
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
fn check_addrs(addrs: &str) -> Result<Vec<&str>> {
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
pub async fn connect(g: &Global) -> Result<Client> {
    let addrs = check_addrs(&g.addr)?;
    let tls = tls(g)?;
    let interceptor = TokenInterceptor::new(g.token.as_ref().map(|t| t.0.as_str()))?;
    let mut last_err = None;
    for addr in addrs {
        match stackd_tls::channel(addr, tls.clone()).await {
            Ok(ch) => {
                return Ok(ControlClient::with_interceptor(ch, interceptor).max_decoding_message_size(64 << 20));
            }
            Err(e) => last_err = Some(anyhow::Error::new(e)),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no manager address given")))
        .context(format!("cannot reach a stackd manager (set --addr or STACKCTL_ADDR, {ENV_HINT})"))
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
}
