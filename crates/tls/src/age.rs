//! The [age](https://age-encryption.org/v1) file format, X25519 recipients
//! only: what cluster snapshots are encrypted with.
//!
//! A snapshot holds the CA key, the join secrets, client tokens and secrets,
//! and any leader must be able to write one on a schedule; yet no manager
//! should hold what opens it. So snapshots are encrypted to a *recipient*
//! (an X25519 public key, `age1…`) kept in the cluster state, whose
//! *identity* (the private half, `AGE-SECRET-KEY-1…`) lives off the cluster.
//! The format is age's, byte for byte, so that Debian's `age` tool opens a
//! snapshot in an emergency without stackd (`age -d -i recovery.key`).
//!
//! Why our own code rather than the `age` crate: the crate brings
//! internationalisation (fluent, i18n-embed), post-quantum and NIST-curve
//! recipients, scrypt and a second set of AEAD/HKDF implementations — some
//! eighty crates — for the one recipient type used here. What this module
//! needs is ring's HKDF, HMAC and ChaCha20-Poly1305 (already linked for
//! TLS) and x25519-dalek for the key agreement (ring's X25519 takes no
//! static private key). The tests check it against the spec's rules and
//! against the `age` tool both ways.
//!
//! ```text
//! age-encryption.org/v1
//! -> X25519 <ephemeral share, base64>
//! <file key wrapped with ChaCha20-Poly1305, base64>
//! --- <HMAC-SHA-256 of the header, base64>
//! <16-byte nonce><payload in 64 KiB ChaCha20-Poly1305 chunks>
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};
use x25519_dalek::{PublicKey, StaticSecret};

/// The first line of every age file.
pub const VERSION_LINE: &str = "age-encryption.org/v1";
const X25519_INFO: &[u8] = b"age-encryption.org/v1/X25519";
const RECIPIENT_HRP: &str = "age";
const IDENTITY_HRP: &str = "age-secret-key-";
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const FILE_KEY: usize = 16;
const NONCE: usize = 16;

/// Why an age file or key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgeError {
    /// The data does not start with age's version line.
    #[error("not an age-encrypted file (no `{VERSION_LINE}` line)")]
    NotAge,
    /// The header is malformed (a line, an encoding, a missing MAC).
    #[error("the age header is malformed: {0}")]
    BadHeader(String),
    /// No X25519 stanza opens with the identity.
    #[error("the key does not open this file (it was encrypted to another recovery key)")]
    WrongKey,
    /// The header's MAC does not match: the header was changed.
    #[error("the age header was altered (its MAC does not match)")]
    HeaderMac,
    /// The payload ends early or a chunk fails its authentication.
    #[error("the encrypted payload is truncated or corrupted (chunk {chunk} fails authentication)")]
    Payload {
        /// Index of the first chunk that failed.
        chunk: u64,
    },
    /// A recipient or identity string that is not a valid key.
    #[error("not a valid age {what}: {why}")]
    BadKey {
        /// "recipient" or "identity".
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The system's random source failed.
    #[error("no randomness available from the system")]
    Random,
    /// A key agreement gave the all-zero secret (a low-order point).
    #[error("the X25519 share is a low-order point")]
    LowOrder,
}

/// A public key files are encrypted to (`age1…`).
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient([u8; 32]);

/// A private key that opens files encrypted to its [`Recipient`]
/// (`AGE-SECRET-KEY-1…`). Its `Debug` prints the recipient only.
#[derive(Clone)]
pub struct Identity(StaticSecret);

fn random<const N: usize>() -> Result<[u8; N], AgeError> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| AgeError::Random)?;
    Ok(b)
}

impl Identity {
    /// A new random identity.
    pub fn generate() -> Result<Self, AgeError> {
        Ok(Self(StaticSecret::from(random::<32>()?)))
    }

    /// Its recipient (the public half).
    pub fn recipient(&self) -> Recipient {
        Recipient(PublicKey::from(&self.0).to_bytes())
    }

