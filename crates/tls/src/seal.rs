//! Encryption at rest: a [`DataKey`] seals the records of the Raft log and
//! the Raft snapshot on disk; it is kept beside them wrapped by a key
//! encryption key (KEK): a random key in a file of its own, or, with
//! autolock, one derived from the cluster's [`UnlockKey`] that a manager is
//! given when it starts.
//!
//! ```text
//! sealed  = nonce (12 random bytes) | AES-256-GCM ciphertext | tag (16)
//! wrapped = sealed, under the KEK, of the 32 bytes of the data key
//! unlock key = STKLOCK-1-<43 chars of unpadded base64url>
//! ```
//!
//! A data key's nonces are a random 32-bit prefix drawn when the key is
//! opened, then a 64-bit counter that starts at a random value and counts
//! up with every seal: within one process a nonce never repeats (a record
//! rewritten at the same place of the log after a truncation gets a new
//! one), and two processes repeat one only if both draw the same prefix
//! (2^-32) and their counter ranges meet. The number of seals under one key
//! is not bounded by the 2^32 that random nonces would allow. A wrapped key
//! (rare) takes a random nonce.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// What a sealed message adds to its plaintext: the nonce and the tag.
pub const OVERHEAD: usize = NONCE_LEN + 16;
/// The prefix of every unlock key.
pub const UNLOCK_PREFIX: &str = "STKLOCK-1-";
/// Associated data of a wrapped data key: a wrapped key is never taken for a record.
const WRAP_AAD: &[u8] = b"stackd data key v1";
const KEK_INFO: &[u8] = b"stackd raft kek v1";

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The system's random source failed.
    #[error("the system's random source failed")]
    Random,
    /// Shorter than a nonce and a tag.
    #[error("a sealed message of {0} bytes is too short")]
    Short(usize),
    /// The tag does not match: another key, or damaged bytes.
    #[error("cannot be opened with this key (another key, or damaged bytes)")]
    Open,
    /// An unlock key that is not one.
    #[error("not an unlock key ({UNLOCK_PREFIX}…): {0}")]
    BadUnlockKey(String),
}

fn random<const N: usize>() -> Result<[u8; N], SealError> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| SealError::Random)?;
    Ok(out)
}

fn aead(key: &[u8; 32]) -> LessSafeKey {
    // 32 bytes is the length AES-256 takes: this cannot fail.
    match UnboundKey::new(&AES_256_GCM, key) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("AES-256 takes a 32-byte key"),
    }
}

fn seal_with(key: &LessSafeKey, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
    seal_nonce(key, random::<NONCE_LEN>()?, aad, plaintext, out)
}

fn seal_nonce(
    key: &LessSafeKey,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SealError> {
    let start = out.len();
    out.reserve(plaintext.len() + OVERHEAD);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out[start + NONCE_LEN..])
        .map_err(|_| SealError::Random)?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < OVERHEAD {
        return Err(SealError::Short(sealed.len()));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[..NONCE_LEN]);
    let mut buf = sealed[NONCE_LEN..].to_vec();
    let len = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| SealError::Open)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// The key the Raft data on disk is sealed with.
pub struct DataKey {
    bytes: [u8; 32],
    key: LessSafeKey,
    /// The nonces' random prefix, for this process.
    prefix: [u8; 4],
    /// The next nonce's counter.
    counter: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(…)")
    }
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> Result<Self, SealError> {
        Self::from_bytes(random::<32>()?)
    }

    fn from_bytes(bytes: [u8; 32]) -> Result<Self, SealError> {
        Ok(Self {
            key: aead(&bytes),
            bytes,
            prefix: random::<4>()?,
            counter: std::sync::atomic::AtomicU64::new(u64::from_le_bytes(random::<8>()?)),
        })
    }

    /// The next nonce: the prefix, then the counter.
    fn next_nonce(&self) -> [u8; NONCE_LEN] {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.prefix);
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        nonce
    }

    /// Seals `plaintext`, appending the sealed bytes to `out`.
    pub fn seal_into(&self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        seal_nonce(&self.key, self.next_nonce(), &[], plaintext, out)
    }

    /// Seals `plaintext`.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        self.seal_into(plaintext, &mut out)?;
        Ok(out)
    }

    /// Opens what [`seal`](Self::seal) made; refuses anything else.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        open_with(&self.key, &[], sealed)
    }

    /// This key, sealed under `kek`.
    pub fn wrap(&self, kek: &Kek) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        seal_with(&aead(&kek.0), WRAP_AAD, &self.bytes, &mut out)?;
        Ok(out)
    }

    /// The key that [`wrap`](Self::wrap) sealed under `kek`.
    pub fn unwrap(wrapped: &[u8], kek: &Kek) -> Result<Self, SealError> {
        let bytes = open_with(&aead(&kek.0), WRAP_AAD, wrapped)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| SealError::Open)?;
        Self::from_bytes(bytes)
    }
}

/// A key encryption key: it wraps a [`DataKey`].
pub struct Kek([u8; 32]);

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(…)")
    }
}

impl Kek {
    /// A new random key, kept in a file beside the data (no autolock).
    pub fn generate() -> Result<Self, SealError> {
        Ok(Self(random::<32>()?))
    }

