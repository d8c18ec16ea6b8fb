//! A report's signature: base64 of a DER ECDSA P-256 / SHA-256 signature over the raw body.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};

/// Whether `signature` (the header's value) is `key`'s signature of `body`. High-S
/// signatures verify too: the partners sign with libraries that don't normalise S.
pub fn verifies(key: &VerifyingKey, signature: &[u8], body: &[u8]) -> bool {
    let Ok(der) = STANDARD.decode(signature.trim_ascii()) else {
        return false;
    };
    let Ok(signature) = DerSignature::from_bytes(&der) else {
        return false;
    };
    key.verify(body, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;

    use super::*;

    fn signed(body: &[u8]) -> (VerifyingKey, Vec<u8>) {
        let signing = SigningKey::random(&mut rand::rngs::OsRng);
        let signature: DerSignature = signing.sign(body);
        let encoded = STANDARD.encode(signature.as_bytes()).into_bytes();
        (VerifyingKey::from(&signing), encoded)
    }

    #[test]
    fn the_signature_of_the_body_verifies_and_nothing_else_does() {
        let body = br#"[{"token":"x","type":"t"}]"#;
        let (key, signature) = signed(body);
        assert!(verifies(&key, &signature, body));
        assert!(!verifies(
            &key,
            &signature,
            br#"[{"token":"y","type":"t"}]"#
        ));
        let (other, _) = signed(body);
        assert!(!verifies(&other, &signature, body));
        assert!(!verifies(&key, b"not base64!", body));
        assert!(!verifies(&key, b"AAAA", body));
        assert!(!verifies(&key, b"", body));
    }

    #[test]
    fn a_high_s_signature_verifies() {
        let body = b"[]";
        let signing = SigningKey::random(&mut rand::rngs::OsRng);
        let signature: p256::ecdsa::Signature = signing.sign(body);
        let (r, s) = signature.split_scalars();
        // (r, n - s) is the same signature with the other S.
        let flipped = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let encoded = STANDARD.encode(flipped.to_der().as_bytes());
        assert!(verifies(
            &VerifyingKey::from(&signing),
            encoded.as_bytes(),
            body
        ));
    }
}
