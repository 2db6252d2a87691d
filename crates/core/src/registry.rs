//! Registry credentials: what `stackctl deploy --with-registry-auth` reads
//! from the client's Docker configuration, sends with the deploy, and the
//! cluster keeps per stack (like a secret: never printed, never logged, not
//! in `Debug` output) for the agents to pull the stack's images with.
//!
//! Pure: the caller reads the file or the environment variable and passes
//! its text; [`registry_of`] tells which registry an image comes from, and
//! [`registry_key`] turns a key of `config.json`'s `auths` into the same form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The registry of an image without a registry domain (`redis:7`,
/// `library/redis`): Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";

/// The key Docker's own client uses for Docker Hub, in `config.json` and in
/// the engine's pull credentials (`serveraddress`).
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// Errors of reading a client's Docker configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// The configuration is not the JSON of a Docker `config.json`.
    #[error("{source_name} is not a Docker config.json: {message}")]
    NotDockerConfig {
        /// Where it came from (a path or `DOCKER_AUTH_CONFIG`).
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// An `auths` entry whose `auth` is not base64 of `user:password`.
    #[error("{source_name}: the credentials of registry {registry} are unreadable: {why}")]
    BadAuth {
        /// Where the configuration came from.
        source_name: String,
        /// The registry (as [`registry_key`] writes it).
        registry: String,
        /// What is wrong, without the value.
        why: String,
    },
    /// A registry that the stack's images come from whose credentials a
    /// credential helper keeps: stackctl does not run helpers.
    #[error(
        "the credentials of registry {registry} are kept by the credential helper docker-credential-{helper} \
         ({source_name}), which stackctl does not run: put them in `auths` (docker login with a config that has \
         no credsStore, or DOCKER_AUTH_CONFIG) or deploy without --with-registry-auth"
    )]
    HelperOnly {
        /// Where the configuration came from.
        source_name: String,
        /// The registry.
        registry: String,
        /// The helper's name (`desktop`, `pass`, `ecr-login`, …).
        helper: String,
    },
}

/// One registry's credentials. `Debug` never shows them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredential {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Password (or a token used as one).
    #[serde(default)]
    pub password: String,
    /// An OAuth identity token (`identitytoken` in `config.json`), used
    /// instead of the user name and password when set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity_token: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryCredential(<redacted>)")
    }
}

/// Credentials by registry ([`registry_key`] form: `docker.io`,
/// `registry.example.com:5000`). `Debug` shows the registries only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegistryAuth(pub BTreeMap<String, RegistryCredential>);

impl RegistryAuth {
    /// No registry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The credentials for the registry `image` comes from.
    pub fn for_image(&self, image: &str) -> Option<(&str, &RegistryCredential)> {
        let registry = registry_of(image);
        self.0.get_key_value(&registry).map(|(k, v)| (k.as_str(), v))
    }

    /// The registries, without their credentials.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Docker Hub's other names.
fn hub_alias(host: &str) -> bool {
    matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com")
}

/// The registry an image reference comes from, as Docker decides it: the
/// part before the first `/` when it has a `.` or a `:` or is `localhost`,
/// else Docker Hub. Lower case; Docker Hub's aliases become [`DOCKER_HUB`].
pub fn registry_of(image: &str) -> String {
    let image = image.trim();
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            let host = first.to_ascii_lowercase();
            if hub_alias(&host) { DOCKER_HUB.to_string() } else { host }
        }
        _ => DOCKER_HUB.to_string(),
    }
}

/// A key of `config.json`'s `auths` as a registry: the scheme and any path
/// left out (`https://index.docker.io/v1/` → `docker.io`,
/// `https://reg.example.com:5000/v2/` → `reg.example.com:5000`), lower case.
pub fn registry_key(key: &str) -> String {
    let key = key.trim();
    let rest = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    if hub_alias(&host) { DOCKER_HUB.to_string() } else { host }
}

/// The server address the engine expects with credentials for `registry`.
pub fn server_address(registry: &str) -> String {
    if registry == DOCKER_HUB { DOCKER_HUB_SERVER.to_string() } else { registry.to_string() }
}

/// What a client's Docker configuration holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientAuth {
    /// Where it came from (a path or `DOCKER_AUTH_CONFIG`), for messages.
    pub source_name: String,
    /// The credentials written in it.
    pub found: RegistryAuth,
    /// Registries whose credentials a helper keeps (`credHelpers`, or
    /// `credsStore` for an `auths` entry without credentials): helper name.
    pub helpers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: String,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
}

