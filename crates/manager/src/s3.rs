//! A small S3 client for snapshot files: put, get, list and delete objects
//! in one bucket of any S3-compatible server (AWS, MinIO, Ceph, Garage, …).
//!
//! Requests are signed with AWS Signature V4 as presigned URLs by
//! `rusty-s3` (no I/O of its own), and sent over one HTTP/1.1 connection
//! each with hyper, through rustls with ring for `https://` endpoints (the
//! system's roots, `/etc/ssl/certs/ca-certificates.crt`). Path-style URLs
//! (`ENDPOINT/BUCKET/KEY`), which every S3-compatible server accepts.
//! Credentials come from a file or the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), never from the cluster
//! state.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(300);
/// How long one request may take (a snapshot of 100 MB on a slow link).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// The system's trust roots, for `https://` endpoints.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why an S3 call failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The target's endpoint or bucket is not usable.
    #[error("S3 target: {0}")]
    Target(String),
    /// No credentials in the file or the environment.
    #[error("S3 credentials: {0}")]
    Credentials(String),
    /// The connection failed.
    #[error("S3 {endpoint}: {message}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The server answered with an error status.
    #[error("S3 {method} {key}: {status}: {body}")]
    Status {
        /// The request's method.
        method: String,
        /// The object key (or the listing's prefix).
        key: String,
        /// The HTTP status.
        status: u16,
        /// The start of the server's answer.
        body: String,
    },
    /// A listing that does not parse.
    #[error("S3 listing: {0}")]
    Listing(String),
    /// The request took too long.
    #[error("S3 {0}: timed out after {REQUEST_TIMEOUT:?}")]
    Timeout(String),
}

/// An object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written (as the server says it, RFC 3339).
    pub last_modified: String,
}

/// One bucket on one endpoint, with credentials.
pub struct Client {
    bucket: Bucket,
    credentials: Credentials,
    endpoint: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Reads credentials from `file` (lines `aws_access_key_id = …` and
/// `aws_secret_access_key = …`, as in `~/.aws/credentials`, or the
/// `AWS_ACCESS_KEY_ID=…` form of an environment file) or, without a file,
/// from the environment.
pub fn credentials(file: Option<&Path>) -> Result<Credentials, S3Error> {
    let Some(file) = file else {
        return Credentials::from_env().ok_or_else(|| {
            S3Error::Credentials("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give a credentials file".into())
        });
    };
    let text =
        std::fs::read_to_string(file).map_err(|e| S3Error::Credentials(format!("reading {}: {e}", file.display())))?;
    let (mut key, mut secret) = (None, None);
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with('[')) {
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => key = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            _ => {}
        }
    }
    match (key, secret) {
        (Some(k), Some(s)) if !k.is_empty() && !s.is_empty() => Ok(Credentials::new(k, s)),
        _ => {
            Err(S3Error::Credentials(format!("{} has no aws_access_key_id and aws_secret_access_key", file.display())))
        }
    }
}

impl Client {
    /// A client of `bucket` at `endpoint` (`http://host:port` or `https://…`).
    pub fn new(endpoint: &str, bucket: &str, region: &str, credentials: Credentials) -> Result<Self, S3Error> {
        let url: url::Url = endpoint.parse().map_err(|e| S3Error::Target(format!("endpoint {endpoint:?}: {e}")))?;
        let tls = match url.scheme() {
            "https" => Some(system_tls()?),
            "http" => None,
            other => return Err(S3Error::Target(format!("endpoint {endpoint:?}: scheme {other} (http or https)"))),
        };
        let region = if region.is_empty() { "us-east-1" } else { region };
        let bucket = Bucket::new(url, UrlStyle::Path, bucket.to_string(), region.to_string())
            .map_err(|e| S3Error::Target(format!("bucket {bucket:?} at {endpoint}: {e}")))?;
        Ok(Self { bucket, credentials, endpoint: endpoint.to_string(), tls })
    }

