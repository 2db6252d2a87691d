//! The cluster snapshot file (`stackctl snapshot save`): a plain header and
//! an encrypted payload.
//!
//! ```text
//! STACKD-SNAPSHOT-FILE\n                      magic line
//! {"format":1,"cluster_id":…,"index":…,        header: one JSON line, plain,
//!  "term":…,"created_at":…,"stackd_version":…,   readable without the key
//!  "recipient":"age1…"}\n
//! <an age file, encrypted to the recipient>   payload
//! ```
//!
//! The payload's plaintext is the same header line, then the state as JSON:
//!
//! ```text
//! {header JSON}\n
//! {ClusterState JSON}
//! ```
//!
//! The inner header authenticates the outer one (age authenticates the
//! payload): a header changed on disk no longer matches and the file is
//! refused. This module knows the layout; the encryption is the caller's
//! (`stackd_tls::age`), as core does no cryptography of its own. In an
//! emergency, without stackd: `tail -n +3 FILE | age -d -i recovery.key`
//! prints the plaintext.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{DesiredState, TaskState, Timestamp};
use crate::state::ClusterState;

/// The first line of every snapshot file.
pub const MAGIC: &[u8] = b"STACKD-SNAPSHOT-FILE\n";
/// The format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Why a snapshot file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    /// The file does not start with the magic line.
    #[error("not a stackd snapshot file (it does not start with `STACKD-SNAPSHOT-FILE`)")]
    BadMagic,
    /// The header line is missing or unreadable.
    #[error("the snapshot's header is unreadable: {0}")]
    BadHeader(String),
    /// A newer (or unknown) format.
    #[error(
        "the snapshot has format {0}; this stackd reads format {FORMAT} (use the stackd that wrote it, or a newer one)"
    )]
    UnsupportedFormat(u32),
    /// The header inside the encrypted payload differs from the plain one.
    #[error("the snapshot's plain header was altered: it no longer matches the encrypted copy ({0})")]
    HeaderMismatch(String),
    /// The decrypted payload is not a state.
    #[error("the snapshot's payload is unreadable: {0}")]
    BadPayload(String),
}

/// The plain header of a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// File format.
    pub format: u32,
    /// The cluster the state belongs to.
    pub cluster_id: String,
    /// Raft index of the last entry in the state.
    pub index: u64,
    /// Raft term of that entry.
    pub term: u64,
    /// Unix milliseconds when it was taken.
    pub created_at: Timestamp,
    /// The stackd version that took it.
    pub stackd_version: String,
    /// The recovery key's public half it is encrypted to (`age1…`).
    pub recipient: String,
}

/// A state and its header, as the payload carries them.
pub fn plaintext(header: &Header, state: &ClusterState) -> Result<Vec<u8>, BackupError> {
    let mut out = serde_json::to_vec(header).map_err(|e| BackupError::BadHeader(e.to_string()))?;
    out.push(b'\n');
    // Templates once per service revision, not once per task.
    crate::state::with_shared_templates(|| serde_json::to_writer(&mut out, state))
        .map_err(|e| BackupError::BadPayload(e.to_string()))?;
    Ok(out)
}

/// The file: magic, plain header and the encrypted payload (`sealed`).
pub fn file(header: &Header, sealed: &[u8]) -> Result<Vec<u8>, BackupError> {
    let line = serde_json::to_vec(header).map_err(|e| BackupError::BadHeader(e.to_string()))?;
    let mut out = Vec::with_capacity(MAGIC.len() + line.len() + 1 + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&line);
    out.push(b'\n');
    out.extend_from_slice(sealed);
    Ok(out)
}

/// Splits a file into its header (checked: magic, format) and the
/// encrypted payload.
pub fn split(bytes: &[u8]) -> Result<(Header, &[u8]), BackupError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(BackupError::BadMagic)?;
    let nl = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| BackupError::BadHeader("no end of the header line (the file is truncated)".into()))?;
    let header = header_of(&rest[..nl])?;
    Ok((header, &rest[nl + 1..]))
}

fn header_of(line: &[u8]) -> Result<Header, BackupError> {
    // The format first, so that a newer file says so rather than failing
    // on a field this build does not know.
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let f: Format = serde_json::from_slice(line).map_err(|e| BackupError::BadHeader(e.to_string()))?;
    // Older formats stay readable by newer builds; there is only format 1 yet.
    if f.format > FORMAT || f.format == 0 {
        return Err(BackupError::UnsupportedFormat(f.format));
    }
    serde_json::from_slice(line).map_err(|e| BackupError::BadHeader(e.to_string()))
}

