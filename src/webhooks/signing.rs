//! Endpoint secrets and the `webhook-signature` header (Standard Webhooks 1.0): the secret is
//! shown once as `whsec_` + base64 of its bytes; signatures are made by the `standardwebhooks`
//! crate, the reference implementation receivers' libraries agree with.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use standardwebhooks::Webhook;

/// How many random bytes a new secret has.
pub const SECRET_BYTES: usize = 32;
/// The prefix of a secret as the customer sees it.
pub const SECRET_PREFIX: &str = "whsec_";

/// An endpoint's signing key: the raw bytes (what `whsec_…` decodes to). Never printed.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// A new secret: `whsec_` + base64 (standard, padded) of 32 random bytes, as shown to the
/// customer once, and the secret itself.
pub fn new_secret() -> (String, WebhookSecret) {
    let mut bytes = vec![0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    let shown = format!("{SECRET_PREFIX}{}", STANDARD.encode(&bytes));
    (shown, WebhookSecret(bytes))
}

impl WebhookSecret {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        WebhookSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `webhook-signature` header value, `v1,<base64 HMAC-SHA256 of id.timestamp.body>`.
    ///
    /// The body is JSON, so UTF-8 (the `standardwebhooks` crate signs only UTF-8 payloads): a
    /// body that is not would be signed as its lossy UTF-8 form, a signature no receiver
    /// accepts, rather than a panic in the dispatcher.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        debug_assert!(std::str::from_utf8(body).is_ok(), "webhook bodies are JSON");
        let payload = String::from_utf8_lossy(body);
        Webhook::from_bytes(self.0.clone())
            .and_then(|webhook| webhook.sign(msg_id, timestamp_secs, payload.as_bytes()))
            .expect("a key from bytes and a UTF-8 payload always sign")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn headers(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(signature).unwrap(),
        );
        headers
    }

    #[test]
    fn a_new_secret_is_whsec_and_32_random_bytes() {
        let (shown, secret) = new_secret();
        let encoded = shown.strip_prefix("whsec_").unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap(), secret.as_bytes());
        assert_eq!(secret.as_bytes().len(), 32);
        assert_ne!(new_secret().0, shown);
    }

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = WebhookSecret::from_bytes(vec![0xAB; 32]);
        assert_eq!(format!("{secret:?}"), "WebhookSecret(..)");
    }

    #[test]
    fn a_signature_verifies_with_a_standard_webhooks_receiver() {
        let (shown, secret) = new_secret();
        let body = br#"{"type":"key.revoked","timestamp":"2026-01-01T00:00:00Z","data":{}}"#;
        let now = chrono::Utc::now().timestamp();
        let signature = secret.sign("0190a2b4-delivery", now, body);
        assert!(signature.starts_with("v1,"));
        let receiver = Webhook::new(&shown).unwrap();
        receiver
            .verify(body, &headers("0190a2b4-delivery", now, &signature))
            .unwrap();
        // Another id, body or secret does not verify.
        let other = headers("another-delivery", now, &signature);
        assert!(receiver.verify(body, &other).is_err());
        let same = headers("0190a2b4-delivery", now, &signature);
        assert!(receiver.verify(b"{}", &same).is_err());
        let stranger = Webhook::new(&new_secret().0).unwrap();
        assert!(stranger.verify(body, &same).is_err());
    }

    #[test]
    fn matches_the_specification_example() {
        // The example of the Standard Webhooks specification.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = WebhookSecret::from_bytes(key).sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
