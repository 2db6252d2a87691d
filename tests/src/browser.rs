//! A real headless browser for the tests: Debian's `chromium`, driven by
//! `chromedriver` (WebDriver: JSON over plain HTTP on 127.0.0.1, spoken
//! here with std's `TcpStream`, no client crate). The browser trusts the
//! cluster's CA through an NSS database of its own (`certutil`, Debian's
//! `libnss3-tools`) and resolves `stackd-manager` — the name in every
//! manager certificate — to 127.0.0.1: it checks the status page's
//! certificate as any browser would, no certificate error ignored.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether the browser and its tools are installed; with `CI=true` their
/// absence fails the test (scripts/test.sh installs them).
pub fn available() -> bool {
    let found = ["chromium", "chromedriver", "certutil"].iter().all(|c| {
        Command::new("sh").args(["-c", &format!("command -v {c}")]).output().is_ok_and(|o| o.status.success())
    });
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "chromium, chromedriver or certutil is missing (scripts/test.sh installs chromium, chromium-driver and libnss3-tools)"
    );
    found
}

/// One `METHOD path` to the driver at `port`: the answer's JSON `value`.
fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect to chromedriver")?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // chromedriver keeps the connection open: read the head, then as many
    // bytes as its Content-Length says (it never answers chunked).
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("{method} {path}: the connection closed before an answer");
        }
        bytes.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
    let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("a status code")?;
    let length: Option<usize> = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
    });
    let mut body_bytes = bytes[head_end..].to_vec();
    match length {
        Some(n) => {
            while body_bytes.len() < n {
                let got = s.read(&mut buf)?;
                if got == 0 {
                    break;
                }
                body_bytes.extend_from_slice(&buf[..got]);
            }
            body_bytes.truncate(n);
        }
        None => {
            s.read_to_end(&mut body_bytes)?;
        }
    }
    let json_text = String::from_utf8_lossy(&body_bytes).to_string();
    let v: Value = serde_json::from_str(&json_text).with_context(|| format!("{method} {path}: {json_text}"))?;
    if code != 200 {
        bail!("{method} {path}: HTTP {code}: {}", v["value"]);
    }
    Ok(v["value"].clone())
}

/// A headless chromium session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    /// HOME of the browser: its NSS database, its profile.
    _home: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless chromium that trusts the CA in
    /// `ca_pem` and reaches `stackd-manager` at 127.0.0.1.
    pub fn start(ca_pem: &Path) -> Result<Browser> {
        let home = tempfile::Builder::new().prefix("stackd-browser-").tempdir()?;
        let nssdb = home.path().join(".pki/nssdb");
        std::fs::create_dir_all(&nssdb)?;
        let db = format!("sql:{}", nssdb.display());
        for args in [
            vec!["-d", &db, "-N", "--empty-password"],
            vec!["-d", &db, "-A", "-t", "C,,", "-n", "stackd-cluster-ca", "-i", &ca_pem.to_string_lossy()],
        ] {
            let out = Command::new("certutil").args(&args).output().context("certutil")?;
            if !out.status.success() {
                bail!("certutil {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let port = crate::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("HOME", home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start chromedriver")?;
        let mut browser = Browser { driver, port, session: String::new(), _home: home };
        let deadline = Instant::now() + Duration::from_secs(20);
        while call(port, "GET", "/status", None).is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not answer within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = browser._home.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                    "--host-resolver-rules=MAP stackd-manager 127.0.0.1",
                ],
            },
        }}});
        let v = call(port, "POST", "/session", Some(&caps))?;
        browser.session = v["sessionId"].as_str().context("a session id")?.to_string();
        Ok(browser)
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Loads `url`.
    pub fn goto(&self, url: &str) -> Result<()> {
        call(self.port, "POST", &self.path("/url"), Some(&json!({ "url": url }))).map(drop)
    }

    /// The URL the browser shows.
    pub fn url(&self) -> Result<String> {
        Ok(call(self.port, "GET", &self.path("/url"), None)?.as_str().unwrap_or_default().to_string())
    }

    /// The page as the browser has it (the DOM, serialised).
    pub fn source(&self) -> Result<String> {
        Ok(call(self.port, "GET", &self.path("/source"), None)?.as_str().unwrap_or_default().to_string())
    }

    /// The first element `css` selects, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let v = call(self.port, "POST", &self.path("/element"), Some(&json!({"using": "css selector", "value": css})));
        v.ok()?[ELEMENT].as_str().map(String::from)
    }

    /// Waits (up to 15 s) until `css` selects an element: a click's
    /// navigation may still be under way when the click returns.
    pub fn wait_for(&self, css: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.find(css).is_none() {
            if Instant::now() > deadline {
                bail!("no element {css} after 15 s in:\n{}", self.source().unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Waits (up to 15 s) until the browser shows `url`: a navigation's
    /// redirect may still be under way when `goto` returns (seen once, on a
    /// chromium started for the first time after its installation).
    pub fn wait_url(&self, url: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = self.url()?;
            if now == url {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the browser shows {now}, not {url}, after 15 s:\n{}", self.source().unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn element(&self, css: &str) -> Result<String> {
        self.find(css).with_context(|| format!("no element {css} in:\n{}", self.source().unwrap_or_default()))
    }

    /// The rendered text of the element `css` selects.
    pub fn text(&self, css: &str) -> Result<String> {
        let el = self.element(css)?;
        Ok(call(self.port, "GET", &self.path(&format!("/element/{el}/text")), None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Types `text` into the element `css` selects.
    pub fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let el = self.element(css)?;
        call(self.port, "POST", &self.path(&format!("/element/{el}/value")), Some(&json!({ "text": text }))).map(drop)
    }

    /// Clicks the element `css` selects (and waits for the navigation it starts).
    pub fn click(&self, css: &str) -> Result<()> {
        let el = self.element(css)?;
        call(self.port, "POST", &self.path(&format!("/element/{el}/click")), Some(&json!({}))).map(drop)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = call(self.port, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
