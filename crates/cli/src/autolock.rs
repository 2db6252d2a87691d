//! `stackctl cluster autolock on|off`, `cluster unlock-key [--rotate]` and
//! `cluster unlock`: the cluster's unlock key (autolock), which every
//! manager needs to start.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use stackd_proto::v1;

use crate::args::{Global, OnOff};
use crate::client::{check_addrs, connect, status, tls};

/// How to keep the key, said whenever one is printed.
const KEEP: &str = "Keep it off the cluster (a password manager): a manager that restarts waits for it \
                    (`stackctl cluster unlock`, `stackd unlock`).";

/// `stackctl cluster autolock on|off`.
pub async fn set(g: &Global, state: OnOff) -> Result<i32> {
    let mut c = connect(g).await?;
    let req = v1::SetAutolockRequest { enabled: state == OnOff::On };
    // Setting it twice is harmless: it may go to the next manager.
    let r = c.read(|mut c| async move { c.set_autolock(req).await }).await.map_err(status)?.into_inner();
    match (state, r.changed) {
        (OnOff::On, true) => {
            eprintln!("Autolock is on. The unlock key (id {}) is:", r.key_id);
            out!("{}", r.key);
            eprintln!("{KEEP}");
        }
        (OnOff::On, false) => {
            eprintln!("Autolock was on already (key id {}); `stackctl cluster unlock-key` prints the key", r.key_id)
        }
        (OnOff::Off, true) => eprintln!("Autolock is off: managers start without a key."),
        (OnOff::Off, false) => eprintln!("Autolock was off already."),
    }
    Ok(crate::EXIT_OK)
}

/// `stackctl cluster unlock-key [--rotate]`: the key alone on standard output.
pub async fn key(g: &Global, rotate: bool) -> Result<i32> {
    let mut c = connect(g).await?;
    let req = v1::GetUnlockKeyRequest { rotate };
    let r = if rotate {
        c.write(|mut c| async move { c.get_unlock_key(req).await }).await
    } else {
        c.read(|mut c| async move { c.get_unlock_key(req).await }).await
    }
    .map_err(status)?
    .into_inner();
    if rotate {
        eprintln!(
            "The unlock key was replaced (new key id {}): running managers rewrap their data with it; one that \
             was stopped meanwhile still opens with the old key, once.",
            r.key_id
        );
    }
    out!("{}", r.key);
    if rotate {
        eprintln!("{KEEP}");
    }
    Ok(crate::EXIT_OK)
}

/// The unlock key from `file`, or from standard input.
fn read_key(file: Option<&Path>) -> Result<String> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("unlock key: ");
            }
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the key from standard input")?;
            line
        }
    };
    let key = text.trim().to_string();
    if key.is_empty() {
        bail!("no unlock key given (`stackctl cluster unlock-key` prints it while a manager runs)");
    }
    Ok(key)
}

/// `stackctl cluster unlock [--key-file F]`: each manager of `--addr`.
pub async fn unlock(g: &Global, key_file: Option<&Path>) -> Result<i32> {
    let addrs = check_addrs(&g.addr)?;
    let tls = tls(g)?;
    let key = read_key(key_file)?;
    let mut failed = 0;
    for addr in addrs {
        let outcome = async {
            let channel = stackd_tls::channel(addr, tls.clone()).await.map_err(|e| anyhow!("cannot reach it: {e}"))?;
            let req = v1::UnlockRequest { key: key.clone() };
            v1::lock_client::LockClient::new(channel).unlock(req).await.map(|r| r.into_inner()).map_err(|s| {
                match s.code() {
                    tonic::Code::FailedPrecondition => anyhow!("{} (nothing to do)", s.message()),
                    _ => status(s),
                }
            })
        };
        match outcome.await {
            Ok(r) => eprintln!("{addr}: unlocked (key id {}): the manager starts", r.key_id),
            Err(e) => {
                let not_locked = e.to_string().contains("not locked");
                eprintln!("{addr}: {e:#}");
                failed += usize::from(!not_locked);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} manager(s) not unlocked");
    }
    Ok(crate::EXIT_OK)
}
