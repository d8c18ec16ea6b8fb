//! Property tests (proptest) of the pure parsers that untrusted input reaches: API keys, key
//! hashes in hex, display names. No server, no database. The Authorization header and the
//! JSON bodies are exercised through a real server in `tests/api/security.rs`.

use logstitch_gateway::domain::{ApiKey, DisplayName, KeyHash, KeyType, MalformedKey};
use proptest::prelude::*;

const KEY_LEN: usize = 41;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The README's checksum, computed independently of the crate: CRC32 of everything before it,
/// as 6 base62 digits, most significant first.
fn spec_checksum(payload: &str) -> String {
    let mut value = u64::from(crc32fast::hash(payload.as_bytes()));
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(digits.to_vec()).unwrap()
}

fn base62_char() -> impl Strategy<Value = char> {
    prop::sample::select(BASE62.to_vec()).prop_map(char::from)
}

/// A well-formed key built from the documented format: tag, 32 base62 characters, checksum.
fn spec_key() -> impl Strategy<Value = (KeyType, String)> {
    (
        prop_oneof![Just(KeyType::Master), Just(KeyType::Project)],
        prop::collection::vec(base62_char(), 32),
    )
        .prop_map(|(key_type, body)| {
            let tag = match key_type {
                KeyType::Master => "mk_",
                KeyType::Project => "pk_",
            };
            let payload: String = tag.chars().chain(body).collect();
            let key = format!("{payload}{}", spec_checksum(&payload));
            (key_type, key)
        })
}

/// Characters of every UTF-8 width, control characters and our own alphabet's neighbours.
fn any_width_char() -> impl Strategy<Value = char> {
    prop_oneof![
        base62_char(),
        Just('_'),
        Just('-'),
        any::<char>(),
        prop::char::range('\u{80}', '\u{7ff}'),   // 2 bytes
        prop::char::range('\u{800}', '\u{ffff}'), // 3 bytes
        prop::char::range('\u{10000}', '\u{10ffff}'), // 4 bytes
        prop::char::range('\u{0}', '\u{1f}'),
    ]
}

/// Exactly 41 *bytes* (the length check is in bytes) with a multi-byte character somewhere,
/// often straddling the end of the 3-byte type tag: a valid key with `width` ASCII characters
/// at `at` replaced by one character `width` bytes long.
fn key_length_with_multibyte() -> impl Strategy<Value = String> {
    (
        spec_key(),
        0usize..KEY_LEN,
        prop::char::range('\u{80}', '\u{10ffff}'),
    )
        .prop_map(|((_, key), at, wide)| {
            let width = wide.len_utf8();
            let at = at.min(KEY_LEN - width);
            let mut out = String::with_capacity(KEY_LEN);
            out.push_str(&key[..at]);
            out.push(wide);
            out.push_str(&key[at + width..]);
            assert_eq!(out.len(), KEY_LEN);
            out
        })
}

