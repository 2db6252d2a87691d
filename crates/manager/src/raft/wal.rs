//! The Raft log on disk: a write-ahead log of segment files holding
//! checksummed records.
//!
//! ```text
//! DATA_DIR/raft/log/
//!   0000000000000001.wal   a segment: records, oldest first
//!   0000000000000002.wal   the last segment: appends go to its end
//!
//! record = len: u32 LE | crc32(payload): u32 LE | payload: `len` bytes
//! payload = the JSON of a Record, sealed by the data key (the top bit of
//!           `len` set), or plain in a log written before encryption at rest
//! ```
//!
//! - **Encryption at rest**: every record's payload is sealed with the
//!   node's data key (`raft/keys.rs`; AES-256-GCM, a random nonce per
//!   record) as the writer writes it; the checksum covers the sealed bytes,
//!   so a torn write is told from a wrong key. A log with plain records (an
//!   earlier stackd) is rewritten sealed when it opens (`log_store.rs`).
//!
//! - A batch of records is one `write` at the end of the last segment and,
//!   when any of them must be durable, one `fdatasync`: an append costs a
//!   sequential write, not a B-tree transaction.
//! - Every segment starts with a `State` record (vote, commit index, purge
//!   mark as they were then), so that a segment whose entries are all purged
//!   can be deleted without losing them. The last segment is never deleted.
//! - A `Truncate` or `Purge` record removes entries written before it.
//! - A segment is allocated whole when it starts (`fallocate`, zeros past
//!   its records), so an append does not grow the file: `fdatasync` then
//!   has no file size to write back, which made it about a third faster
//!   here. A zero header (length 0: no record is empty) marks the end of
//!   the records. Where `fallocate` is not supported the file grows instead.
//! - A segment is made under a temporary name and renamed into place once
//!   its `State` record is durable: a segment file always starts with one.
//! - On open every segment is read through. A record cut short, or with a
//!   bad checksum, or bytes after the zero header, at the end of the last
//!   segment are what a crash during a write leaves; they were never
//!   acknowledged to a client (a leader's unsynced appends may have been
//!   counted toward a commit, but none shows before they are synced) and are
//!   cut off. Anywhere else it is corruption, and the
//!   log refuses to open rather than lose entries.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use stackd_tls::seal::DataKey;

use super::{Entry, LogId, Vote};

/// The key records are sealed with: `None` only in tests of the plain format.
pub(super) type Key = Option<Arc<DataKey>>;

/// A segment is closed and a new one started once it holds this many bytes.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;
/// The largest record this build writes or reads; a larger length in a
/// header is corruption.
const MAX_RECORD: usize = 256 << 20;
/// Record header: length and CRC-32.
const HEADER: usize = 8;
/// The bit of the length word that marks a sealed payload.
const SEALED: u32 = 1 << 31;
const SUFFIX: &str = ".wal";
/// A segment being made; never read, deleted on open.
const TEMP_SUFFIX: &str = ".wal.new";

/// Why the write-ahead log failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A record is damaged where no crash can have left it.
    #[error("{path}: corrupt record at byte {offset}: {why}")]
    Corrupt {
        /// The segment.
        path: String,
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// A record could not be encoded.
    #[error("cannot encode a log record: {0}")]
    Encode(String),
    /// A record could not be sealed.
    #[error("cannot seal a log record: {0}")]
    Seal(String),
    /// The log of an earlier stackd (`raft.redb`) could not be read to be
    /// moved over; it is left as it was.
    #[error(
        "{path}: cannot read the raft log of the earlier stackd to move it to the write-ahead log ({why}); \
         the file is left as it was: start the earlier version to check it, or remove this manager \
         (`stackctl node rm`) and join it again"
    )]
    Legacy {
        /// The old database.
        path: String,
        /// What failed.
        why: String,
    },
    /// Another process holds the log.
    #[error(
        "{path}: the raft log is in use by another stackd process with the same data dir; \
         stop that process first (one data dir per stackd)"
    )]
    InUse {
        /// The lock file.
        path: String,
    },
    /// An earlier write failed and could not be undone: nothing more is written.
    #[error("the raft log is unwritable after an earlier error: {0}")]
    Broken(String),
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.display().to_string(), source }
}

