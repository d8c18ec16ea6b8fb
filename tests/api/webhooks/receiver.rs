//! A webhook receiver on loopback for the webhook tests: a plain HTTP/1.1 server (one request
//! per connection) that records every request it gets and answers as the test scripts it —
//! a status, after a delay, or never. Requests are verified with the `standardwebhooks`
//! crate, as a customer's receiver would.

// Each test uses a different subset.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// This status at once.
    Status(u16),
    /// This status after a delay.
    Slow(u16, Duration),
    /// Never: the connection stays open, unanswered.
    Hang,
}

/// One request as received.
#[derive(Clone)]
pub struct Received {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("path", &self.path)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header: {self:?}"))
            .to_str()
            .expect("ASCII header")
    }

    /// Verifies the request as a Standard Webhooks receiver does (panics if it doesn't).
    pub fn verify(&self, secret: &str) {
        standardwebhooks::Webhook::new(secret)
            .expect("a whsec_ secret")
            .verify(&self.body, &self.headers)
            .unwrap_or_else(|error| panic!("signature refused ({error}): {self:?}"));
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    script: VecDeque<Answer>,
    /// Requests received and neither answered nor abandoned by the sender yet.
    in_flight: usize,
    most_in_flight: usize,
}

pub struct Receiver {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    default: Arc<Mutex<Answer>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Receiver {
    /// A receiver on 127.0.0.1 answering 200 unless scripted otherwise.
    pub async fn start() -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").await.expect("bind")).await
    }

    /// A receiver on an address of the test's choosing (`[::1]:0`, say).
    pub async fn on(listener: TcpListener) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let default = Arc::new(Mutex::new(Answer::Status(200)));
        let (serving, answering) = (shared.clone(), default.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (shared, default) = (serving.clone(), answering.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, shared, default).await;
                });
            }
        });
        Receiver {
            port,
            shared,
            default,
            accept,
        }
    }

    /// `http://127.0.0.1:PORT/hook`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The next requests are answered so, in order; then the default.
    pub fn script(&self, answers: &[Answer]) {
        self.shared.lock().unwrap().script.extend(answers);
    }

    /// How requests are answered once the script has run out.
    pub fn answer_by_default(&self, answer: Answer) {
        *self.default.lock().unwrap() = answer;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// The most requests that were ever open at once (received, and neither answered nor
    /// dropped by the sender).
    pub fn most_in_flight(&self) -> usize {
        self.shared.lock().unwrap().most_in_flight
    }

    /// Waits until at least `count` requests came (false after `within`).
    pub async fn wait_for(&self, count: usize, within: Duration) -> bool {
        crate::helpers::eventually(within, || async { self.received().len() >= count }).await
    }
}

async fn serve(
    mut stream: TcpStream,
    shared: Arc<Mutex<Shared>>,
    default: Arc<Mutex<Answer>>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    let mut headers = http::HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.append(
                http::HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
                http::HeaderValue::from_str(value.trim()).expect("header value"),
            );
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|value| value.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..read]);
    }
    let answer = {
        let mut shared = shared.lock().unwrap();
        shared.received.push(Received {
            path,
            headers,
            body,
            at: std::time::Instant::now(),
        });
        shared.in_flight += 1;
        shared.most_in_flight = shared.most_in_flight.max(shared.in_flight);
        shared
            .script
            .pop_front()
            .unwrap_or(*default.lock().unwrap())
    };
    let answered = answer_request(&mut stream, answer).await;
    shared.lock().unwrap().in_flight -= 1;
    answered
}

/// Answers as scripted; a sender that closes the connection while the answer waits ends it.
async fn answer_request(stream: &mut TcpStream, answer: Answer) -> std::io::Result<()> {
    let (status, delay) = match answer {
        Answer::Status(status) => (status, Duration::ZERO),
        Answer::Slow(status, delay) => (status, delay),
        Answer::Hang => (0, Duration::from_secs(3600)),
    };
    let mut rest = [0u8; 1024];
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        // The sender gave up (or sent more than one request, which it never does).
        _ = stream.read(&mut rest) => return Ok(()),
    }
    if let Answer::Hang = answer {
        return Ok(());
    }
    let response =
        format!("HTTP/1.1 {status} Whatever\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