fn key_parsers_agree_and_never_panic(candidate: &str) -> Result<(), TestCaseError> {
    // A panic here fails the property (proptest reports the shrunk input).
    let checked = ApiKey::check_format(candidate);
    let parsed = ApiKey::parse(candidate);
    prop_assert_eq!(
        checked.clone(),
        parsed
            .as_ref()
            .map(|key| key.key_type())
            .map_err(Clone::clone)
    );
    if checked.is_ok() {
        // Anything accepted has the documented shape.
        prop_assert_eq!(candidate.len(), KEY_LEN);
        prop_assert!(candidate.starts_with("mk_") || candidate.starts_with("pk_"));
        prop_assert!(candidate[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        prop_assert_eq!(&candidate[35..], spec_checksum(&candidate[..35]));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn key_parsing_never_panics_on_arbitrary_strings(candidate in any::<String>()) {
        key_parsers_agree_and_never_panic(&candidate)?;
    }

    #[test]
    fn key_parsing_never_panics_on_strings_of_any_char_width(
        chars in prop::collection::vec(any_width_char(), 0..48)
    ) {
        let candidate: String = chars.into_iter().collect();
        key_parsers_agree_and_never_panic(&candidate)?;
    }

    #[test]
    fn key_parsing_never_panics_on_key_length_strings_with_multibyte_characters(
        candidate in key_length_with_multibyte()
    ) {
        key_parsers_agree_and_never_panic(&candidate)?;
        prop_assert!(ApiKey::check_format(&candidate).is_err(), "accepted {:?}", candidate);
    }

    #[test]
    fn every_key_of_the_documented_format_is_accepted_with_its_type(
        (key_type, key) in spec_key()
    ) {
        prop_assert_eq!(ApiKey::check_format(&key), Ok(key_type));
        let parsed = ApiKey::parse(&key).unwrap();
        prop_assert_eq!(parsed.key_type(), key_type);
        prop_assert_eq!(parsed.expose(), key.as_str());
        let prefix = parsed.prefix();
        prop_assert_eq!(prefix.as_str(), &key[..7]);
        prop_assert_eq!(parsed.hash(), KeyHash::of(&key));
        // Debug never shows the secret, not even its random part.
        let debug = format!("{parsed:?}");
        prop_assert!(!debug.contains(&key[3..]), "{}", debug);
    }

    #[test]
    fn every_generated_key_is_accepted_and_follows_the_documented_format(
        key_type in prop_oneof![Just(KeyType::Master), Just(KeyType::Project)]
    ) {
        let key = ApiKey::generate(key_type);
        let plaintext = key.expose();
        prop_assert_eq!(ApiKey::check_format(plaintext), Ok(key_type));
        prop_assert_eq!(ApiKey::parse(plaintext).unwrap().key_type(), key_type);
        prop_assert_eq!(&plaintext[35..], spec_checksum(&plaintext[..35]));
        let debug = format!("{key:?}");
        prop_assert!(!debug.contains(&plaintext[3..]), "{}", debug);
    }
}

proptest! {
    // Each case checks 41 positions x ~70 replacements exhaustively.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_single_character_change_of_a_valid_key_is_refused(
        (_, key) in spec_key(),
        odd in prop::collection::vec(any_width_char(), 8),
    ) {
        let replacements: Vec<char> = BASE62
            .iter()
            .map(|&b| char::from(b))
            .chain(['_', '-', ' ', '.', '\0', 'é', '€', '🔑'])
            .chain(odd)
            .collect();
        let original: Vec<char> = key.chars().collect();
        for at in 0..original.len() {
            for &replacement in &replacements {
                if replacement == original[at] {
                    continue;
                }
                let mut changed = original.clone();
                changed[at] = replacement;
                let typo: String = changed.into_iter().collect();
                let verdict = ApiKey::check_format(&typo);
                prop_assert!(verdict.is_err(), "accepted {:?} (from {:?})", typo, key);
                // Past the tag, a base62 typo keeps the shape: only the checksum can catch it.
                if at >= 3 && replacement.is_ascii_alphanumeric() {
                    prop_assert_eq!(verdict, Err(MalformedKey::Checksum));
                }
            }
        }
        // And the generated keys, too.
        let generated = ApiKey::generate(KeyType::Project);
        let mut bytes = generated.expose().as_bytes().to_vec();
        for at in 0..bytes.len() {
            let before = bytes[at];
            for &replacement in BASE62.iter().filter(|&&b| b != before) {
                bytes[at] = replacement;
                let typo = std::str::from_utf8(&bytes).unwrap();
                prop_assert!(ApiKey::check_format(typo).is_err(), "accepted {:?}", typo);
            }
            bytes[at] = before;
        }
    }
}

fn is_hex_64(candidate: &str) -> bool {
    candidate.len() == 64 && candidate.bytes().all(|b| b.is_ascii_hexdigit())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn key_hash_round_trips_through_hex(bytes in prop::array::uniform32(any::<u8>())) {
        let hash = KeyHash::from_bytes(&bytes).unwrap();
        let hex = hash.to_hex();
        prop_assert!(is_hex_64(&hex));
        prop_assert_eq!(hex.clone(), hex.to_lowercase());
        prop_assert_eq!(KeyHash::from_hex(&hex), Some(hash));
        prop_assert_eq!(KeyHash::from_hex(&hex.to_uppercase()), Some(hash));
        prop_assert_eq!(hash.as_bytes(), &bytes);
    }

    #[test]
    fn key_hash_of_any_text_round_trips(text in any::<String>()) {
        let hash = KeyHash::of(&text);
        prop_assert_eq!(KeyHash::from_hex(&hash.to_hex()), Some(hash));
        prop_assert_eq!(KeyHash::from_bytes(hash.as_bytes()), Some(hash));
    }

    /// Accepts exactly 64 hex digits (no sign, no spaces, no other length), never panics.
    #[test]
    fn key_hash_from_hex_accepts_exactly_64_hex_digits(
        candidate in prop_oneof![
            any::<String>(),
            "[0-9a-fA-F+\\- ]{64}",
            "[0-9a-f]{62,66}",
            // A sign where a digit pair starts: `u8::from_str_radix` alone would accept "+f".
            ("[0-9a-f]{64}", 0usize..32).prop_map(|(hex, pair)| {
                let mut bytes = hex.into_bytes();
                bytes[2 * pair] = b'+';
                String::from_utf8(bytes).unwrap()
            }),
            prop::collection::vec(any_width_char(), 30..66)
                .prop_map(|chars| chars.into_iter().collect::<String>()),
        ]
    ) {
        let parsed = KeyHash::from_hex(&candidate);
        prop_assert_eq!(parsed.is_some(), is_hex_64(&candidate), "{:?}", candidate);
        if let Some(hash) = parsed {
            prop_assert_eq!(hash.to_hex(), candidate.to_lowercase());
        }
    }

    #[test]
    fn key_hash_from_bytes_takes_exactly_32(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(KeyHash::from_bytes(&bytes).is_some(), bytes.len() == 32);
    }
}

/// The documented rule: 1-100 Unicode characters, not blank, no control characters.
fn is_valid_name(raw: &str) -> bool {
    let chars = raw.chars().count();
    (1..=100).contains(&chars)
        && !raw.chars().all(char::is_whitespace)
        && !raw.chars().any(char::is_control)
}

/// Characters that are neither whitespace nor control, of every width.
fn name_char() -> impl Strategy<Value = char> {
    any::<char>().prop_filter("printable, not whitespace", |c| {
        !c.is_control() && !c.is_whitespace()
    })
}

fn whitespace_char() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        ' ', '\u{a0}', '\u{2003}', '\u{3000}', '\u{2028}', '\u{85}', '\t', '\n',
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn display_name_follows_the_documented_rule_and_never_panics(
        raw in prop_oneof![
            any::<String>(),
            prop::collection::vec(any_width_char(), 0..110)
                .prop_map(|chars| chars.into_iter().collect::<String>()),
            prop::collection::vec(whitespace_char(), 0..5)
                .prop_map(|chars| chars.into_iter().collect::<String>()),
        ]
    ) {
        let parsed = DisplayName::parse(&raw);
        prop_assert_eq!(parsed.is_ok(), is_valid_name(&raw), "{:?} -> {:?}", raw, parsed);
        match parsed {
            Ok(name) => prop_assert_eq!(name.as_str(), raw.as_str()),
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }

    #[test]
    fn display_name_accepts_every_1_to_100_printable_characters(
        chars in prop::collection::vec(name_char(), 1..=100),
        padding in prop::collection::vec(whitespace_char().prop_filter("not control", |c| !c.is_control()), 0..3),
    ) {
        // Surrounding spaces are allowed as long as the total stays within 100.
        let core: String = chars.into_iter().collect();
        prop_assert!(DisplayName::parse(&core).is_ok(), "{:?}", core);
        let padded: String = padding.iter().chain(core.chars().collect::<Vec<_>>().iter()).collect();
        prop_assert_eq!(DisplayName::parse(&padded).is_ok(), padded.chars().count() <= 100);
    }

    #[test]
    fn display_name_refuses_101_or_more_characters(
        chars in prop::collection::vec(name_char(), 101..300)
    ) {
        let raw: String = chars.into_iter().collect();
        prop_assert!(DisplayName::parse(&raw).is_err());
    }

    #[test]
    fn display_name_refuses_blank_and_control_characters(
        blank in prop::collection::vec(whitespace_char(), 1..50),
        chars in prop::collection::vec(name_char(), 0..99),
        control in prop::char::range('\u{0}', '\u{1f}'),
        at in any::<prop::sample::Index>(),
    ) {
        let blank: String = blank.into_iter().collect();
        prop_assert!(DisplayName::parse(&blank).is_err(), "{:?}", blank);
        let mut with_control = chars;
        with_control.insert(at.index(with_control.len() + 1), control);
        let with_control: String = with_control.into_iter().collect();
        prop_assert!(DisplayName::parse(&with_control).is_err(), "{:?}", with_control);
        let del: String = format!("ok{}", '\u{7f}');
        prop_assert!(DisplayName::parse(&del).is_err());
    }
}