/// One record. `E` is the entry: owned when read, borrowed when written.
// Externally tagged: an internally tagged enum buffers its content, and
// some of the types inside (base64 blobs) do not decode from that buffer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Record<E> {
    /// The first record of every segment.
    State {
        /// The vote.
        vote: Option<Vote>,
        /// The commit index.
        committed: Option<LogId>,
        /// The last purged entry.
        purged: Option<LogId>,
    },
    /// A log entry.
    Entry {
        /// The entry.
        entry: E,
    },
    /// Entries from `since` on are gone.
    Truncate {
        /// First index removed.
        since: u64,
    },
    /// Entries up to `upto` are gone.
    Purge {
        /// The last entry removed.
        upto: LogId,
    },
    /// A new vote.
    Vote {
        /// The vote.
        vote: Vote,
    },
    /// A new commit index.
    Committed {
        /// The commit index.
        committed: Option<LogId>,
    },
}

/// What a framed record changes, for the writer's bookkeeping.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    /// An entry with this id.
    Entry(LogId),
    /// Entries removed from the end.
    Truncate,
    /// Entries up to this id removed.
    Purge(LogId),
    /// The vote.
    Vote(Vote),
    /// The commit index.
    Committed(Option<LogId>),
}

/// A record ready to be written: its JSON, sealed and framed by the writer.
pub(super) struct Framed {
    pub json: Vec<u8>,
    pub kind: Kind,
}

/// Encodes `record` for the writer.
pub(super) fn frame<E: Serialize>(record: &Record<E>, kind: Kind) -> Result<Framed, WalError> {
    let json = serde_json::to_vec(record).map_err(|e| WalError::Encode(e.to_string()))?;
    if json.len() + stackd_tls::seal::OVERHEAD > MAX_RECORD {
        return Err(WalError::Encode(format!("a record of {} bytes is larger than {MAX_RECORD}", json.len())));
    }
    Ok(Framed { json, kind })
}

/// Appends the record of `json` to `out`, header included, sealed when
/// there is a key. Returns its length on disk.
fn encode_into(json: &[u8], key: &Key, out: &mut Vec<u8>) -> Result<usize, WalError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    let flag = match key {
        Some(k) => {
            k.seal_into(json, out).map_err(|e| WalError::Seal(e.to_string()))?;
            SEALED
        }
        None => {
            out.extend_from_slice(json);
            0
        }
    };
    let len = out.len() - start - HEADER;
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&(len as u32 | flag).to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(out.len() - start)
}

/// A record as the writer writes it, header included (for tests that
/// write records by hand).
#[cfg(test)]
pub(super) fn encode(json: &[u8], key: &Key) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(json, key, &mut out).expect("encode");
    out
}

/// Where an entry is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Loc {
    pub log_id: LogId,
    pub segment: u64,
    pub offset: u64,
    /// The whole record, header included.
    pub len: usize,
}

/// A place in the log: a segment and a byte offset in it. Ordered as the
/// log is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Pos {
    pub segment: u64,
    pub offset: u64,
}

impl Loc {
    /// The position just past this entry's record.
    pub(super) fn end(&self) -> Pos {
        Pos { segment: self.segment, offset: self.offset + self.len as u64 }
    }
}

/// The open segment files, by number, shared by the writer and the readers.
pub(super) type Files = Arc<RwLock<BTreeMap<u64, Arc<File>>>>;

/// Reads the entry at `loc` from `file`.
pub(super) fn read_entry(file: &File, loc: &Loc, key: &Key) -> Result<Entry, String> {
    let mut buf = vec![0u8; loc.len];
    file.read_exact_at(&mut buf, loc.offset).map_err(|e| e.to_string())?;
    match parse(&buf, key) {
        Parsed::Record(r, _, _) => match *r {
            Record::Entry { entry } if entry.log_id == loc.log_id => Ok(entry),
            _ => Err(format!("no entry {} at byte {}", loc.log_id, loc.offset)),
        },
        Parsed::Short => Err(format!("the record at byte {} is cut short", loc.offset)),
        Parsed::Torn => Err(format!("the record at byte {} fails its checksum", loc.offset)),
        Parsed::Bad(why) => Err(format!("the record at byte {} is corrupt: {why}", loc.offset)),
        Parsed::End => Err(format!("no record at byte {}", loc.offset)),
    }
}

