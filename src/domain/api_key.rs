//! API keys: generation, parsing (format + checksum), hashing, and the public prefix.
//!
//! Format: `mk_` or `pk_`, then 32 base62 characters from the OS CSPRNG (about 190 bits),
//! then a 6-character base62 CRC32 of everything before it. The checksum lets a mistyped or
//! made-up key be refused without a lookup, and lets secret scanners recognise our keys.

use std::fmt;

use rand::{distributions::Alphanumeric, rngs::OsRng, Rng};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const RANDOM_CHARS: usize = 32;
const CHECKSUM_CHARS: usize = 6;
const TYPE_TAG_CHARS: usize = 3;
/// Every key we issue is exactly this long; anything else is malformed.
pub const KEY_LEN: usize = TYPE_TAG_CHARS + RANDOM_CHARS + CHECKSUM_CHARS;
const PREFIX_CHARS: usize = 7;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Master,
    Project,
}

/// From settings (`gateway.routes.key_types`): "master" or "project"; anything else is an error.
impl<'de> serde::Deserialize<'de> for KeyType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        KeyType::from_name(&raw).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{raw:?} is not a key type (\"project\" or \"master\")"
            ))
        })
    }
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Master => "master",
            KeyType::Project => "project",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            KeyType::Master => "mk_",
            KeyType::Project => "pk_",
        }
    }

    /// Parses the stored/serialized name ("master", "project").
    pub fn from_name(name: &str) -> Option<KeyType> {
        match name {
            "master" => Some(KeyType::Master),
            "project" => Some(KeyType::Project),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedKey {
    #[error("API key must be {KEY_LEN} characters")]
    Length,
    #[error("API key must start with mk_ or pk_")]
    TypeTag,
    #[error("API key contains characters outside base62")]
    Alphabet,
    #[error("API key checksum does not match")]
    Checksum,
}

/// A plaintext key. Its `Debug` never shows the secret; only `expose` does, and only the
/// creation response and the CLI call it.
#[derive(Clone)]
pub struct ApiKey {
    plaintext: String,
    key_type: KeyType,
}

impl ApiKey {
    pub fn generate(key_type: KeyType) -> ApiKey {
        let mut plaintext = String::with_capacity(KEY_LEN);
        plaintext.push_str(key_type.tag());
        plaintext.extend(
            OsRng
                .sample_iter(&Alphanumeric)
                .take(RANDOM_CHARS)
                .map(char::from),
        );
        let checksum = checksum(plaintext.as_bytes());
        plaintext.push_str(std::str::from_utf8(&checksum).expect("base62 digits are ASCII"));
        ApiKey {
            plaintext,
            key_type,
        }
    }

    /// Checks length, type tag, alphabet and checksum; never touches storage.
    pub fn parse(candidate: &str) -> Result<ApiKey, MalformedKey> {
        let key_type = ApiKey::check_format(candidate)?;
        Ok(ApiKey {
            plaintext: candidate.to_owned(),
            key_type,
        })
    }

    /// The checks of [`ApiKey::parse`] without copying the secret: the auth hot path hashes
    /// the header value in place.
    pub fn check_format(candidate: &str) -> Result<KeyType, MalformedKey> {
        if candidate.len() != KEY_LEN {
            return Err(MalformedKey::Length);
        }
        // Bytes, not `&str`: a multi-byte character across byte 3 must not panic the slicing.
        let key_type = match &candidate.as_bytes()[..TYPE_TAG_CHARS] {
            b"mk_" => KeyType::Master,
            b"pk_" => KeyType::Project,
            _ => return Err(MalformedKey::TypeTag),
        };
        let body = &candidate.as_bytes()[TYPE_TAG_CHARS..];
        if !body.iter().all(u8::is_ascii_alphanumeric) {
            return Err(MalformedKey::Alphabet);
        }
        let (payload, given) = candidate.as_bytes().split_at(KEY_LEN - CHECKSUM_CHARS);
        let expected = checksum(payload);
        if !bool::from(expected.ct_eq(given)) {
            return Err(MalformedKey::Checksum);
        }
        Ok(key_type)
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.plaintext)
    }

    pub fn prefix(&self) -> KeyPrefix {
        KeyPrefix(self.plaintext[..PREFIX_CHARS].to_owned())
    }

    /// The plaintext. Call sites are the creation response and CLI output only.
    pub fn expose(&self) -> &str {
        &self.plaintext
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}[redacted])", self.key_type.tag())
    }
}

