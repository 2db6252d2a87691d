//! Images: what a tag means (resolved once per revision), and making sure
//! an image is present (pulled with the stack's credentials when needed).

use super::*;

/// The engine's pull credentials for `registry` (bollard's type stays in
/// this module; its `Debug` would show them: never log it).
pub(super) fn credentials(registry: &str, login: Option<&RegistryCredential>) -> Option<DockerCredentials> {
    let c = login?;
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Some(DockerCredentials {
        username: some(&c.username),
        password: some(&c.password),
        identitytoken: some(&c.identity_token),
        serveraddress: Some(stackd_core::registry::server_address(registry)),
        ..Default::default()
    })
}

/// How long [`Executor::resolve_image`] waits for the registry.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether `a` and `b` name the same repository, Docker Hub's short forms
/// included (`web` = `docker.io/library/web`).
pub(super) fn same_repo(a: &str, b: &str) -> bool {
    fn full(name: &str) -> String {
        let first = name.split('/').next().unwrap_or_default();
        let has_registry = name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
        match (has_registry, name.contains('/')) {
            (true, _) => name.to_string(),
            (false, true) => format!("docker.io/{name}"),
            (false, false) => format!("docker.io/library/{name}"),
        }
    }
    full(a) == full(b)
}

impl Executor {
    /// What the tag `image` means, for a service revision's tasks to run
    /// exactly that image (see [`ImagePin`]):
    ///
    /// - an image present here that was never pulled from a registry (no
    ///   repo digest: built or loaded locally) keeps its tag;
    /// - otherwise the engine asks the registry (`/distribution/…/json`,
    ///   with the engine's own registry settings and `login`, the stack's
    ///   credentials for it when the deploy sent some), within [`RESOLVE_TIMEOUT`];
    /// - a registry that does not answer: the digest the engine pulled the
    ///   tag from, if the image is here; else the tag is kept, with why.
    pub async fn resolve_image(&self, image: &str, login: Option<&RegistryCredential>) -> ImagePin {
        if image.contains("@sha256:") {
            return ImagePin::Digest { reference: image.to_string() };
        }
        let (repo, _) = spec::pull_reference(image);
        let local = match self.docker.inspect_image(image).await {
            Ok(i) => Some(i.repo_digests.unwrap_or_default()),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => None,
            Err(e) => return ImagePin::Tag { reason: format!("the engine could not inspect it: {e}") },
        };
        // The digest of this repository among those the local image came from.
        let local_digest = local.as_ref().and_then(|digests| {
            digests.iter().find_map(|d| {
                let (name, digest) = d.split_once('@')?;
                (same_repo(name, &repo)).then(|| format!("{repo}@{digest}"))
            })
        });
        if local.is_some() && local_digest.is_none() {
            return ImagePin::Tag { reason: "no registry digest: the image was built or loaded on the node".into() };
        }
        let registry = stackd_core::registry::registry_of(image);
        let asked = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            self.docker.inspect_registry_image(image, credentials(&registry, login)),
        )
        .await;
        let why = match asked {
            Ok(Ok(d)) => match d.descriptor.digest {
                Some(digest) if !digest.is_empty() => {
                    return ImagePin::Digest { reference: format!("{repo}@{digest}") };
                }
                _ => "the registry answered without a digest".to_string(),
            },
            Ok(Err(e)) => format!("the registry could not be asked: {e}"),
            Err(_) => format!("the registry did not answer within {RESOLVE_TIMEOUT:?}"),
        };
        match local_digest {
            Some(reference) => ImagePin::Digest { reference },
            None => ImagePin::Tag { reason: why },
        }
    }

    /// Makes sure `image` is present as `policy` says: `missing` inspects
    /// it, and pulls it when it is not there; `always` pulls it (a failed
    /// pull fails, whatever the node holds); `never` only inspects it.
    /// A pull sends `login` (the stack's credentials for `registry`, the
    /// registry `image` comes from) when there is one; a pull the registry
    /// refuses for want of credentials says whether any were sent.
    pub async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        registry: &str,
        login: Option<&RegistryCredential>,
    ) -> Result<(), DockerError> {
        if policy != PullPolicy::Always {
            match self.docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => return Err(engine("inspect image", e)),
            }
            if policy == PullPolicy::Never {
                return Err(DockerError::NotPresent { image: image.to_string() });
            }
        }
        let (from_image, tag) = spec::pull_reference(image);
        let opts = CreateImageOptions { from_image: Some(from_image), tag: Some(tag), ..Default::default() };
        let started = std::time::Instant::now();
        let pulled =
            self.docker.create_image(Some(opts), None, credentials(registry, login)).try_collect::<Vec<_>>().await;
        self.observe("pull_image", started);
        pulled.map(|_| ()).map_err(|e| {
            let message = describe(&e);
            let (registry, image) = (registry.to_string(), image.to_string());
            match policy {
                _ if auth_refusal(&message) && login.is_none() => {
                    DockerError::PullNoCredentials { registry, image, message }
                }
                _ if auth_refusal(&message) => DockerError::PullCredentialsRefused { registry, image, message },
                PullPolicy::Always => DockerError::PullFailed { image, message },
                _ => DockerError::ImageUnavailable { image, message },
            }
        })
    }
}
