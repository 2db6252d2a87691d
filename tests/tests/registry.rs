//! Private registries on real engines: Debian's `docker-registry` (Docker's
//! distribution), started by the test with htpasswd auth and TLS from a test
//! CA, listening on the test LAN's bridge address, which every node's engine
//! reaches. Each engine trusts the CA through `/etc/docker/certs.d/<host:port>/`
//! (read by every dockerd of the host at pull time: the engines share the
//! host's filesystem). The host's engine pushes a locally built image into it
//! (`docker login` with a temporary DOCKER_CONFIG).
//!
//! A deploy without `--with-registry-auth` fails its tasks with a clear
//! error; with it (credentials from a config.json or DOCKER_AUTH_CONFIG) the
//! tasks of every node pull and run; a redeploy without the flag keeps the
//! stack's credentials; wrong credentials are named as refused; the
//! credentials are never printed by stackctl nor written in a log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use stackd_tests::engines::Engines;
use stackd_tests::netns::require_root;
use stackd_tests::{Opts, build_images, require_docker, wait_until};

const USER: &str = "ci-deployer";
const PASSWORD: &str = "s3cret-Regi5try-pw";
/// Where every dockerd of the host looks for a registry's CA.
const CERTS_ROOT: &str = "/etc/docker/certs.d";

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A registry process of the test's own, with the CA trusted by every
/// engine of the host for its address; stopped and untrusted on drop.
struct Registry {
    child: Child,
    /// host:port.
    addr: String,
    dir: tempfile::TempDir,
    certs_d: PathBuf,
    /// Whether the test created `/etc/docker/certs.d` (removed again, if empty).
    created_certs_root: bool,
}

impl Registry {
    fn start(host: std::net::Ipv4Addr) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let port = stackd_tests::free_port();
        let addr = format!("{host}:{port}");
        let file = |name: &str| d.join(name).display().to_string();
        // A test CA and a server certificate for the bridge address.
        run(Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]).args([
            "-subj",
            "/CN=stackd test registry CA",
            "-keyout",
            &file("ca.key"),
            "-out",
            &file("ca.crt"),
        ]));
        run(Command::new("openssl").args(["req", "-newkey", "rsa:2048", "-nodes", "-subj"]).args([
            &format!("/CN={host}"),
            "-keyout",
            &file("server.key"),
            "-out",
            &file("server.csr"),
        ]));
        std::fs::write(d.join("ext.cnf"), format!("subjectAltName=IP:{host}\n")).expect("ext");
        run(Command::new("openssl").args(["x509", "-req", "-days", "1", "-CAcreateserial"]).args([
            "-in",
            &file("server.csr"),
            "-CA",
            &file("ca.crt"),
            "-CAkey",
            &file("ca.key"),
            "-out",
            &file("server.crt"),
            "-extfile",
            &file("ext.cnf"),
        ]));
        // distribution's htpasswd auth reads bcrypt only.
        let htpasswd = run(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
        std::fs::write(d.join("htpasswd"), htpasswd).expect("htpasswd");
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: {addr}\n  tls:\n    certificate: {crt}\n    key: {key}\n\
             auth:\n  htpasswd:\n    realm: stackd-test\n    path: {pw}\n",
            root = file("data"),
            crt = file("server.crt"),
            key = file("server.key"),
            pw = file("htpasswd"),
        );
        std::fs::write(d.join("config.yml"), config).expect("config");
        let created_certs_root = !Path::new(CERTS_ROOT).exists();
        let certs_d = Path::new(CERTS_ROOT).join(&addr);
        std::fs::create_dir_all(&certs_d).expect("certs.d");
        std::fs::copy(d.join("ca.crt"), certs_d.join("ca.crt")).expect("trust the CA");
        let log = std::fs::File::create(d.join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let r = Registry { child, addr, dir, certs_d, created_certs_root };
        wait_until(Duration::from_secs(20), "the registry listening", || {
            std::net::TcpStream::connect(&r.addr).ok().map(|_| ())
        });
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.certs_d);
        if self.created_certs_root {
            let _ = std::fs::remove_dir(CERTS_ROOT);
        }
    }
}

/// A DOCKER_CONFIG dir whose config.json holds `auth` for `registry`.
fn docker_config(registry: &str, user: &str, password: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = auth_json(registry, user, password);
    std::fs::write(dir.path().join("config.json"), &json).expect("config.json");
    let path = dir.path().display().to_string();
    (dir, path)
}

/// The JSON of a config.json (and of GitLab's DOCKER_AUTH_CONFIG).
fn auth_json(registry: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::json!({ "auths": { registry: { "auth": auth } } }).to_string()
}