enum Parsed {
    /// A record, its length (header included), and whether it was sealed.
    Record(Box<Record<Entry>>, usize, bool),
    /// A zero header: the end of the records, in an allocated segment.
    End,
    /// The bytes end within the record.
    Short,
    /// The checksum does not match: damaged, or torn by a crash.
    Torn,
    /// The checksum matches but the record does not decode: never what a
    /// crash leaves (a stackd that does not know this record, or a bug).
    Bad(String),
}

/// Parses the record at the start of `buf`, opening it with `key` when it is sealed.
fn parse(buf: &[u8], key: &Key) -> Parsed {
    if buf.len() < HEADER {
        return Parsed::Short;
    }
    let word = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if word == 0 && crc == 0 {
        return Parsed::End;
    }
    let sealed = word & SEALED != 0;
    let len = (word & !SEALED) as usize;
    if len > MAX_RECORD {
        return Parsed::Bad(format!("length {len} is larger than any record"));
    }
    let Some(payload) = buf.get(HEADER..HEADER + len) else { return Parsed::Short };
    if crc32fast::hash(payload) != crc {
        return Parsed::Torn;
    }
    let opened;
    let json = match (sealed, key) {
        (false, _) => payload,
        (true, Some(k)) => match k.open(payload) {
            Ok(plain) => {
                opened = plain;
                &opened[..]
            }
            // The checksum matched: the bytes are as written, the key is not theirs.
            Err(e) => return Parsed::Bad(format!("sealed record: {e}: this log belongs to another data key")),
        },
        (true, None) => return Parsed::Bad("a sealed record, and no data key to open it".into()),
    };
    match serde_json::from_slice(json) {
        Ok(r) => Parsed::Record(Box::new(r), HEADER + len, sealed),
        Err(e) => Parsed::Bad(format!("unreadable: {e}")),
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}{SUFFIX}"))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))
}

/// Allocates `file` up to `len` bytes (zeros past its data), so that appends
/// within it do not change its size. A file system that cannot allocate
/// (`EOPNOTSUPP`) is not an error: the file then grows as it is written.
fn allocate(file: &File, len: u64, path: &Path) -> Result<(), WalError> {
    use rustix::fs::{FallocateFlags, fallocate};
    match fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP => {
            tracing::debug!(segment = %path.display(), "fallocate is not supported here: the segment grows as it is written");
            Ok(())
        }
        Err(e) => Err(io_at(path)(e.into())),
    }
}

/// The log as the segments describe it.
#[derive(Debug, Default)]
pub(super) struct Replayed {
    /// The live entries.
    pub entries: BTreeMap<u64, Loc>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    /// How many records were read in plain text (written before encryption at rest).
    pub plain: usize,
}

/// Appends records to the last segment, starts new segments and deletes
/// purged ones. Used by one thread at a time.
pub(super) struct Writer {
    dir: PathBuf,
    /// A new segment starts once the last one holds this many bytes.
    segment_bytes: u64,
    files: Files,
    /// Last entry index written to each segment (`None`: no entry).
    last_index: BTreeMap<u64, Option<u64>>,
    /// The segment written to, and its length.
    current: u64,
    len: u64,
    /// The marks as written, for the `State` record of the next segment.
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    broken: Option<String>,
    /// Seals every record written.
    key: Key,
}

