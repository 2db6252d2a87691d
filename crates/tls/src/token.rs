//! Join tokens and client tokens: their text form, parsing, and the
//! constant-time checks of their secrets.
//!
//! ```text
//!  join token    STK-1-<64 hex: SHA-256 of the CA certificate>-<32 hex: secret>
//!  client token  STKC-1-<16 hex: token id>-<32 hex: secret>
//! ```
//!
//! A join token lets a new node pin the CA before it trusts anything, then
//! proves it may join. A client token authenticates stackctl; the cluster
//! keeps only the SHA-256 of its secret.
//!
//! Neither type implements `Display`, and their `Debug` hides the secret: the
//! full text comes only from an explicit [`JoinToken::reveal`] or
//! [`ClientToken::reveal`].

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The join token's prefix, version included.
const JOIN_PREFIX: &str = "STK-1-";
/// The client token's prefix, version included.
const CLIENT_PREFIX: &str = "STKC-1-";
/// The join token's shape, for error messages.
const JOIN_SHAPE: &str = "STK-1-<64 hex digits>-<32 hex digits>";
/// The client token's shape, for error messages.
const CLIENT_SHAPE: &str = "STKC-1-<16 hex digits>-<32 hex digits>";
/// Bytes in a secret.
pub const SECRET_LEN: usize = 16;
/// Bytes in a client token id.
const ID_LEN: usize = 8;

/// Why a token or a secret was refused. The messages never contain the
/// token's text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The text is not a join token.
    #[error("not a join token: expected {JOIN_SHAPE}")]
    BadJoinToken,
    /// The text is not a client token.
    #[error("not a client token: expected {CLIENT_SHAPE}")]
    BadClientToken,
    /// Stored secret bytes have the wrong length.
    #[error("a token secret is {SECRET_LEN} bytes, got {0}")]
    SecretLength(usize),
}

/// A token's random secret: 16 bytes. `Debug` hides it; equality is
/// constant-time.
#[derive(Clone)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_LEN];
        rand::thread_rng().fill_bytes(&mut bytes);
        Secret(bytes)
    }

    /// A secret from stored bytes (the cluster state keeps join secrets).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        let array: [u8; SECRET_LEN] = bytes.try_into().map_err(|_| TokenError::SecretLength(bytes.len()))?;
        Ok(Secret(array))
    }

    /// The secret's bytes, to store.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// The lowercase hex SHA-256 of the secret: what the cluster keeps for a
    /// client token.
    pub fn sha256_hex(&self) -> String {
        crate::hex(&Sha256::digest(self.0))
    }

    /// Whether `other` holds the same secret, in time independent of where
    /// they differ.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        ct_eq(&self.0, other)
    }

    fn parse(hex: &str) -> Option<Self> {
        let mut bytes = [0u8; SECRET_LEN];
        crate::unhex(hex, &mut bytes).then_some(Secret(bytes))
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Compares two byte strings in time that depends on their lengths only.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A join token: the digest of the cluster's CA and a join secret (one for
/// managers, one for workers).
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    ca_digest: String,
    secret: Secret,
}

impl JoinToken {
    /// A token for the CA with digest `ca_digest` (64 hex digits, as
    /// [`crate::ca_digest`] makes it) and `secret`.
    pub fn new(ca_digest: &str, secret: Secret) -> Result<Self, TokenError> {
        if !is_hex(ca_digest, 64) {
            return Err(TokenError::BadJoinToken);
        }
        Ok(JoinToken { ca_digest: ca_digest.to_ascii_lowercase(), secret })
    }

    /// Parses `STK-1-<64 hex>-<32 hex>`; surrounding whitespace is ignored,
    /// hex digits may be of either case.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let (ca_digest, secret) = split(text, JOIN_PREFIX, 64).ok_or(TokenError::BadJoinToken)?;
        Ok(JoinToken { ca_digest, secret })
    }

    /// The digest of the CA the joining node must find (lowercase hex).
    pub fn ca_digest(&self) -> &str {
        &self.ca_digest
    }

    /// The join secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The token's full text, secret included: give it only to the operator
    /// who asked for it.
    pub fn reveal(&self) -> String {
        format!("{JOIN_PREFIX}{}-{}", self.ca_digest, crate::hex(&self.secret.0))
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken").field("ca_digest", &self.ca_digest).field("secret", &self.secret).finish()
    }
}

/// A client token: an id, which names the token in the cluster state, and a
/// secret, of which the cluster keeps only the SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientToken {
    id: String,
    secret: Secret,
}

impl ClientToken {
    /// A new token with a random id and secret.
    pub fn generate() -> Self {
        let mut id = [0u8; ID_LEN];
        rand::thread_rng().fill_bytes(&mut id);
        ClientToken { id: crate::hex(&id), secret: Secret::generate() }
    }

    /// Parses `STKC-1-<16 hex>-<32 hex>`; surrounding whitespace is ignored,
    /// hex digits may be of either case.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let (id, secret) = split(text, CLIENT_PREFIX, 2 * ID_LEN).ok_or(TokenError::BadClientToken)?;
        Ok(ClientToken { id, secret })
    }

    /// The token's id (16 lowercase hex digits): not a secret.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The token's secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// What the cluster stores for this token: the lowercase hex SHA-256 of
    /// its secret.
    pub fn secret_sha256(&self) -> String {
        self.secret.sha256_hex()
    }

    /// Whether this token's secret hashes to `stored_sha256` (as
    /// [`ClientToken::secret_sha256`] made it), compared in constant time.
    pub fn verify(&self, stored_sha256: &str) -> bool {
        ct_eq(self.secret_sha256().as_bytes(), stored_sha256.to_ascii_lowercase().as_bytes())
    }

    /// The token's full text, secret included: give it only to the operator
    /// who created it.
    pub fn reveal(&self) -> String {
        format!("{CLIENT_PREFIX}{}-{}", self.id, crate::hex(&self.secret.0))
    }
}