/// Reads a decrypted payload, checking its header against the file's.
pub fn open(header: &Header, plaintext: &[u8]) -> Result<ClusterState, BackupError> {
    let nl =
        plaintext.iter().position(|b| *b == b'\n').ok_or_else(|| BackupError::BadPayload("no header line".into()))?;
    let inner = header_of(&plaintext[..nl])?;
    if &inner != header {
        let what = if inner.cluster_id != header.cluster_id {
            "cluster id"
        } else if (inner.index, inner.term) != (header.index, header.term) {
            "index or term"
        } else {
            "a header field"
        };
        return Err(BackupError::HeaderMismatch(format!("{what} differs")));
    }
    let state: ClusterState =
        serde_json::from_slice(&plaintext[nl + 1..]).map_err(|e| BackupError::BadPayload(e.to_string()))?;
    if state.cluster_id != header.cluster_id {
        return Err(BackupError::HeaderMismatch("the state belongs to another cluster".into()));
    }
    Ok(state)
}

/// What a snapshot holds, for `stackctl snapshot inspect` (names only: no
/// secret's value, no key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Stacks by name, with their number of services.
    pub stacks: BTreeMap<String, usize>,
    /// Services.
    pub services: usize,
    /// Tasks meant to run, and those running when the snapshot was taken.
    pub tasks: usize,
    /// Of those, running.
    pub running: usize,
    /// Nodes by name (managers marked).
    pub nodes: Vec<String>,
    /// Secret names.
    pub secrets: Vec<String>,
    /// Config names.
    pub configs: Vec<String>,
    /// Client tokens by name.
    pub tokens: Vec<String>,
    /// The state's hash ([`ClusterState::state_hash`]).
    pub state_hash: String,
}

/// The summary of `state`.
pub fn summary(state: &ClusterState) -> Summary {
    let mut stacks: BTreeMap<String, usize> = state.stacks.keys().map(|k| (k.clone(), 0)).collect();
    for s in state.services.values() {
        *stacks.entry(s.stack.clone()).or_default() += 1;
    }
    let live = state.tasks.values().filter(|t| t.desired_state == DesiredState::Running);
    let (mut tasks, mut running) = (0, 0);
    for t in live {
        tasks += 1;
        running += usize::from(t.status.state == TaskState::Running);
    }
    Summary {
        stacks,
        services: state.services.len(),
        tasks,
        running,
        nodes: state
            .nodes
            .values()
            .map(|n| match n.role {
                crate::model::NodeRole::Manager => format!("{} (manager)", n.name),
                crate::model::NodeRole::Worker => n.name.clone(),
            })
            .collect(),
        secrets: state.secrets.keys().cloned().collect(),
        configs: state.configs.keys().cloned().collect(),
        tokens: state.security.tokens.values().map(|t| t.name.clone()).collect(),
        state_hash: state.state_hash(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: FORMAT,
            cluster_id: "c1".into(),
            index: 42,
            term: 3,
            created_at: 1_000,
            stackd_version: "0.1.0".into(),
            recipient: "age1xyz".into(),
        }
    }

    fn state() -> ClusterState {
        ClusterState { cluster_id: "c1".into(), ..ClusterState::default() }
    }

    // "Sealing" here is the identity: the layout is what is under test.
    #[test]
    fn a_file_round_trips() {
        let h = header();
        let plain = plaintext(&h, &state()).expect("plaintext");
        let f = file(&h, &plain).expect("file");
        let (back, sealed) = split(&f).expect("split");
        assert_eq!(back, h);
        assert_eq!(open(&back, sealed).expect("open").state_hash(), state().state_hash());
    }

    #[test]
    fn an_altered_plain_header_is_refused() {
        let h = header();
        let plain = plaintext(&h, &state()).expect("plaintext");
        let mut other = h.clone();
        other.index = 99;
        let f = file(&other, &plain).expect("file");
        let (back, sealed) = split(&f).expect("split");
        assert!(matches!(open(&back, sealed), Err(BackupError::HeaderMismatch(m)) if m.contains("index")));
    }

    #[test]
    fn foreign_truncated_and_newer_files_are_refused() {
        assert_eq!(split(b"age-encryption.org/v1\n").err(), Some(BackupError::BadMagic));
        let f = file(&header(), b"x").expect("file");
        assert!(matches!(split(&f[..MAGIC.len() + 5]), Err(BackupError::BadHeader(_))));
        let newer = [MAGIC, br#"{"format":2,"something":"new"}"#, b"\n"].concat();
        assert_eq!(split(&newer).err(), Some(BackupError::UnsupportedFormat(2)));
    }
}