/// A global service of `image` (busybox) that sleeps; `marker` in its
/// environment tells the revisions apart.
fn stack(image: &str, marker: &str) -> String {
    format!(
        "services:\n  app:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    init: true\n    \
         stop_grace_period: 1s\n    pull_policy: always\n    environment:\n      MARKER: \"{marker}\"\n    \
         deploy:\n      mode: global\n      restart_policy:\n        delay: 1s\n      update_config:\n        \
         monitor: 1s\n"
    )
}

/// The first task of `stack` whose error contains `needle`, once there is one.
fn failed_with(c: &Engines, stack: &str, needle: &str) -> serde_json::Value {
    let m = c.node(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let v = m.stackctl_json(&["ps", stack, "--no-trunc"]);
        let found = v
            .as_array()
            .and_then(|a| a.iter().find(|t| t["error"].as_str().is_some_and(|e| e.contains(needle))).cloned());
        if let Some(t) = found {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no task of {stack} failed with {needle:?}: {v:#}\n{}",
            c.cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until each node's engine runs one container of `stack` with `marker`.
fn runs_everywhere(c: &Engines, stack: &str, marker: &str) {
    for i in 0..2 {
        wait_until(Duration::from_secs(90), &format!("node {i} running {stack} ({marker})"), || {
            let o = c
                .docker(i)
                .args(["ps", "--filter", &format!("label=io.stackd.stack={stack}"), "--format", "{{.ID}}"])
                .output()
                .ok()?;
            let ids = String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect::<Vec<_>>();
            ids.iter()
                .any(|id| {
                    c.docker(i)
                        .args(["inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", id])
                        .output()
                        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("MARKER={marker}")))
                })
                .then_some(())
        });
    }
}

#[test]
fn private_registry_pulls_with_the_deploys_credentials_only() {
    if !require_docker() || !require_root() {
        return;
    }
    build_images();
    let c = Engines::start(2, 1, &Opts::default()).expect("two nodes with an engine each");
    let registry = Registry::start(c.net.host_addr());
    let reg = registry.addr.clone();
    // Each step pulls a name no node has pulled yet: an engine does not ask
    // the registry again for a digest it pulled before (its content store
    // keeps the manifest; a revision runs the digest its node resolved), so
    // only a new name shows what the registry says. One image, four names.
    let image = format!("{reg}/private/busybox:1");
    let kept_image = format!("{reg}/private/kept:1");
    let gitlab_image = format!("{reg}/private/gitlab:1");
    let wrong_image = format!("{reg}/private/wrong:1");
    let after_image = format!("{reg}/private/after:1");

    // The host's engine pushes the images, logged in with a config of the test's own.
    let (_push_config, push_dir) = docker_config(&reg, USER, PASSWORD);
    let host_docker = || {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_CONFIG", &push_dir);
        cmd
    };
    for (local, private) in [
        ("stackd-test/busybox:1", &image),
        ("stackd-test/busybox:1", &kept_image),
        ("stackd-test/busybox:1", &gitlab_image),
        ("stackd-test/busybox:1", &wrong_image),
        ("stackd-test/busybox:1", &after_image),
    ] {
        run(host_docker().args(["tag", local, private]));
        let pushed = host_docker().args(["push", private]).output().expect("docker push");
        let _ = host_docker().args(["rmi", private]).output();
        assert!(
            pushed.status.success(),
            "docker push: {}{}\nregistry log:\n{}",
            String::from_utf8_lossy(&pushed.stdout),
            String::from_utf8_lossy(&pushed.stderr),
            registry.log()
        );
    }
    // The registry demands credentials: a pull without any is refused.
    let anonymous = tempfile::tempdir().expect("temp dir");
    let o = c.docker(0).env("DOCKER_CONFIG", anonymous.path()).args(["pull", &image]).output().expect("docker pull");
    assert!(!o.status.success(), "the registry let an anonymous pull through");

    let m = c.node(0);
    let file = m.write_stack("private.yml", &stack(&image, "one"));
    let no_env: [&str; 2] = ["DOCKER_AUTH_CONFIG", "DOCKER_CONFIG"];

    // 1. Without --with-registry-auth: the tasks fail, saying why.
    let o = m.stackctl_output_unset(&["deploy", "-c", &file, "app"], &no_env, &[]).expect("stackctl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let task = failed_with(
        &c,
        "app",
        &format!(
            "pull access denied for registry {reg}: no credentials were sent with the deploy (stackctl deploy --with-registry-auth)"
        ),
    );
    assert_eq!(task["current_state"], "rejected", "{task:#}");

    // 2. With it, from a config.json (DOCKER_CONFIG): every node pulls and runs the image.
    let (_config, config_dir) = docker_config(&reg, USER, PASSWORD);
    let file = m.write_stack("private.yml", &stack(&image, "two"));
    let deploy = ["deploy", "-c", &file, "app", "--with-registry-auth", "--wait", "--timeout", "120s"];
    let o = m.stackctl_output_unset(&deploy, &no_env, &[("DOCKER_CONFIG", &config_dir)]).expect("stackctl");
    assert!(
        o.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        c.cluster.logs()
    );
    let mut printed = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    runs_everywhere(&c, "app", "two");
    // The tag was resolved to a digest with the stack's credentials: every
    // replica runs the same image.
    let inspect = m.stackctl(&["service", "inspect", "app_app"]);
    assert!(inspect.contains(&format!("Runs:      {reg}/private/busybox@sha256:")), "{inspect}");

    // 3. A redeploy without the flag keeps the stack's credentials: the new
    //    tasks pull a new image with them and run.
    let file = m.write_stack("private.yml", &stack(&kept_image, "three"));
    let deploy = ["deploy", "-c", &file, "app", "--wait", "--timeout", "120s"];
    let o = m.stackctl_output_unset(&deploy, &no_env, &[]).expect("stackctl");
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    runs_everywhere(&c, "app", "three");

    // 4. Another stack, with GitLab's DOCKER_AUTH_CONFIG: it runs too.
    let other = m.write_stack("other.yml", &stack(&gitlab_image, "gitlab"));
    let gitlab = auth_json(&reg, USER, PASSWORD);
    let deploy = ["deploy", "-c", &other, "other", "--with-registry-auth", "--wait", "--timeout", "120s"];
    let o = m.stackctl_output_unset(&deploy, &no_env, &[("DOCKER_AUTH_CONFIG", &gitlab)]).expect("stackctl");
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    printed += &String::from_utf8_lossy(&o.stdout);
    printed += &String::from_utf8_lossy(&o.stderr);
    runs_everywhere(&c, "other", "gitlab");

    // 5. Wrong credentials replace the stack's: the registry refuses them, and the task says so.
    let wrong = auth_json(&reg, USER, "not-the-password");
    let other_file = m.write_stack("other.yml", &stack(&wrong_image, "wrong"));
    let deploy = ["deploy", "-c", &other_file, "other", "--with-registry-auth"];
    let o = m.stackctl_output_unset(&deploy, &no_env, &[("DOCKER_AUTH_CONFIG", &wrong)]).expect("stackctl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    failed_with(
        &c,
        "other",
        &format!("pull access denied for registry {reg}: the registry refused the credentials sent with the deploy"),
    );

    // 6. A credential helper that stackctl does not run: the deploy stops, naming the registry.
    let helper = serde_json::json!({ "auths": { reg.as_str(): {} }, "credsStore": "desktop" }).to_string();
    let deploy = ["deploy", "-c", &file, "app", "--with-registry-auth"];
    let o = m.stackctl_output_unset(&deploy, &no_env, &[("DOCKER_AUTH_CONFIG", &helper)]).expect("stackctl");
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&reg) && err.contains("docker-credential-desktop"), "{err}");

    // 7. Removed with the stack: the agents forget them too. The same name
    //    deployed again without the flag has none, and its tasks say so.
    m.stackctl(&["stack", "rm", "other"]);
    wait_until(Duration::from_secs(60), "the other stack's containers gone", || {
        (0..2)
            .all(|i| {
                let o = c.docker(i).args(["ps", "-aq", "--filter", "label=io.stackd.stack=other"]).output();
                o.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim().is_empty())
            })
            .then_some(())
    });
    let again = m.write_stack("again.yml", &stack(&after_image, "after"));
    let o = m.stackctl_output_unset(&["deploy", "-c", &again, "other"], &no_env, &[]).expect("stackctl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    failed_with(
        &c,
        "other",
        &format!(
            "pull access denied for registry {reg}: no credentials were sent with the deploy (stackctl deploy --with-registry-auth)"
        ),
    );

    // Never printed: not by any listing or inspection, nor in any node's log.
    let stacks = m.stackctl_json(&["stack", "ls"]);
    printed += &stacks.to_string();
    let app = stacks.as_array().and_then(|a| a.iter().find(|s| s["name"] == "app")).expect("app in stack ls");
    assert_eq!(app["registries"], reg.as_str(), "stack ls names the registry: {stacks}");
    for args in [
        vec!["service", "inspect", "app_app", "-o", "json"],
        vec!["service", "inspect", "other_app", "-o", "json"],
        vec!["service", "ls", "-o", "json"],
        vec!["ps", "app", "-o", "json"],
        vec!["ps", "other", "-o", "json"],
        vec!["events", "-o", "json"],
        vec!["config", "-c", &file, "--stack", "app"],
    ] {
        printed += &m.stackctl(&args);
    }
    for n in &c.cluster.nodes {
        printed += &n.log();
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    for secret in [PASSWORD, "not-the-password", basic.as_str()] {
        assert!(!printed.contains(secret), "{secret:?} was printed");
    }
    assert!(printed.contains(&image), "the listings were read");

    for stack in ["app", "other"] {
        m.stackctl(&["stack", "rm", stack]);
    }
}