/// Reads the text of a Docker `config.json` (or of `DOCKER_AUTH_CONFIG`,
/// which holds the same JSON): `auths.<registry>.auth` (base64 of
/// `user:password`), else `username` and `password`, else `identitytoken`
/// (which wins over a password when both are written, as an OAuth login does);
/// `credHelpers`, and `credsStore` for entries without credentials, are
/// listed as kept by a helper.
pub fn parse_docker_config(source_name: &str, text: &str) -> Result<ClientAuth, RegistryError> {
    use base64::Engine;
    let file: ConfigFile = serde_json::from_str(text).map_err(|e| RegistryError::NotDockerConfig {
        source_name: source_name.to_string(),
        // Where, not what: serde_json's own message may quote a value.
        message: format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()).to_lowercase(),
    })?;
    let mut out = ClientAuth { source_name: source_name.to_string(), ..ClientAuth::default() };
    for (key, entry) in file.auths {
        let registry = registry_key(&key);
        let bad = |why: &str| RegistryError::BadAuth {
            source_name: source_name.to_string(),
            registry: registry.clone(),
            why: why.to_string(),
        };
        let mut credential = if !entry.auth.trim().is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(entry.auth.trim())
                .map_err(|_| bad("`auth` is not base64"))?;
            let text = String::from_utf8(raw).map_err(|_| bad("`auth` is not UTF-8 text"))?;
            let (user, pass) = text.split_once(':').ok_or_else(|| bad("`auth` is not user:password"))?;
            Some(RegistryCredential { username: user.to_string(), password: pass.to_string(), ..Default::default() })
        } else if !entry.username.is_empty() && !entry.password.is_empty() {
            Some(RegistryCredential { username: entry.username, password: entry.password, ..Default::default() })
        } else if !entry.identitytoken.is_empty() {
            Some(RegistryCredential {
                username: entry.username,
                identity_token: entry.identitytoken.clone(),
                ..Default::default()
            })
        } else {
            None
        };
        // An OAuth login (`docker login` to ACR, …) writes `auth` as
        // `user:` and the token beside it: the token is the credential.
        if !entry.identitytoken.is_empty()
            && let Some(c) = credential.as_mut()
        {
            c.identity_token = entry.identitytoken.clone();
            c.password.clear();
        }
        match credential {
            Some(c) => {
                out.found.0.insert(registry, c);
            }
            None if !file.creds_store.is_empty() => {
                out.helpers.insert(registry, file.creds_store.clone());
            }
            None => {}
        }
    }
    for (key, helper) in file.cred_helpers {
        let registry = registry_key(&key);
        if !out.found.0.contains_key(&registry) {
            out.helpers.insert(registry, helper);
        }
    }
    Ok(out)
}

