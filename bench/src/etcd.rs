//! The etcd contender of the Raft benchmark: three `etcd` members (Debian's
//! etcd-server, 3.4) on 127.0.0.1 with their own data dirs, and a minimal
//! gRPC client (`KV.Put` only, from bench/proto/etcd.proto).
//!
//! etcd runs with its defaults (fsync on every commit), either plaintext or
//! with TLS everywhere as stackd has it ([`Transport::Tls`]: clients over
//! TLS, peers with mutual TLS, certificates from a CA made for the run). The
//! members and their data dirs are removed when the [`Cluster`] is dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tonic::transport::Channel;

/// The generated etcd client (package `etcdserverpb`).
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;

/// How long one Put may take before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// The etcd binary: `$ETCD`, else `/usr/bin/etcd`.
fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// The version `etcd --version` prints first, e.g. `3.4.23`.
pub fn version() -> Result<String> {
    let out = Command::new(etcd_bin()).arg("--version").output().with_context(|| {
        format!("running {} --version (bench/run.sh raft installs etcd-server)", etcd_bin().display())
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("").trim();
    Ok(first.strip_prefix("etcd Version:").unwrap_or(first).trim().to_string())
}

/// A free TCP port on 127.0.0.1 (bound, then released for etcd to take).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr().context("local address of a free port")?.port())
}

/// How clients and peers reach the members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `http://` everywhere (etcd's default).
    Plain,
    /// Client URLs `https://` (server certificate), peer URLs `https://`
    /// with client certificates: what stackd always does.
    Tls,
}

/// The certificate files of a TLS run, and the CA clients trust.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca_der: rustls::pki_types::CertificateDer<'static>,
}

/// Makes a CA and one certificate for every member (they all listen on
/// 127.0.0.1), valid as server and as client (peers present it), naming
/// 127.0.0.1 for the peers and stackd's server name for the bench's client.
fn make_certs(dir: &std::path::Path) -> Result<Certs> {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(vec![stackd_tls::SERVER_NAME.to_string(), "localhost".into(), "127.0.0.1".into()])?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &Issuer::new(ca_params, &ca_key))?;
    let certs = Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("member.pem"),
        key: dir.join("member-key.pem"),
        ca_der: ca.der().clone(),
    };
    std::fs::write(&certs.ca, ca.pem())?;
    std::fs::write(&certs.cert, cert.pem())?;
    std::fs::write(&certs.key, key.serialize_pem())?;
    Ok(certs)
}

/// One etcd member process.
struct Member {
    name: String,
    client_port: u16,
    log: PathBuf,
    child: Child,
}

/// Three etcd members forming one fresh cluster, and a client per member.
pub struct Cluster {
    members: Vec<Member>,
    clients: Vec<KvClient<Channel>>,
    /// Data dirs and logs: removed after `Drop` has killed the members.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// The process ids of the members.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.child.id()).collect()
    }

    /// Starts `n` members (`--initial-cluster-state new`) reached over
    /// `transport` and waits until a Put succeeds through every member.
    pub async fn start(n: usize, transport: Transport) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("stackd-bench-etcd").tempdir().context("creating a temp dir")?;
        let certs = match transport {
            Transport::Plain => None,
            Transport::Tls => Some(make_certs(dir.path()).context("making the etcd certificates")?),
        };
        let scheme = if certs.is_some() { "https" } else { "http" };
        let mut ports = Vec::new();
        for _ in 0..n {
            ports.push((free_port()?, free_port()?));
        }
        let initial: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, p))| format!("e{}={scheme}://127.0.0.1:{p}", i + 1)).collect();
        let initial = initial.join(",");
        let token = format!("stackd-bench-{}", std::process::id());
        let mut cluster = Cluster { members: Vec::new(), clients: Vec::new(), dir };
        for (i, (c, p)) in ports.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let data = cluster.dir.path().join(&name);
            let log = cluster.dir.path().join(format!("{name}.log"));
            let logf = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let errf = logf.try_clone().context("cloning the log file handle")?;
            let client_url = format!("{scheme}://127.0.0.1:{c}");
            let peer_url = format!("{scheme}://127.0.0.1:{p}");
            let mut cmd = Command::new(etcd_bin());
            if let Some(certs) = &certs {
                cmd.arg("--cert-file").arg(&certs.cert).arg("--key-file").arg(&certs.key);
                cmd.arg("--peer-cert-file").arg(&certs.cert).arg("--peer-key-file").arg(&certs.key);
                cmd.arg("--peer-trusted-ca-file").arg(&certs.ca).arg("--peer-client-cert-auth");
            }
            let child = cmd
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .stdin(Stdio::null())
                .stdout(logf)
                .stderr(errf)
                .spawn()
                .with_context(|| {
                    format!("starting {} (bench/run.sh raft installs etcd-server)", etcd_bin().display())
                })?;
            cluster.members.push(Member { name, client_port: *c, log, child });
        }
        for m in &cluster.members {
            let ch = match &certs {
                None => Channel::from_shared(format!("http://127.0.0.1:{}", m.client_port))
                    .context("etcd client URI")?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(OP_TIMEOUT)
                    .connect_lazy(),
                // The connector stackd's own clients use (it names the server SERVER_NAME).
                Some(certs) => {
                    let tls = stackd_tls::client_config(&certs.ca_der, None).context("etcd client TLS config")?;
                    stackd_tls::lazy_channel(&format!("127.0.0.1:{}", m.client_port), tls)
                        .context("etcd client channel")?
                }
            };
            cluster.clients.push(KvClient::new(ch));
        }
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Waits until a Put succeeds through every member.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.clients.len() {
            loop {
                let mut c = self.clients[i].clone();
                let r = put(&mut c, b"stackd-bench/ready".to_vec(), b"1".to_vec()).await;
                match r {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => {
                        let m = &mut self.members[i];
                        let exited = m.child.try_wait().ok().flatten();
                        let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(15).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        bail!(
                            "etcd member {} not ready after {timeout:?} (exit: {exited:?}): {e:#}\n{}",
                            m.name,
                            tail.join("\n")
                        );
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        Ok(())
    }

    /// The client of each member, in member order.
    pub fn clients(&self) -> Vec<KvClient<Channel>> {
        self.clients.clone()
    }
}

/// One Put of `key` = `value`.
pub async fn put(client: &mut KvClient<Channel>, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
    let req = pb::PutRequest { key, value, ..Default::default() };
    tokio::time::timeout(OP_TIMEOUT, client.put(req)).await.context("etcd Put timed out")?.context("etcd Put")?;
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
        // `dir` (the data dirs and logs) is removed when it drops, after this.
    }
}