    /// The key as text, for its file.
    pub fn to_text(&self) -> String {
        B64.encode(self.0)
    }

    /// Reads [`to_text`](Self::to_text).
    pub fn from_text(s: &str) -> Result<Self, SealError> {
        let bytes = B64.decode(s.trim()).map_err(|_| SealError::Open)?;
        Ok(Self(bytes.try_into().map_err(|_| SealError::Open)?))
    }
}

/// The cluster's unlock key (autolock): every manager's data key is wrapped
/// by a KEK derived from it, so a manager cannot start without it.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; 32]);

impl UnlockKey {
    /// A new random key.
    pub fn generate() -> Result<Self, SealError> {
        Ok(Self(random::<32>()?))
    }

    /// The KEK it stands for (HKDF-SHA-256).
    pub fn kek(&self) -> Kek {
        use ring::hkdf;
        struct Len;
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let mut out = [0u8; 32];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&self.0);
        // 32 bytes is within what HKDF-SHA-256 expands to.
        if let Ok(okm) = prk.expand(&[KEK_INFO], Len) {
            let _ = okm.fill(&mut out);
        }
        Kek(out)
    }

    /// A short public name of the key (the first 8 hex digits of its
    /// SHA-256): says which key a locked manager waits for, reveals nothing.
    pub fn id(&self) -> String {
        Sha256::digest(self.0).iter().take(4).map(|b| format!("{b:02x}")).collect()
    }

    /// The key as the operator keeps it (`STKLOCK-1-…`): a secret.
    pub fn to_secret_string(&self) -> String {
        format!("{UNLOCK_PREFIX}{}", B64.encode(self.0))
    }
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnlockKey({})", self.id())
    }
}

impl FromStr for UnlockKey {
    type Err = SealError;

    fn from_str(s: &str) -> Result<Self, SealError> {
        let s = s.trim();
        let body = s.strip_prefix(UNLOCK_PREFIX).ok_or_else(|| {
            SealError::BadUnlockKey(format!("it does not start with {UNLOCK_PREFIX} ({} characters given)", s.len()))
        })?;
        let bytes = B64.decode(body).map_err(|e| SealError::BadUnlockKey(e.to_string()))?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| SealError::BadUnlockKey(format!("{} bytes, not 32", b.len())))?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_refuses_damage() {
        let key = DataKey::generate().expect("key");
        let sealed = key.seal(b"secret value").expect("seal");
        assert_eq!(sealed.len(), b"secret value".len() + OVERHEAD);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(key.open(&sealed).expect("open"), b"secret value");
        // A fresh nonce every time: the prefix, then a counter.
        let next = key.seal(b"secret value").expect("seal");
        assert_ne!(next, sealed);
        assert_eq!(next[..4], sealed[..4], "one prefix per process");
        let count = |s: &[u8]| u64::from_be_bytes(s[4..12].try_into().expect("8 bytes"));
        assert_eq!(count(&next), count(&sealed).wrapping_add(1));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(matches!(key.open(&bad), Err(SealError::Open)), "byte {i} flipped was accepted");
        }
        assert!(matches!(key.open(&sealed[..OVERHEAD - 1]), Err(SealError::Short(_))));
        let other = DataKey::generate().expect("key");
        assert!(matches!(other.open(&sealed), Err(SealError::Open)));
    }

    #[test]
    fn a_data_key_wraps_under_its_kek_only() {
        let key = DataKey::generate().expect("key");
        let unlock = UnlockKey::generate().expect("unlock");
        let wrapped = key.wrap(&unlock.kek()).expect("wrap");
        let back = DataKey::unwrap(&wrapped, &unlock.kek()).expect("unwrap");
        assert_eq!(back.open(&key.seal(b"x").expect("seal")).expect("open"), b"x");
        let wrong = UnlockKey::generate().expect("unlock");
        assert!(DataKey::unwrap(&wrapped, &wrong.kek()).is_err());
        let local = Kek::generate().expect("kek");
        let text = local.to_text();
        let wrapped = key.wrap(&Kek::from_text(&text).expect("parse")).expect("wrap");
        assert!(DataKey::unwrap(&wrapped, &local).is_ok());
        // A wrapped key is not a record: the associated data differs.
        assert!(key.open(&key.wrap(&local).expect("wrap")).is_err());
    }

    #[test]
    fn unlock_keys_parse_their_own_text_only() {
        let k = UnlockKey::generate().expect("unlock");
        let text = k.to_secret_string();
        assert!(text.starts_with(UNLOCK_PREFIX));
        assert_eq!(text.parse::<UnlockKey>().expect("parse"), k);
        assert_eq!(format!(" {text}\n").parse::<UnlockKey>().expect("parse trimmed"), k);
        assert_eq!(k.id().len(), 8);
        assert!(!format!("{k:?}").contains(&text[UNLOCK_PREFIX.len()..]));
        for bad in ["", "STKLOCK-1-", "STKLOCK-1-!!!!", "SWMKEY-1-abc", &text[..text.len() - 2]] {
            assert!(bad.parse::<UnlockKey>().is_err(), "{bad:?} accepted");
        }
    }
}