impl fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientToken").field("id", &self.id).field("secret", &self.secret).finish()
    }
}

/// Splits `<prefix><field: field_len hex digits>-<secret: 32 hex digits>`,
/// trimmed, into the field (lowercase) and the secret.
fn split(text: &str, prefix: &str, field_len: usize) -> Option<(String, Secret)> {
    let (field, secret) = text.trim().strip_prefix(prefix)?.split_once('-')?;
    if !is_hex(field, field_len) {
        return None;
    }
    Some((field.to_ascii_lowercase(), Secret::parse(secret)?))
}

/// Whether `s` is exactly `len` hex digits.
fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn join_token_round_trips() {
        let token = JoinToken::new(DIGEST, Secret::generate()).expect("token");
        let text = token.reveal();
        assert!(text.starts_with("STK-1-0123"));
        assert_eq!(text.len(), "STK-1-".len() + 64 + 1 + 32);
        let parsed = JoinToken::parse(&format!("  {text}\n")).expect("parse");
        assert_eq!(parsed, token);
        assert_eq!(parsed.ca_digest(), DIGEST);
        // Upper-case hex is accepted and normalised.
        let upper = JoinToken::parse(&text.to_ascii_uppercase()).expect("upper");
        assert_eq!(upper, token);
    }

    #[test]
    fn join_token_rejects_other_shapes_naming_the_expected_one() {
        let good = JoinToken::new(DIGEST, Secret::generate()).expect("token").reveal();
        let secret_hex = &good[good.len() - 32..];
        for bad in [
            "",
            "STK-1-",
            "STK-2-abc",
            &format!("STK-1-{DIGEST}"),
            &format!("STK-1-{DIGEST}-"),
            &format!("STK-1-{}-{secret_hex}", &DIGEST[..63]),
            &format!("STK-1-{DIGEST}-{}", &secret_hex[..31]),
            &format!("STK-1-{DIGEST}-{secret_hex}0"),
            &format!("STK-1-{DIGEST}-{}g", &secret_hex[..31]),
            &format!("STK-1-{DIGEST}-{secret_hex}-x"),
            &format!("STKC-1-0123456789abcdef-{secret_hex}"),
        ] {
            let err = JoinToken::parse(bad).expect_err(bad);
            assert_eq!(err, TokenError::BadJoinToken, "{bad}");
        }
        let message = TokenError::BadJoinToken.to_string();
        assert_eq!(message, "not a join token: expected STK-1-<64 hex digits>-<32 hex digits>");
        assert!(JoinToken::new("abc", Secret::generate()).is_err());
    }

    #[test]
    fn client_token_round_trips_and_verifies_against_its_digest() {
        let token = ClientToken::generate();
        let text = token.reveal();
        assert!(text.starts_with("STKC-1-"));
        assert_eq!(text.len(), "STKC-1-".len() + 16 + 1 + 32);
        let parsed = ClientToken::parse(&text).expect("parse");
        assert_eq!(parsed, token);
        assert_eq!(parsed.id().len(), 16);

        let stored = token.secret_sha256();
        assert_eq!(stored.len(), 64);
        assert!(parsed.verify(&stored));
        assert!(parsed.verify(&stored.to_ascii_uppercase()));
        assert!(!ClientToken::generate().verify(&stored));
        assert!(!parsed.verify(&stored[..63]));
    }

    #[test]
    fn client_token_rejects_other_shapes() {
        let secret = "0123456789abcdef0123456789abcdef";
        for bad in [
            "",
            "STKC-1-",
            "Bearer STKC-1-0123456789abcdef-0123456789abcdef0123456789abcdef",
            &format!("STKC-1-0123456789abcde-{secret}"),
            &format!("STKC-1-0123456789abcdefa-{secret}"),
            &format!("STKC-1-0123456789abcdeX-{secret}"),
            &format!("STKC-2-0123456789abcdef-{secret}"),
            &format!("STK-1-0123456789abcdef-{secret}"),
            "STKC-1-0123456789abcdef-0123",
        ] {
            assert_eq!(ClientToken::parse(bad), Err(TokenError::BadClientToken), "{bad}");
        }
        assert_eq!(
            TokenError::BadClientToken.to_string(),
            "not a client token: expected STKC-1-<16 hex digits>-<32 hex digits>"
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let join = JoinToken::new(DIGEST, Secret::generate()).expect("token");
        let join_secret = crate::hex(join.secret().as_bytes());
        let shown = format!("{join:?}");
        assert!(!shown.contains(&join_secret), "{shown}");
        assert!(shown.contains("redacted"));

        let client = ClientToken::generate();
        let client_secret = crate::hex(client.secret().as_bytes());
        let shown = format!("{client:?} {:?}", client.secret());
        assert!(!shown.contains(&client_secret), "{shown}");
        assert!(shown.contains(client.id()));
    }

    #[test]
    fn stored_secrets_compare_in_constant_time() {
        let secret = Secret::generate();
        let copy = Secret::from_bytes(secret.as_bytes()).expect("16 bytes");
        assert_eq!(copy, secret);
        assert!(secret.ct_eq(copy.as_bytes()));
        assert!(!secret.ct_eq(Secret::generate().as_bytes()));
        assert!(!secret.ct_eq(&secret.as_bytes()[..15]));
        assert_eq!(Secret::from_bytes(&[0; 3]), Err(TokenError::SecretLength(3)));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"a", b"b"));
    }
}