    /// The `AGE-SECRET-KEY-1…` string.
    pub fn to_secret_string(&self) -> String {
        bech32::encode(IDENTITY_HRP, &self.0.to_bytes()).to_ascii_uppercase()
    }

    /// Parses an `AGE-SECRET-KEY-1…` string.
    pub fn parse(s: &str) -> Result<Self, AgeError> {
        let bad = |why: String| AgeError::BadKey { what: "identity", why };
        if s.chars().any(|c| c.is_ascii_lowercase()) {
            return Err(bad("an identity is written in upper case (AGE-SECRET-KEY-1…)".into()));
        }
        let (hrp, data) = bech32::decode(&s.to_ascii_lowercase()).map_err(bad)?;
        if hrp != IDENTITY_HRP {
            return Err(bad(format!("it starts with `{}`, not AGE-SECRET-KEY-1", hrp.to_ascii_uppercase())));
        }
        let bytes: [u8; 32] = data.try_into().map_err(|_| bad("the key is not 32 bytes".into()))?;
        Ok(Self(StaticSecret::from(bytes)))
    }

    /// The identities in an identity file (`age-keygen`'s format: one key per
    /// line, `#` comments and blank lines ignored).
    pub fn parse_file(text: &str) -> Result<Vec<Self>, AgeError> {
        let keys: Vec<Self> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(Self::parse)
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Err(AgeError::BadKey { what: "identity", why: "the file holds no AGE-SECRET-KEY-1 line".into() });
        }
        Ok(keys)
    }

    /// The text of an identity file for this key, as `age-keygen` writes it.
    pub fn to_file(&self, created: &str, note: &str) -> String {
        let mut out = format!("# created: {created}\n# public key: {}\n", self.recipient());
        for line in note.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&self.to_secret_string());
        out.push('\n');
        out
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.recipient())
    }
}

impl Recipient {
    /// Parses an `age1…` string.
    pub fn parse(s: &str) -> Result<Self, AgeError> {
        let bad = |why: String| AgeError::BadKey { what: "recipient", why };
        if s.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("a recipient is written in lower case (age1…)".into()));
        }
        let (hrp, data) = bech32::decode(s).map_err(bad)?;
        if hrp != RECIPIENT_HRP {
            return Err(bad(format!("it starts with `{hrp}1`, not `age1`")));
        }
        let bytes: [u8; 32] = data.try_into().map_err(|_| bad("the key is not 32 bytes".into()))?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bech32::encode(RECIPIENT_HRP, &self.0))
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({self})")
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA-256 with a 32-byte output.
fn hkdf32(ikm: &[u8], salt: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let info = [info];
    // Cannot fail: 32 bytes is far below HKDF-SHA-256's limit.
    if let Ok(okm) = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm).expand(&info, Len(32)) {
        let _ = okm.fill(&mut out);
    }
    out
}

fn aead(key: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always valid for ChaCha20-Poly1305.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).unwrap_or_else(|_| unreachable!("32-byte key")))
}

fn stream_nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn wrap_key(shared: &[u8; 32], share: &[u8; 32], recipient: &[u8; 32]) -> [u8; 32] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(share);
    salt[32..].copy_from_slice(recipient);
    hkdf32(shared, &salt, X25519_INFO)
}

fn header_mac_key(file_key: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, &hkdf32(file_key, &[], b"header"))
}