/// CRC32 of `payload`, as 6 base62 digits (62^6 > 2^32, so every CRC fits).
fn checksum(payload: &[u8]) -> [u8; CHECKSUM_CHARS] {
    let mut value = u64::from(crc32fast::hash(payload));
    let mut digits = [b'0'; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits
}

/// SHA-256 of a plaintext key: what storage and the cache know a key by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn of(plaintext: &str) -> KeyHash {
        KeyHash(Sha256::digest(plaintext.as_bytes()).into())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<KeyHash> {
        bytes.try_into().ok().map(KeyHash)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Option<KeyHash> {
        // Digits only: `from_str_radix` alone would also take a sign ("+f").
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(KeyHash(bytes))
    }
}

impl fmt::Debug for KeyHash {
    // A hash is not a secret, but a short form keeps logs readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", &self.to_hex()[..12])
    }
}

/// The first 7 characters of a key ("pk_abc1"): safe to show, enough to recognise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A prefix read back from the database, which only ever stores [`ApiKey::prefix`]'s.
    pub fn from_stored(stored: String) -> KeyPrefix {
        KeyPrefix(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_with_their_type() {
        for key_type in [KeyType::Master, KeyType::Project] {
            let key = ApiKey::generate(key_type);
            assert_eq!(key.expose().len(), KEY_LEN);
            assert!(key.expose().starts_with(key_type.tag()));
            let parsed = ApiKey::parse(key.expose()).unwrap();
            assert_eq!(parsed.key_type(), key_type);
            assert_eq!(parsed.hash(), key.hash());
        }
    }

    #[test]
    fn generated_keys_differ() {
        let a = ApiKey::generate(KeyType::Project);
        let b = ApiKey::generate(KeyType::Project);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn a_single_changed_character_fails_the_checksum() {
        let key = ApiKey::generate(KeyType::Project);
        let mut chars: Vec<char> = key.expose().chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(ApiKey::parse(&typo).unwrap_err(), MalformedKey::Checksum);
    }

    #[test]
    fn malformed_keys_are_refused_by_kind() {
        let key = ApiKey::generate(KeyType::Project);
        let good = key.expose();
        assert_eq!(ApiKey::parse("pk_short").unwrap_err(), MalformedKey::Length);
        assert_eq!(ApiKey::parse("").unwrap_err(), MalformedKey::Length);
        let wrong_tag = format!("xk_{}", &good[3..]);
        assert_eq!(
            ApiKey::parse(&wrong_tag).unwrap_err(),
            MalformedKey::TypeTag
        );
        let bad_alphabet = format!("{}-{}", &good[..10], &good[11..]);
        assert_eq!(
            ApiKey::parse(&bad_alphabet).unwrap_err(),
            MalformedKey::Alphabet
        );
        // Multi-byte characters must not panic the slicing.
        let unicode = format!("pk_{}", "é".repeat(19));
        assert!(ApiKey::parse(&unicode).is_err());
    }

    #[test]
    fn prefix_is_the_first_seven_characters() {
        let key = ApiKey::generate(KeyType::Project);
        assert_eq!(key.prefix().as_str(), &key.expose()[..7]);
        assert!(key.prefix().as_str().starts_with("pk_"));
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let key = ApiKey::generate(KeyType::Master);
        let debug = format!("{key:?}");
        assert!(!debug.contains(&key.expose()[3..]));
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn hash_is_sha256_of_the_plaintext_and_round_trips_through_hex() {
        let hash = KeyHash::of("abc");
        assert_eq!(
            hash.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(KeyHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(KeyHash::from_hex("zz"), None);
        assert_eq!(KeyHash::from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn checksum_is_always_six_base62_digits() {
        for payload in [&b""[..], b"pk_", b"\xff\xff\xff\xff"] {
            let sum = checksum(payload);
            assert_eq!(sum.len(), CHECKSUM_CHARS);
            assert!(sum.iter().all(u8::is_ascii_alphanumeric));
        }
    }
}
