//! General helpers that belong to no layer: atomic file writes and
//! poison-tolerant locks. They depend on no other module of the crate, so
//! every module (the Raft log store and state machine, the identity file,
//! the services) may use them without an import circle.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsync, rename,
/// fsync of the directory. Readable by the owner only (0600): snapshots hold
/// the cluster's CA key and join secrets.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(dir, name, bytes, 0o600)
}

/// [`write_atomic`] with the file mode `mode`, set when the file is created
/// (never wider, not even for a moment).
pub fn write_atomic_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Locks `m`, taking the data of a poisoned lock as it is: a panic on
/// another thread never makes this one panic too.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
