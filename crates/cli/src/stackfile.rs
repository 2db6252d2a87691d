//! What the loader needs from the machine stackctl runs on: the stack files,
//! the `.env` file and the process environment. The loader (in core) does no
//! I/O; this module does all of it for every command that loads stack files.
//!
//! The `.env` file is `--env-file FILE` when given (then it must exist), or
//! else `.env` beside the first stack file, when there is one, as docker
//! compose does. The process environment wins over it.
//!
//! Files the stacks refer to (`env_file:`, the `file:` of configs and
//! secrets) are read by [`FsReader`] when the loader asks; relative bind
//! mounts are resolved against the first stack file's absolute directory.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use stackd_core::loader::{self, LoadOptions, Loaded, SourceFile};

use crate::args::StackFileArgs;

/// The process environment. Variables whose name or value is not UTF-8 are
/// left out: a stack file could not name them anyway.
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

/// The default `.env` file: beside the stack file `first`.
pub fn default_env_file(first: &Path) -> PathBuf {
    match first.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(".env"),
        _ => PathBuf::from(".env"),
    }
}

/// Reads the stack files `files` and the `.env` file (`env_file`, or the
/// default one when it exists), with `env` as the environment.
///
/// # Errors
///
/// A stack file that cannot be read; an `env_file` that cannot be read
/// (missing included); a default `.env` that exists but cannot be read.
pub fn read(
    files: &[PathBuf],
    env_file: Option<&Path>,
    env: BTreeMap<String, String>,
) -> Result<(Vec<SourceFile>, LoadOptions)> {
    let profiles = Vec::new();
    let sources = files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read stack file {}", p.display()))?;
            Ok(SourceFile { name: p.display().to_string(), text })
        })
        .collect::<Result<Vec<_>>>()?;
    let env_file = match env_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read env file {}", path.display()))?;
            Some(SourceFile { name: path.display().to_string(), text })
        }
        None => match files.first().map(|f| default_env_file(f)) {
            None => None,
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => Some(SourceFile { name: path.display().to_string(), text }),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("cannot read env file {}", path.display())),
            },
        },
    };
    let project_dir = files
        .first()
        .and_then(|f| std::path::absolute(f).ok())
        .and_then(|f| f.parent().map(|d| d.display().to_string()));
    Ok((sources, LoadOptions { env, env_file, project_dir, profiles }))
}

/// Reads the files a stack refers to (`env_file:`, config and secret
/// `file:`) from the filesystem, relative to the current directory.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsReader;

impl loader::FileReader for FsReader {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| {
            let text = e.to_string();
            // "No such file or directory (os error 2)" → "No such file or directory"
            text.split(" (os error").next().unwrap_or(&text).to_string()
        })
    }
}

/// Reads and loads the stack files, printing warnings to stderr. On any
/// error, prints every warning and every error and fails: nothing may be sent.
pub fn load(stack: &str, args: &StackFileArgs) -> Result<Loaded> {
    let (sources, mut options) = read(&args.files, args.env_file.as_deref(), process_env())?;
    options.profiles.clone_from(&args.profiles);
    let result = loader::load_with(stack, &sources, &options, &FsReader);
    eprint!("{}", diagnostics(&result));
    match result {
        Ok(loaded) => Ok(loaded),
        Err(_) => anyhow::bail!("the stack files have errors (listed above); nothing was sent"),
    }
}

