//! `stackctl deploy --with-registry-auth`: the client's registry credentials
//! for the registries of the stack's images, read from `DOCKER_AUTH_CONFIG`
//! (the JSON of a Docker `config.json`, as a GitLab job has it) or else
//! `$DOCKER_CONFIG/config.json` (`~/.docker/config.json` by default).
//! Credential helpers (`credsStore`, `credHelpers`) are not run: a registry
//! whose credentials only a helper holds is an error that names it.
//! Nothing here prints a credential.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use stackd_core::registry::{self, RegistryAuth};

/// Where the credentials are read from (`Debug` never shows the
/// variable's value, which holds them).
#[derive(PartialEq, Eq)]
enum Source {
    /// The variable's value.
    Env(String),
    /// A config.json.
    File(PathBuf),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Env(_) => f.write_str("Env(<redacted>)"),
            Source::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// `DOCKER_AUTH_CONFIG` when set and not empty, else `$DOCKER_CONFIG/config.json`,
/// else `$HOME/.docker/config.json`.
fn source(auth_config: Option<String>, docker_config: Option<String>, home: Option<String>) -> Option<Source> {
    if let Some(v) = auth_config.filter(|v| !v.trim().is_empty()) {
        return Some(Source::Env(v));
    }
    if let Some(dir) = docker_config.filter(|v| !v.is_empty()) {
        return Some(Source::File(PathBuf::from(dir).join("config.json")));
    }
    home.filter(|h| !h.is_empty()).map(|h| Source::File(PathBuf::from(h).join(".docker").join("config.json")))
}

/// The credentials to send for `images`, printing a warning for each of
/// their registries the configuration has nothing for.
pub fn for_images<'a>(images: impl IntoIterator<Item = &'a str>) -> Result<RegistryAuth> {
    let var = |k: &str| std::env::var(k).ok();
    let src = source(var("DOCKER_AUTH_CONFIG"), var("DOCKER_CONFIG"), var("HOME"));
    let (name, text) = match src {
        Some(Source::Env(text)) => ("DOCKER_AUTH_CONFIG".to_string(), text),
        Some(Source::File(path)) => {
            let name = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => (name, text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                    "--with-registry-auth: no registry credentials: DOCKER_AUTH_CONFIG is not set and {name} does \
                     not exist (docker login, or set DOCKER_AUTH_CONFIG or DOCKER_CONFIG)"
                ),
                Err(e) => return Err(e).with_context(|| format!("--with-registry-auth: cannot read {name}")),
            }
        }
        None => bail!(
            "--with-registry-auth: no registry credentials: neither DOCKER_AUTH_CONFIG, DOCKER_CONFIG nor HOME is set"
        ),
    };
    let client = registry::parse_docker_config(&name, &text).context("--with-registry-auth")?;
    let (auth, warnings) = registry::for_images(&client, images).context("--with-registry-auth")?;
    for w in warnings {
        eprintln!("warning: --with-registry-auth: {w}");
    }
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_auth_config_comes_first_then_docker_config_then_home() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(source(s("{}"), s("/d"), s("/root")), Some(Source::Env("{}".into())));
        assert_eq!(source(s(" "), s("/d"), s("/root")), Some(Source::File("/d/config.json".into())));
        assert_eq!(source(None, None, s("/root")), Some(Source::File("/root/.docker/config.json".into())));
        assert_eq!(source(None, None, None), None);
    }
}
