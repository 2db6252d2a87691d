//! The snapshot file format.
//!
//! ```text
//! STACKD-SNAPSHOT\n                      magic line
//! {"format":1,"cluster_id":…,"index":…,  header: one JSON line
//!  "term":…,"created_at":…,"stackd_version":…,
//!  "payload_len":…,"payload_sha256":…}\n
//! <payload_len bytes of JSON>            the state machine at `index`
//! ```
//!
//! A snapshot whose magic, format, length or checksum does not match is
//! refused whole: it is never half-applied.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{LogId, StoredMembershipOf};
use stackd_core::ClusterState;
use stackd_core::journal::Journal;

/// The first line of every snapshot file.
pub const MAGIC: &[u8] = b"STACKD-SNAPSHOT\n";
/// The format version this build writes and reads.
pub const FORMAT: u32 = 1;

/// Why a snapshot was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The data does not start with the snapshot magic.
    #[error("not a stackd snapshot (bad magic)")]
    BadMagic,
    /// The header line is missing or not valid JSON.
    #[error("snapshot header is unreadable: {0}")]
    BadHeader(String),
    /// Written by a stackd with a format this build does not read.
    #[error("snapshot format {0} is not supported (this stackd reads format {FORMAT})")]
    UnsupportedFormat(u32),
    /// Fewer or more payload bytes than the header says.
    #[error("snapshot payload is {actual} bytes, header says {expected}: the file is truncated or padded")]
    Length {
        /// Length in the header.
        expected: u64,
        /// Length found.
        actual: u64,
    },
    /// The payload's SHA-256 differs from the header's.
    #[error("snapshot checksum mismatch: header {expected}, payload {actual}")]
    Checksum {
        /// Checksum in the header.
        expected: String,
        /// Checksum of the payload.
        actual: String,
    },
    /// The payload is not a valid state.
    #[error("snapshot payload is unreadable: {0}")]
    BadPayload(String),
}

/// The header of a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Format version.
    pub format: u32,
    /// The cluster the state belongs to.
    pub cluster_id: String,
    /// Raft log index of the last entry included.
    pub index: u64,
    /// Raft term of that entry.
    pub term: u64,
    /// Unix milliseconds at creation.
    pub created_at: u64,
    /// The stackd version that wrote it.
    pub stackd_version: String,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Hex SHA-256 of the payload.
    pub payload_sha256: String,
}

/// The state machine as saved in a snapshot.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Payload {
    /// Last log id applied.
    pub last_applied: Option<LogId>,
    /// Last membership applied.
    pub membership: StoredMembershipOf,
    /// The cluster state.
    pub state: ClusterState,
    /// The last events (absent from snapshots written before they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Journal>,
    /// Id openraft knows this snapshot by.
    pub snapshot_id: String,
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Serialises a payload into a snapshot file's bytes.
pub fn encode(payload: &Payload, created_at: u64) -> Result<Vec<u8>, SnapshotError> {
    // Templates once per service revision, not once per task.
    let body = stackd_core::state::with_shared_templates(|| serde_json::to_vec(payload))
        .map_err(|e| SnapshotError::BadPayload(e.to_string()))?;
    let header = Header {
        format: FORMAT,
        cluster_id: payload.state.cluster_id.clone(),
        index: payload.last_applied.map(|l| l.index).unwrap_or(0),
        term: payload.last_applied.map(|l| l.leader_id.term).unwrap_or(0),
        created_at,
        stackd_version: env!("CARGO_PKG_VERSION").to_string(),
        payload_len: body.len() as u64,
        payload_sha256: hex_sha256(&body),
    };
    let mut out = Vec::with_capacity(body.len() + 512);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&serde_json::to_vec(&header).map_err(|e| SnapshotError::BadHeader(e.to_string()))?);
    out.push(b'\n');
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads and checks a snapshot file's header only.
pub fn read_header(bytes: &[u8]) -> Result<(Header, &[u8]), SnapshotError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(SnapshotError::BadMagic)?;
    let nl = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| SnapshotError::BadHeader("no end of header line".into()))?;
    let header: Header = serde_json::from_slice(&rest[..nl]).map_err(|e| SnapshotError::BadHeader(e.to_string()))?;
    if header.format != FORMAT {
        return Err(SnapshotError::UnsupportedFormat(header.format));
    }
    Ok((header, &rest[nl + 1..]))
}

/// Checks and decodes a snapshot file.
pub fn decode(bytes: &[u8]) -> Result<(Header, Payload), SnapshotError> {
    let (header, body) = read_header(bytes)?;
    if body.len() as u64 != header.payload_len {
        return Err(SnapshotError::Length { expected: header.payload_len, actual: body.len() as u64 });
    }
    let actual = hex_sha256(body);
    if actual != header.payload_sha256 {
        return Err(SnapshotError::Checksum { expected: header.payload_sha256, actual });
    }
    let payload = serde_json::from_slice(body).map_err(|e| SnapshotError::BadPayload(e.to_string()))?;
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut p = Payload::default();
        p.state.cluster_id = "c1".into();
        p.snapshot_id = "s1".into();
        encode(&p, 42).expect("encode")
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let (h, p) = decode(&bytes).expect("decode");
        assert_eq!(h.cluster_id, "c1");
        assert_eq!(h.created_at, 42);
        assert_eq!(p.snapshot_id, "s1");
    }

    #[test]
    fn corrupt_payload_is_refused() {
        let mut bytes = sample();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        assert!(matches!(decode(&bytes), Err(SnapshotError::Checksum { .. })));
    }

    #[test]
    fn truncated_is_refused() {
        let bytes = sample();
        assert!(matches!(decode(&bytes[..bytes.len() - 1]), Err(SnapshotError::Length { .. })));
    }

    #[test]
    fn bad_magic_is_refused() {
        assert!(matches!(decode(b"hello"), Err(SnapshotError::BadMagic)));
    }
}
