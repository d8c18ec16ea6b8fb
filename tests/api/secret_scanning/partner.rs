//! A scanning partner for the tests: P-256 key pairs it signs reports with, and the public
//! keys document it publishes on a loopback HTTP server whose content the test changes (key
//! rotation) and whose fetches it counts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct PartnerKey {
    pub identifier: String,
    signing: SigningKey,
}

impl PartnerKey {
    pub fn new(identifier: &str) -> PartnerKey {
        PartnerKey {
            identifier: identifier.to_owned(),
            signing: SigningKey::random(&mut rand::rngs::OsRng),
        }
    }

    /// base64 of the DER signature over `body`: the signature header's value.
    pub fn sign(&self, body: &[u8]) -> String {
        let signature: DerSignature = self.signing.sign(body);
        STANDARD.encode(signature.as_bytes())
    }

    /// base64 of the same signature as fixed-size `r || s` (64 bytes), not DER.
    pub fn sign_raw(&self, body: &[u8]) -> String {
        let signature: p256::ecdsa::Signature = self.signing.sign(body);
        STANDARD.encode(signature.to_bytes())
    }

    fn listed(&self, current: bool) -> Value {
        let pem = VerifyingKey::from(&self.signing)
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        json!({"key_identifier": self.identifier, "key": pem, "is_current": current})
    }
}

/// The partner's keys document server.
pub struct KeysDocument {
    pub port: u16,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    /// How long each answer is held back, in milliseconds (a slow keys endpoint).
    delay_ms: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for KeysDocument {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl KeysDocument {
    /// Serves a document listing `keys` (the last one current).
    pub async fn serving(keys: &[&PartnerKey]) -> KeysDocument {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let document = Arc::new(Mutex::new(String::new()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (served, counted, delay) = (document.clone(), fetches.clone(), delay_ms.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let body = served.lock().unwrap().clone();
                counted.fetch_add(1, Ordering::SeqCst);
                let delay = Duration::from_millis(delay.load(Ordering::SeqCst));
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => head.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        let server = KeysDocument {
            port,
            document,
            fetches,
            delay_ms,
            accept,
        };
        server.publish(keys);
        server
    }

    /// From now on the document lists `keys` (the last one current).
    pub fn publish(&self, keys: &[&PartnerKey]) {
        let listed: Vec<Value> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| key.listed(i + 1 == keys.len()))
            .collect();
        *self.document.lock().unwrap() = json!({ "public_keys": listed }).to_string();
    }

    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/meta/public_keys/secret_scanning",
            self.port
        )
    }

    /// From now on each answer takes `delay` to come.
    pub fn slow_down(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}