/// Encrypts `plaintext` to `recipient`: a complete age file.
pub fn encrypt(recipient: &Recipient, plaintext: &[u8]) -> Result<Vec<u8>, AgeError> {
    let file_key = random::<FILE_KEY>()?;
    let ephemeral = StaticSecret::from(random::<32>()?);
    let share = PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&PublicKey::from(recipient.0));
    if !shared.was_contributory() {
        return Err(AgeError::LowOrder);
    }
    let mut body = file_key.to_vec();
    aead(&wrap_key(shared.as_bytes(), &share, &recipient.0))
        .seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut body)
        .map_err(|_| AgeError::Random)?;
    let mut header = format!("{VERSION_LINE}\n-> X25519 {}\n{}\n---", B64.encode(share), B64.encode(&body));
    let mac = hmac::sign(&header_mac_key(&file_key), header.as_bytes());
    header.push(' ');
    header.push_str(&B64.encode(mac.as_ref()));
    header.push('\n');

    let nonce = random::<NONCE>()?;
    let key = aead(&hkdf32(&file_key, &nonce, b"payload"));
    let chunks = plaintext.len().div_ceil(CHUNK).max(1);
    let mut out = Vec::with_capacity(header.len() + NONCE + plaintext.len() + chunks * TAG);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&nonce);
    for i in 0..chunks {
        let chunk = &plaintext[i * CHUNK..plaintext.len().min((i + 1) * CHUNK)];
        let start = out.len();
        out.extend_from_slice(chunk);
        let tag = key
            .seal_in_place_separate_tag(stream_nonce(i as u64, i + 1 == chunks), Aad::empty(), &mut out[start..])
            .map_err(|_| AgeError::Random)?;
        out.extend_from_slice(tag.as_ref());
    }
    Ok(out)
}

/// A stanza of the header: its type, arguments and decoded body.
struct Stanza<'a> {
    kind: &'a str,
    args: Vec<&'a str>,
    body: Vec<u8>,
}

/// Splits a header off `data`: the stanzas, the bytes the MAC covers, the
/// MAC, and the payload after the header.
type Parsed<'a> = (Vec<Stanza<'a>>, &'a [u8], Vec<u8>, &'a [u8]);

fn next_line(data: &[u8], at: usize) -> Result<(&str, usize), AgeError> {
    let end = data[at..]
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| AgeError::BadHeader("the header ends early (the file is truncated)".into()))?;
    let line = std::str::from_utf8(&data[at..at + end])
        .map_err(|_| AgeError::BadHeader("a header line is not text".into()))?;
    Ok((line, at + end + 1))
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, AgeError> {
    B64.decode(s).map_err(|e| AgeError::BadHeader(format!("{what} is not canonical unpadded base64: {e}")))
}

fn parse_header(data: &[u8]) -> Result<Parsed<'_>, AgeError> {
    let (first, mut at) = next_line(data, 0).map_err(|_| AgeError::NotAge)?;
    if first != VERSION_LINE {
        return Err(AgeError::NotAge);
    }
    let mut stanzas = Vec::new();
    loop {
        let (line, next) = next_line(data, at)?;
        if let Some(mac) = line.strip_prefix("--- ") {
            let covered = &data[..at + 3];
            let mac = b64(mac, "the header MAC")?;
            return Ok((stanzas, covered, mac, &data[next..]));
        }
        let Some(rest) = line.strip_prefix("-> ") else {
            return Err(AgeError::BadHeader(format!("expected a stanza (`-> …`) or `--- `, found {line:?}")));
        };
        let mut words = rest.split(' ');
        let kind = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        if kind.is_empty() || args.iter().any(|a| a.is_empty()) {
            return Err(AgeError::BadHeader(format!("malformed stanza line {line:?}")));
        }
        at = next;
        let mut body = Vec::new();
        loop {
            let (l, next) = next_line(data, at)?;
            at = next;
            if l.len() > 64 {
                return Err(AgeError::BadHeader("a stanza body line is longer than 64 columns".into()));
            }
            body.extend(b64(l, "a stanza body")?);
            if l.len() < 64 {
                break;
            }
        }
        stanzas.push(Stanza { kind, args, body });
    }
}