/// What a deploy sends: the credentials of the registries `images` come
/// from, and a warning for each of those registries the configuration has
/// no credentials for (their images are pulled without). A registry whose
/// credentials only a helper holds is an error.
pub fn for_images<'a>(
    client: &ClientAuth,
    images: impl IntoIterator<Item = &'a str>,
) -> Result<(RegistryAuth, Vec<String>), RegistryError> {
    let registries: std::collections::BTreeSet<String> = images.into_iter().map(registry_of).collect();
    let mut auth = RegistryAuth::default();
    let mut warnings = Vec::new();
    for registry in registries {
        if let Some(c) = client.found.0.get(&registry) {
            auth.0.insert(registry, c.clone());
        } else if let Some(helper) = client.helpers.get(&registry) {
            return Err(RegistryError::HelperOnly {
                source_name: client.source_name.clone(),
                registry,
                helper: helper.clone(),
            });
        } else {
            warnings.push(format!(
                "{} has no credentials for registry {registry}: its images are pulled without",
                client.source_name
            ));
        }
    }
    Ok((auth, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_of_an_image_is_its_domain_or_docker_hub() {
        let cases = [
            ("redis", "docker.io"),
            ("redis:7", "docker.io"),
            ("library/redis:7", "docker.io"),
            ("myorg/app@sha256:abcd", "docker.io"),
            ("docker.io/library/redis", "docker.io"),
            ("index.docker.io/myorg/app:1", "docker.io"),
            ("registry.gitlab.com/group/project/app:abc123", "registry.gitlab.com"),
            ("10.77.0.1:5443/stackd-test/web:1", "10.77.0.1:5443"),
            ("localhost/app", "localhost"),
            ("localhost:5000/app:1", "localhost:5000"),
            ("Registry.Example.COM/app", "registry.example.com"),
            ("reg.example.com/a/b@sha256:0123", "reg.example.com"),
            ("stackd-test/web:1", "docker.io"),
        ];
        for (image, registry) in cases {
            assert_eq!(registry_of(image), registry, "{image}");
        }
    }

    #[test]
    fn config_keys_become_registries() {
        assert_eq!(registry_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_key("registry-1.docker.io"), "docker.io");
        assert_eq!(registry_key("https://reg.example.com:5000/v2/"), "reg.example.com:5000");
        assert_eq!(registry_key("http://10.0.0.1:5000"), "10.0.0.1:5000");
        assert_eq!(registry_key("registry.gitlab.com"), "registry.gitlab.com");
        assert_eq!(server_address("docker.io"), DOCKER_HUB_SERVER);
        assert_eq!(server_address("reg:5000"), "reg:5000");
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn auth_username_password_and_identity_token_are_read() {
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "reg.example.com:5000": {{"username": "ci", "password": "pw"}},
                "tok.example.com": {{"identitytoken": "refresh"}},
                "acr.example.io": {{"auth": "{}", "identitytoken": "oauth-refresh"}},
                "empty.example.com": {{}}
            }}, "HttpHeaders": {{"User-Agent": "x"}}}}"#,
            b64("hub-user:pa:ss"),
            b64("00000000-0000-0000-0000-000000000000:")
        );
        let c = parse_docker_config("config.json", &text).expect("parses");
        let hub = &c.found.0["docker.io"];
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("hub-user", "pa:ss"));
        let reg = &c.found.0["reg.example.com:5000"];
        assert_eq!((reg.username.as_str(), reg.password.as_str()), ("ci", "pw"));
        assert_eq!(c.found.0["tok.example.com"].identity_token, "refresh");
        // An OAuth login writes `user:` and the token: the token is used.
        let acr = &c.found.0["acr.example.io"];
        assert_eq!(acr.identity_token, "oauth-refresh");
        assert_eq!((acr.username.as_str(), acr.password.as_str()), ("00000000-0000-0000-0000-000000000000", ""));
        assert!(!c.found.0.contains_key("empty.example.com"), "an empty entry holds nothing");
        assert!(c.helpers.is_empty());
        assert_eq!(c.found.for_image("myorg/app:1").map(|(r, _)| r), Some("docker.io"));
        assert_eq!(c.found.for_image("reg.example.com:5000/app").map(|(r, _)| r), Some("reg.example.com:5000"));
        assert!(c.found.for_image("other.example.com/app").is_none());
    }

    #[test]
    fn the_gitlab_form_of_docker_auth_config_is_read() {
        // GitLab's documented DOCKER_AUTH_CONFIG: the registry without a scheme.
        let text = format!(r#"{{"auths":{{"registry.example.com:5000":{{"auth":"{}"}}}}}}"#, b64("my_username:my_pw"));
        let c = parse_docker_config("DOCKER_AUTH_CONFIG", &text).expect("parses");
        let (auth, warnings) = for_images(&c, ["registry.example.com:5000/group/app:1", "redis:7"]).expect("selects");
        assert_eq!(auth.registries().collect::<Vec<_>>(), ["registry.example.com:5000"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("docker.io") && warnings[0].contains("DOCKER_AUTH_CONFIG"), "{warnings:?}");
    }

    #[test]
    fn helpers_are_named_and_refused_when_a_stack_needs_them() {
        let text = r#"{"auths": {"reg.example.com": {}, "inline.example.com": {"username": "u", "password": "p"}},
            "credsStore": "desktop", "credHelpers": {"123.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"}}"#;
        let c = parse_docker_config("/root/.docker/config.json", text).expect("parses");
        assert_eq!(c.helpers["reg.example.com"], "desktop");
        assert_eq!(c.helpers["123.dkr.ecr.eu-west-1.amazonaws.com"], "ecr-login");
        assert!(c.found.0.contains_key("inline.example.com"));
        let err = for_images(&c, ["reg.example.com/app:1"]).expect_err("a helper is not run");
        let msg = err.to_string();
        assert!(msg.contains("reg.example.com") && msg.contains("docker-credential-desktop"), "{msg}");
        assert!(for_images(&c, ["inline.example.com/app"]).is_ok(), "a stack that needs no helper deploys");
    }

    #[test]
    fn bad_input_is_an_error_that_shows_no_value() {
        let err = parse_docker_config("DOCKER_AUTH_CONFIG", "{not json").expect_err("not JSON");
        assert!(matches!(err, RegistryError::NotDockerConfig { .. }), "{err}");
        let err = parse_docker_config("DOCKER_AUTH_CONFIG", r#"{"auths": "hunter2"}"#).expect_err("a string");
        let msg = err.to_string();
        assert!(msg.contains("line 1 column") && !msg.contains("hunter2"), "{msg}");
        let text = r#"{"auths": {"reg.example.com": {"auth": "c2VjcmV0LXdpdGhvdXQtY29sb24="}}}"#;
        let err = parse_docker_config("config.json", text).expect_err("no colon");
        let msg = err.to_string();
        assert!(msg.contains("reg.example.com") && !msg.contains("secret"), "{msg}");
        let err = parse_docker_config("config.json", r#"{"auths": {"r.io": {"auth": "%%%"}}}"#).expect_err("base64");
        assert!(err.to_string().contains("not base64"), "{err}");
    }

    #[test]
    fn debug_and_serialised_forms() {
        let mut auth = RegistryAuth::default();
        auth.0.insert(
            "reg.example.com".into(),
            RegistryCredential { username: "ci-user".into(), password: "hunter2".into(), ..Default::default() },
        );
        let debug = format!("{auth:?}");
        assert!(
            debug.contains("reg.example.com") && !debug.contains("hunter2") && !debug.contains("ci-user"),
            "{debug}"
        );
        let json = serde_json::to_string(&auth).expect("serialises");
        let back: RegistryAuth = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, auth);
    }
}