/// What a load prints on stderr: each warning (`warning: ` first), then each
/// error, one a line; the warnings of a load with errors too.
fn diagnostics(result: &Result<Loaded, loader::LoadError>) -> String {
    let (warnings, errors) = match result {
        Ok(loaded) => (loaded.warnings.as_slice(), &[][..]),
        Err(e) => (e.warnings(), e.diagnostics()),
    };
    let warnings = warnings.iter().map(|w| format!("warning: {w}\n"));
    warnings.chain(errors.iter().map(|e| format!("{e}\n"))).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use stackd_core::loader::load;

    use super::{default_env_file, read};

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("stackctl-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).expect("write temp file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const STACK: &str = "services:\n  web:\n    image: app:${TAG}\n    deploy:\n      replicas: ${N:-1}\n";

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn default_env_file_is_beside_the_first_file() {
        assert_eq!(default_env_file(Path::new("stack.yml")), PathBuf::from(".env"));
        assert_eq!(default_env_file(Path::new("deploy/prod.yml")), PathBuf::from("deploy/.env"));
        assert_eq!(default_env_file(Path::new("/srv/app/stack.yml")), PathBuf::from("/srv/app/.env"));
    }

    #[test]
    fn dotenv_beside_the_stack_file_is_read_and_the_environment_wins() {
        let dir = TempDir::new();
        let stack = dir.write("stack.yml", STACK);
        let dotenv = dir.write(".env", "TAG=from-dotenv\nN=2\n");
        let (files, options) = read(&[stack], None, env(&[("TAG", "from-env")])).expect("readable");
        let env_file = options.env_file.as_ref().expect("the default .env");
        assert_eq!(env_file.name, dotenv.display().to_string());
        let loaded = load("shop", &files, &options).expect("valid");
        let web = &loaded.spec.services["web"];
        assert_eq!(web.task.image, "app:from-env");
        assert_eq!(web.mode, stackd_core::model::ServiceMode::Replicated { replicas: 2 });
    }

    #[test]
    fn a_missing_default_dotenv_is_fine() {
        let dir = TempDir::new();
        let stack = dir.write("stack.yml", STACK);
        let (files, options) = read(&[stack], None, env(&[("TAG", "1")])).expect("readable");
        assert_eq!(options.env_file, None);
        assert_eq!(load("shop", &files, &options).expect("valid").spec.services["web"].task.image, "app:1");
    }

    #[test]
    fn env_file_names_another_file_which_must_exist() {
        let dir = TempDir::new();
        let stack = dir.write("stack.yml", STACK);
        dir.write(".env", "TAG=default\n");
        let prod = dir.write("prod.env", "TAG=prod\n");
        let (files, options) = read(std::slice::from_ref(&stack), Some(&prod), env(&[])).expect("readable");
        assert_eq!(load("shop", &files, &options).expect("valid").spec.services["web"].task.image, "app:prod");

        let missing = dir.0.join("missing.env");
        let err = read(&[stack], Some(&missing), env(&[])).expect_err("missing --env-file");
        assert!(format!("{err:#}").starts_with(&format!("cannot read env file {}", missing.display())), "{err:#}");
    }

    #[test]
    fn dotenv_errors_name_the_file_and_line() {
        let dir = TempDir::new();
        let stack = dir.write("stack.yml", STACK);
        let dotenv = dir.write(".env", "TAG=1\nBAD LINE\n");
        let (files, options) = read(&[stack], None, env(&[])).expect("readable");
        let err = load("shop", &files, &options).expect_err("invalid .env");
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2:1: invalid variable name \"BAD LINE\": use letters, digits, `_`, `.` and `-`",
                dotenv.display()
            )
        );
    }

    /// Both `stackctl config` and `stackctl deploy` print through `load`:
    /// the warnings of a file with errors are printed too, before the errors.
    #[test]
    fn warnings_are_printed_with_the_errors() {
        let files = [stackd_core::loader::SourceFile {
            name: "stack.yml".into(),
            text: "services:\n  web:\n    image: x\n    shm_size: 1g\n    enviroment: {}\n".into(),
        }];
        let result = load("shop", &files, &Default::default());
        assert_eq!(
            super::diagnostics(&result),
            "warning: stack.yml:4:5: services.web.shm_size: not supported yet; ignored\n\
             stack.yml:5:5: services.web.enviroment: unknown key `enviroment`: did you mean `environment`?\n"
        );
    }

    #[test]
    fn a_missing_stack_file_is_an_error() {
        let dir = TempDir::new();
        let err = read(&[dir.0.join("nope.yml")], None, env(&[])).expect_err("missing stack file");
        assert!(err.to_string().starts_with("cannot read stack file"), "{err}");
    }
}