/// Opens an age file with one of `identities`: its plaintext.
pub fn decrypt(identities: &[Identity], data: &[u8]) -> Result<Vec<u8>, AgeError> {
    let (stanzas, covered, mac, payload) = parse_header(data)?;
    let mut file_key = None;
    for s in stanzas.iter().filter(|s| s.kind == "X25519") {
        let [share] = s.args.as_slice() else {
            return Err(AgeError::BadHeader("an X25519 stanza takes one argument".into()));
        };
        let share: [u8; 32] = b64(share, "an X25519 share")?
            .try_into()
            .map_err(|_| AgeError::BadHeader("an X25519 share is not 32 bytes".into()))?;
        if s.body.len() != FILE_KEY + TAG {
            return Err(AgeError::BadHeader("an X25519 stanza body is not 32 bytes".into()));
        }
        for id in identities {
            let shared = id.0.diffie_hellman(&PublicKey::from(share));
            if !shared.was_contributory() {
                return Err(AgeError::LowOrder);
            }
            let mut body = s.body.clone();
            let key = wrap_key(shared.as_bytes(), &share, &id.recipient().0);
            if let Ok(k) = aead(&key).open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut body) {
                file_key = Some(k.to_vec());
                break;
            }
        }
        if file_key.is_some() {
            break;
        }
    }
    let file_key = file_key.ok_or(AgeError::WrongKey)?;
    if hmac::verify(&header_mac_key(&file_key), covered, &mac).is_err() {
        return Err(AgeError::HeaderMac);
    }
    if payload.len() < NONCE {
        return Err(AgeError::Payload { chunk: 0 });
    }
    let (nonce, body) = payload.split_at(NONCE);
    let key = aead(&hkdf32(&file_key, nonce, b"payload"));
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    let mut i: u64 = 0;
    loop {
        let take = rest.len().min(CHUNK + TAG);
        let last = rest.len() <= CHUNK + TAG;
        if take < TAG || (last && take == TAG && i > 0) {
            return Err(AgeError::Payload { chunk: i });
        }
        let mut chunk = rest[..take].to_vec();
        let plain = key
            .open_in_place(stream_nonce(i, last), Aad::empty(), &mut chunk)
            .map_err(|_| AgeError::Payload { chunk: i })?;
        out.extend_from_slice(plain);
        rest = &rest[take..];
        if last {
            return Ok(out);
        }
        i += 1;
    }
}