impl Writer {
    /// Opens the log in `dir` (created if missing) and reads it through;
    /// segments end after `segment_bytes` ([`SEGMENT_BYTES`] but in tests).
    pub(super) fn open(dir: &Path, segment_bytes: u64, key: Key) -> Result<(Self, Replayed, Files), WalError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let mut numbers = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io_at(dir))? {
            let item = item.map_err(io_at(dir))?;
            let name = item.file_name();
            let name = name.to_str().unwrap_or_default();
            if let Some(n) = name.strip_suffix(SUFFIX).and_then(|n| n.parse::<u64>().ok()) {
                numbers.push(n);
            } else if name.ends_with(TEMP_SUFFIX) {
                // A segment a crash left half made: it never held an entry.
                std::fs::remove_file(item.path()).map_err(io_at(&item.path()))?;
            }
        }
        numbers.sort_unstable();
        let files: Files = Arc::default();
        let mut w = Writer {
            dir: dir.to_path_buf(),
            segment_bytes,
            files: files.clone(),
            last_index: BTreeMap::new(),
            current: 0,
            len: 0,
            vote: None,
            committed: None,
            purged: None,
            broken: None,
            key,
        };
        let mut replayed = Replayed::default();
        if numbers.is_empty() {
            w.start_segment(1)?;
            return Ok((w, replayed, files));
        }
        for (i, &n) in numbers.iter().enumerate() {
            let last = i + 1 == numbers.len();
            w.replay_segment(n, last, &mut replayed)?;
        }
        (w.vote, w.committed, w.purged) = (replayed.vote, replayed.committed, replayed.purged);
        // A crash between a purge and the deletion of its segments leaves them: delete them now.
        w.delete_purged()?;
        Ok((w, replayed, files))
    }

    fn replay_segment(&mut self, n: u64, last: bool, out: &mut Replayed) -> Result<(), WalError> {
        let path = segment_path(&self.dir, n);
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).map_err(io_at(&path))?;
        let bytes = std::fs::read(&path).map_err(io_at(&path))?;
        let mut offset = 0usize;
        let mut last_index = None;
        while offset < bytes.len() {
            let (record, len) = match parse(&bytes[offset..], &self.key) {
                Parsed::Record(r, len, sealed) => {
                    out.plain += usize::from(!sealed);
                    (r, len)
                }
                // The allocated rest of the last segment, never written.
                // (A segment is only followed by another once it is full.)
                Parsed::End if last && bytes[offset..].iter().all(|&b| b == 0) => break,
                Parsed::Short | Parsed::Torn | Parsed::End if last => {
                    tracing::warn!(
                        segment = %path.display(),
                        offset,
                        dropped = bytes.len() - offset,
                        "the raft log ends with a partly written record (a crash during a write): cutting it off"
                    );
                    file.set_len(offset as u64).and_then(|()| file.sync_all()).map_err(io_at(&path))?;
                    break;
                }
                Parsed::End => {
                    return Err(WalError::Corrupt {
                        path: path.display().to_string(),
                        offset: offset as u64,
                        why: "zeros where a record should be, in a segment that is not the last".into(),
                    });
                }
                Parsed::Short | Parsed::Torn => {
                    return Err(WalError::Corrupt {
                        path: path.display().to_string(),
                        offset: offset as u64,
                        why: "checksum mismatch or cut short, in a segment that is not the last".into(),
                    });
                }
                Parsed::Bad(why) => {
                    return Err(WalError::Corrupt { path: path.display().to_string(), offset: offset as u64, why });
                }
            };
            match *record {
                Record::State { vote, committed, purged } => {
                    (out.vote, out.committed) = (vote, committed);
                    if let Some(p) = purged {
                        purge(out, p);
                    }
                }
                Record::Entry { entry } => {
                    let log_id = entry.log_id;
                    out.entries.split_off(&log_id.index);
                    out.entries.insert(log_id.index, Loc { log_id, segment: n, offset: offset as u64, len });
                    last_index = Some(log_id.index);
                }
                Record::Truncate { since } => {
                    out.entries.split_off(&since);
                }
                Record::Purge { upto } => purge(out, upto),
                Record::Vote { vote } => out.vote = Some(vote),
                Record::Committed { committed } => out.committed = committed,
            }
            offset += len;
        }
        let len = if offset < bytes.len() { offset } else { bytes.len() } as u64;
        // The last segment of an earlier version, or one cut back above:
        // allocate the rest, as a new segment is.
        if last && file.metadata().map_err(io_at(&path))?.len() < self.segment_bytes {
            allocate(&file, self.segment_bytes, &path)?;
            file.sync_all().map_err(io_at(&path))?;
        }
        self.last_index.insert(n, last_index);
        self.files.write().unwrap_or_else(|p| p.into_inner()).insert(n, Arc::new(file));
        (self.current, self.len) = (n, len);
        Ok(())
    }

    /// Starts segment `n` with a `State` record, allocated whole, and makes
    /// it durable: made under a temporary name, then renamed into place.
    fn start_segment(&mut self, n: u64) -> Result<(), WalError> {
        let path = segment_path(&self.dir, n);
        let temp = self.dir.join(format!("{n:016}{TEMP_SUFFIX}"));
        let state: Record<&Entry> = Record::State { vote: self.vote, committed: self.committed, purged: self.purged };
        let framed = frame(&state, Kind::Committed(self.committed))?;
        let mut bytes = Vec::new();
        encode_into(&framed.json, &self.key, &mut bytes)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_at(&temp))?;
        file.write_all(&bytes).map_err(io_at(&temp))?;
        allocate(&file, self.segment_bytes.max(bytes.len() as u64), &temp)?;
        file.sync_all().map_err(io_at(&temp))?;
        std::fs::rename(&temp, &path).map_err(io_at(&path))?;
        sync_dir(&self.dir)?;
        self.files.write().unwrap_or_else(|p| p.into_inner()).insert(n, Arc::new(file));
        self.last_index.insert(n, None);
        (self.current, self.len) = (n, bytes.len() as u64);
        Ok(())
    }

    /// Writes `records` at the end of the log, with one `fdatasync` when
    /// `durable`. Returns where the entries went. On error nothing of the
    /// batch counts as written.
    pub(super) fn write(&mut self, records: &[Framed], durable: bool) -> Result<Vec<Loc>, WalError> {
        if let Some(why) = &self.broken {
            return Err(WalError::Broken(why.clone()));
        }
        if self.len >= self.segment_bytes {
            // What this segment holds is durable before the next one starts:
            // the log store syncs only the segment written last.
            if let Some(full) = self.files.read().unwrap_or_else(|p| p.into_inner()).get(&self.current) {
                full.sync_data().map_err(io_at(&segment_path(&self.dir, self.current)))?;
            }
            self.start_segment(self.current + 1)?;
        }
        let file = self.files.read().unwrap_or_else(|p| p.into_inner()).get(&self.current).cloned();
        let path = segment_path(&self.dir, self.current);
        let Some(file) = file else {
            return Err(WalError::Broken(format!("segment {} is not open", path.display())));
        };
        let extra = if self.key.is_some() { stackd_tls::seal::OVERHEAD } else { 0 } + HEADER;
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.json.len() + extra).sum());
        let mut locs = Vec::new();
        for r in records {
            let offset = self.len + buf.len() as u64;
            let len = encode_into(&r.json, &self.key, &mut buf)?;
            if let Kind::Entry(log_id) = r.kind {
                locs.push(Loc { log_id, segment: self.current, offset, len });
            }
        }
        let written = file.write_all_at(&buf, self.len).and_then(|()| if durable { file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // Cut off what may have reached the file, so that the next
            // record does not follow a torn one.
            if let Err(undo) = file.set_len(self.len).and_then(|()| file.sync_data()) {
                self.broken = Some(format!("{}: {e}; cutting it back failed: {undo}", path.display()));
            }
            return Err(io_at(&path)(e));
        }
        self.len += buf.len() as u64;
        let mut purged = false;
        for r in records {
            match r.kind {
                Kind::Entry(id) => {
                    self.last_index.insert(self.current, Some(id.index));
                }
                Kind::Truncate => {}
                Kind::Purge(p) => {
                    self.purged = Some(p);
                    purged = true;
                }
                Kind::Vote(v) => self.vote = Some(v),
                Kind::Committed(c) => self.committed = c,
            }
        }
        if purged {
            self.delete_purged()?;
        }
        Ok(locs)
    }

    /// Where the next record goes: the segment written last and the end of
    /// its records. Later writes are at greater positions.
    pub(super) fn position(&self) -> Pos {
        Pos { segment: self.current, offset: self.len }
    }

    /// Deletes the segments, all but the last, whose entries are all purged.
    fn delete_purged(&mut self) -> Result<(), WalError> {
        let upto = self.purged.map(|p| p.index);
        let mut gone = Vec::new();
        for (&n, &last) in &self.last_index {
            if n == self.current {
                break;
            }
            // A segment without entries holds only marks, which later segments repeat.
            match (last, upto) {
                (None, _) => gone.push(n),
                (Some(l), Some(u)) if l <= u => gone.push(n),
                _ => break,
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        for n in &gone {
            let path = segment_path(&self.dir, *n);
            std::fs::remove_file(&path).map_err(io_at(&path))?;
            self.last_index.remove(n);
            // Readers holding the file keep reading it until they drop it.
            self.files.write().unwrap_or_else(|p| p.into_inner()).remove(n);
        }
        sync_dir(&self.dir)
    }
}

/// Removes the entries up to `upto` from `out` and records the mark.
fn purge(out: &mut Replayed, upto: LogId) {
    out.entries = out.entries.split_off(&(upto.index + 1));
    out.purged = Some(upto);
}