    /// Writes `body` to `key`.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        let url = self.bucket.put_object(Some(&self.credentials), key).sign(SIGNED_FOR);
        self.send(Method::PUT, &url, key, body).await.map(drop)
    }

    /// Reads `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes, S3Error> {
        let url = self.bucket.get_object(Some(&self.credentials), key).sign(SIGNED_FOR);
        self.send(Method::GET, &url, key, Vec::new()).await
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let url = self.bucket.delete_object(Some(&self.credentials), key).sign(SIGNED_FOR);
        self.send(Method::DELETE, &url, key, Vec::new()).await.map(drop)
    }

    /// Creates the bucket (tests, and a first set-up).
    pub async fn create_bucket(&self) -> Result<(), S3Error> {
        let url = self.bucket.create_bucket(&self.credentials).sign(SIGNED_FOR);
        self.send(Method::PUT, &url, "", Vec::new()).await.map(drop)
    }

    /// Every object under `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Object>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.clone());
            }
            let url = action.sign(SIGNED_FOR);
            let body = self.send(Method::GET, &url, prefix, Vec::new()).await?;
            let page = ListObjectsV2::parse_response(&body).map_err(|e| S3Error::Listing(e.to_string()))?;
            out.extend(page.contents.into_iter().map(|c| Object {
                key: c.key,
                size: c.size,
                last_modified: c.last_modified,
            }));
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn send(&self, method: Method, url: &url::Url, key: &str, body: Vec<u8>) -> Result<Bytes, S3Error> {
        let what = format!("{method} {key}");
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, url, key, body))
            .await
            .map_err(|_| S3Error::Timeout(what))?
    }

    async fn exchange(&self, method: Method, url: &url::Url, key: &str, body: Vec<u8>) -> Result<Bytes, S3Error> {
        let connect = |message: String| S3Error::Connect { endpoint: self.endpoint.clone(), message };
        let host = url.host_str().ok_or_else(|| connect("no host".into()))?.to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let req = Request::builder()
            .method(method.clone())
            .uri(target)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| connect(e.to_string()))?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| connect(e.to_string()))?;
        let resp = match &self.tls {
            None => request(TokioIo::new(tcp), req).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| connect(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| connect(format!("TLS: {e}")))?;
                request(TokioIo::new(stream), req).await
            }
        }
        .map_err(connect)?;
        let (status, bytes) = resp;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            return Err(S3Error::Status {
                method: method.to_string(),
                key: key.to_string(),
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(bytes)
    }
}

async fn request<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, bytes))
}

fn system_tls() -> Result<Arc<rustls::ClientConfig>, S3Error> {
    let pem = std::fs::read_to_string(SYSTEM_ROOTS)
        .map_err(|e| S3Error::Target(format!("reading the system's trust roots {SYSTEM_ROOTS}: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in stackd_tls::certs_from_pem(&pem).map_err(|e| S3Error::Target(e.to_string()))? {
        // A root the parser does not take is skipped, as a browser does.
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(stackd_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| S3Error::Target(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Splits `s3://bucket/key` into its bucket and key.
pub fn parse_url(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty()).then_some((bucket, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_of_both_shapes_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let aws = dir.path().join("aws");
        std::fs::write(&aws, "[default]\naws_access_key_id = AKID\naws_secret_access_key = s3cr3t\n").expect("w");
        let c = credentials(Some(&aws)).expect("aws shape");
        assert_eq!((c.key(), c.secret()), ("AKID", "s3cr3t"));
        let env = dir.path().join("env");
        std::fs::write(&env, "AWS_ACCESS_KEY_ID='AKID2'\nAWS_SECRET_ACCESS_KEY=x\n").expect("w");
        assert_eq!(credentials(Some(&env)).expect("env shape").key(), "AKID2");
        std::fs::write(&env, "AWS_ACCESS_KEY_ID=only\n").expect("w");
        assert!(credentials(Some(&env)).is_err());
    }

    #[test]
    fn s3_urls_split_into_bucket_and_key() {
        assert_eq!(parse_url("s3://b/p/k.snap"), Some(("b", "p/k.snap")));
        assert_eq!(parse_url("s3://b/"), None);
        assert_eq!(parse_url("/tmp/x"), None);
    }
}