/// BIP 173 bech32 (not bech32m), without the 90-character limit, as age
/// uses it for its keys.
mod bech32 {
    const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    const GEN: [u32; 5] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3];

    fn polymod(values: impl Iterator<Item = u8>) -> u32 {
        let mut chk: u32 = 1;
        for v in values {
            let top = chk >> 25;
            chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
            for (i, g) in GEN.iter().enumerate() {
                if (top >> i) & 1 == 1 {
                    chk ^= g;
                }
            }
        }
        chk
    }

    fn hrp_expand(hrp: &str) -> impl Iterator<Item = u8> + '_ {
        hrp.bytes().map(|b| b >> 5).chain(std::iter::once(0)).chain(hrp.bytes().map(|b| b & 31))
    }

    fn to_5bit(data: &[u8]) -> Vec<u8> {
        let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
        for b in data {
            acc = (acc << 8) | u32::from(*b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(((acc >> bits) & 31) as u8);
            }
        }
        if bits > 0 {
            out.push(((acc << (5 - bits)) & 31) as u8);
        }
        out
    }

    fn from_5bit(data: &[u8]) -> Result<Vec<u8>, String> {
        let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
        for v in data {
            acc = (acc << 5) | u32::from(*v);
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                out.push(((acc >> bits) & 0xff) as u8);
            }
        }
        if bits >= 5 || (acc & ((1 << bits) - 1)) != 0 {
            return Err("bad padding".into());
        }
        Ok(out)
    }

    /// Lower-case bech32 of `data` under `hrp`.
    pub(super) fn encode(hrp: &str, data: &[u8]) -> String {
        let values = to_5bit(data);
        let pm = polymod(hrp_expand(hrp).chain(values.iter().copied()).chain([0u8; 6])) ^ 1;
        let mut out = String::with_capacity(hrp.len() + 1 + values.len() + 6);
        out.push_str(hrp);
        out.push('1');
        for v in values.iter().copied().chain((0..6).map(|i| ((pm >> (5 * (5 - i))) & 31) as u8)) {
            out.push(char::from(CHARSET[usize::from(v)]));
        }
        out
    }

    /// The hrp and data of a lower-case bech32 string.
    pub(super) fn decode(s: &str) -> Result<(String, Vec<u8>), String> {
        let sep = s.rfind('1').ok_or("no `1` separator")?;
        let (hrp, rest) = (&s[..sep], &s[sep + 1..]);
        if hrp.is_empty() || rest.len() < 6 {
            return Err("too short".into());
        }
        let values = rest
            .bytes()
            .map(|c| CHARSET.iter().position(|x| *x == c).map(|p| p as u8))
            .collect::<Option<Vec<u8>>>()
            .ok_or("a character outside the bech32 alphabet")?;
        if polymod(hrp_expand(hrp).chain(values.iter().copied())) != 1 {
            return Err("bad checksum (a character is mistyped)".into());
        }
        Ok((hrp.to_string(), from_5bit(&values[..values.len() - 6])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_every_chunk_boundary() {
        let id = Identity::generate().expect("id");
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let file = encrypt(&id.recipient(), &plain).expect("encrypt");
            assert_eq!(decrypt(std::slice::from_ref(&id), &file).expect("decrypt"), plain, "len {len}");
        }
    }

    #[test]
    fn keys_round_trip_through_their_strings() {
        let id = Identity::generate().expect("id");
        let s = id.to_secret_string();
        assert!(s.starts_with("AGE-SECRET-KEY-1"), "{s}");
        let back = Identity::parse(&s).expect("parse");
        assert_eq!(back.recipient(), id.recipient());
        let r = id.recipient().to_string();
        assert!(r.starts_with("age1") && r.len() == 62, "{r}");
        assert_eq!(Recipient::parse(&r).expect("parse"), id.recipient());
        let file = id.to_file("2026-12-07T00:00:00Z", "keep this off the cluster");
        let ids = Identity::parse_file(&file).expect("file");
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].recipient(), id.recipient());
    }

    // A key from age's own documentation (age-keygen output in the README).
    #[test]
    fn a_published_recipient_parses() {
        let r = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        assert_eq!(Recipient::parse(r).expect("parse").to_string(), r);
        let mut typo = r.to_string();
        typo.replace_range(10..11, "q");
        assert!(matches!(Recipient::parse(&typo), Err(AgeError::BadKey { .. })));
    }

    #[test]
    fn a_wrong_key_a_flipped_byte_and_a_truncation_are_refused() {
        let id = Identity::generate().expect("id");
        let other = Identity::generate().expect("id");
        let plain = vec![7u8; CHUNK + 100];
        let file = encrypt(&id.recipient(), &plain).expect("encrypt");
        assert_eq!(decrypt(&[other], &file), Err(AgeError::WrongKey));
        let ids = [id];
        for at in [30, file.len() / 2, file.len() - 1] {
            let mut bad = file.clone();
            bad[at] ^= 0x01;
            assert!(decrypt(&ids, &bad).is_err(), "flip at {at} accepted");
        }
        for len in [0, 10, 100, file.len() - 1, file.len() - CHUNK] {
            assert!(decrypt(&ids, &file[..len]).is_err(), "truncation to {len} accepted");
        }
        // Dropping exactly the last chunk leaves a full chunk not marked last.
        let header_end = file.len() - (plain.len() + 2 * TAG);
        let cut = header_end + CHUNK + TAG;
        assert_eq!(decrypt(&ids, &file[..cut]), Err(AgeError::Payload { chunk: 0 }));
        assert_eq!(decrypt(&ids, b"hello\n"), Err(AgeError::NotAge));
    }

    #[test]
    fn a_changed_header_fails_its_mac() {
        let id = Identity::generate().expect("id");
        let file = encrypt(&id.recipient(), b"x").expect("encrypt");
        assert!(file.starts_with(VERSION_LINE.as_bytes()));
        // Insert an unknown stanza: the MAC no longer covers the header.
        let pos = file.windows(4).position(|w| w == b"\n---").expect("mac line") + 1;
        let mut bad = file[..pos].to_vec();
        bad.extend_from_slice(b"-> grease x\n\n");
        bad.extend_from_slice(&file[pos..]);
        assert_eq!(decrypt(&[id], &bad), Err(AgeError::HeaderMac));
    }
}
