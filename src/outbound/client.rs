//! One delivery attempt: a POST to an endpoint over HTTP/1.1 (rustls for `https://`), judged
//! by its status. Connections go only to addresses `target` approved: the connector resolves
//! every name itself through `CheckedResolver` at each new connection, so a name that starts
//! resolving to a forbidden address between two attempts (or between a check and a connect) is
//! refused; IP literals, which the connector does not resolve, are checked before sending.
//! Redirects are not followed (a 3xx is a failed status). The timeout (or the caller's earlier
//! deadline: the endpoint's lease) bounds connect, TLS, send and the response head; at most
//! `MAX_ANSWER_BYTES` of the answer are read, within what is left.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::USER_AGENT;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::{timeout_at, Instant};

use super::target::{lookup_checked, resolve, TargetRefused, TargetUrl};

/// The most of an answer (head and body) read from a receiver.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
const USER_AGENT_VALUE: &str = "LogStitch-Webhooks/1";
const POOL_IDLE: Duration = Duration::from_secs(30);

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx status within the timeout.
    Delivered,
    /// Any other status (3xx included: redirects are not followed).
    Status,
    /// No response head within the timeout.
    Timeout,
    /// No connection, or it broke before a response head (DNS failure included).
    Connection,
    /// The target is, or resolves to, a forbidden address; nothing was sent.
    Refused,
}

/// What one attempt came to: the status when one came back, and a short reason for logs
/// (never a header or body that was sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub status: Option<u16>,
    pub outcome: AttemptOutcome,
    pub detail: String,
}

impl Attempt {
    fn failed(outcome: AttemptOutcome, detail: String) -> Attempt {
        Attempt {
            status: None,
            outcome,
            detail,
        }
    }
}

/// The webhook client of one instance; cheap to clone (the pool is shared). Its connections
/// are tasks on the tokio runtime that `post` runs on.
#[derive(Clone)]
pub struct OutboundClient {
    client: Client<HttpsConnector<HttpConnector<CheckedResolver>>, Full<Bytes>>,
    timeout: Duration,
    allow_private: bool,
}

impl OutboundClient {
    /// `timeout`: `webhooks.timeout_ms`; `allow_private`: `webhooks.allow_private_targets`.
    pub fn new(timeout: Duration, allow_private: bool) -> OutboundClient {
        let mut http = HttpConnector::new_with_resolver(CheckedResolver { allow_private });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(ring_provider())
            .expect("ring supports rustls' default protocol versions")
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .http1_max_buf_size(MAX_ANSWER_BYTES)
            .build(https);
        OutboundClient {
            client,
            timeout,
            allow_private,
        }
    }

    /// POSTs `body` with `headers` to `url` and judges the answer, within the timeout.
    pub async fn post(
        &self,
        url: &TargetUrl,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Attempt {
        self.post_until(url, headers, body, Instant::now() + self.timeout)
            .await
    }

    /// `post`, over by `deadline` (the timeout, or sooner: when the endpoint's lease ends).
    pub async fn post_until(
        &self,
        url: &TargetUrl,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        deadline: Instant,
    ) -> Attempt {
        let budget = deadline.saturating_duration_since(Instant::now());
        if url.ip_literal().is_some() {
            if let Err(refused) = resolve(url, self.allow_private).await {
                return from_refusal(&refused);
            }
        }
        let response =
            match timeout_at(deadline, self.client.request(request(url, headers, body))).await {
                Err(_) => {
                    let detail = format!("no response within {budget:?}");
                    return Attempt::failed(AttemptOutcome::Timeout, detail);
                }
                Ok(Err(error)) => return from_error(&error),
                Ok(Ok(response)) => response,
            };
        let status = response.status();
        // Read a little of whatever follows, so a short answer frees its connection for
        // reuse; an endless or stalled body is dropped (closing it) at the limit or deadline.
        let _ = timeout_at(deadline, read_some(response.into_body())).await;
        let outcome = if status.is_success() {
            AttemptOutcome::Delivered
        } else {
            AttemptOutcome::Status
        };
        Attempt {
            status: Some(status.as_u16()),
            outcome,
            detail: format!("answered {status}"),
        }
    }
}

/// What a GET brought back: its status and its whole body, no longer than asked.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub body: Bytes,
}

impl OutboundClient {
    /// GETs `url` (the same checks as a POST: forbidden addresses, no redirects, the
    /// timeout over the whole exchange, body included) and reads its body whole, refusing one
    /// longer than `max_bytes`. The error is an attempt's outcome and reason.
    pub async fn get(&self, url: &TargetUrl, max_bytes: usize) -> Result<Fetched, Attempt> {
        let deadline = Instant::now() + self.timeout;
        if url.ip_literal().is_some() {
            if let Err(refused) = resolve(url, self.allow_private).await {
                return Err(from_refusal(&refused));
            }
        }
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = url.uri().clone();
        request
            .headers_mut()
            .insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let timed_out = || {
            let detail = format!("no whole answer within {:?}", self.timeout);
            Attempt::failed(AttemptOutcome::Timeout, detail)
        };
        let response = match timeout_at(deadline, self.client.request(request)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(error)) => return Err(from_error(&error)),
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let limited = http_body_util::Limited::new(response.into_body(), max_bytes);
        match timeout_at(deadline, limited.collect()).await {
            Err(_) => Err(timed_out()),
            Ok(Err(error)) => Err(Attempt {
                status: Some(status),
                outcome: AttemptOutcome::Connection,
                detail: format!("the body could not be read whole: {error}"),
            }),
            Ok(Ok(collected)) => Ok(Fetched {
                status,
                body: collected.to_bytes(),
            }),
        }
    }
}

/// rustls on ring, named here rather than left to whichever provider is compiled in: aws-lc
/// stays out of the tree. rustls 0.23.48 deprecates ring's provider for having no post-quantum
/// key exchange; classical X25519 / P-256 is what it negotiates with receivers.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn request(
    url: &TargetUrl,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = url.uri().clone();
    let sent = request.headers_mut();
    for (name, value) in headers {
        sent.append(name, value.clone());
    }
    sent.entry(USER_AGENT)
        .or_insert(HeaderValue::from_static(USER_AGENT_VALUE));
    request
}

/// Reads up to `MAX_ANSWER_BYTES` of a body (or to its end) and drops the rest.
async fn read_some(mut body: Incoming) {
    let mut read = 0;
    while read < MAX_ANSWER_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => return,
        }
    }
}

fn from_refusal(refused: &TargetRefused) -> Attempt {
    let outcome = match refused {
        TargetRefused::Forbidden { .. } => AttemptOutcome::Refused,
        TargetRefused::Unresolved { .. } => AttemptOutcome::Connection,
    };
    Attempt::failed(outcome, refused.to_string())
}

/// A refusal from the resolver, found in the error's chain, or else a connection failure.
fn from_error(error: &hyper_util::client::legacy::Error) -> Attempt {
    let mut causes = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(cause) = next {
        if let Some(refused) = cause.downcast_ref::<TargetRefused>() {
            return from_refusal(refused);
        }
        causes.push(cause.to_string());
        next = cause.source();
    }
    Attempt::failed(AttemptOutcome::Connection, causes.join(": "))
}

/// hyper-util's resolver for the webhook connector: tokio's DNS, then every address checked
/// (`lookup_checked`), at every new connection.
#[derive(Clone)]
struct CheckedResolver {
    allow_private: bool,
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, TargetRefused>> + Send>>;

impl tower_service::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = TargetRefused;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), TargetRefused>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            // The connector sets each address's port from the URL.
            let addresses = lookup_checked(name.as_str(), 0, allow_private).await?;
            Ok(addresses.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::super::target::parse_url;
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(300);

    /// What the loopback receiver does once it has read a request.
    #[derive(Clone, Copy)]
    enum Answer {
        Canned(&'static str),
        Silent,
        EndlessBody,
    }

    struct Receiver {
        port: u16,
        connections: Arc<AtomicUsize>,
        requests: tokio::sync::mpsc::UnboundedReceiver<String>,
    }

    async fn receiver(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let (sender, requests) = tokio::sync::mpsc::unbounded_channel();
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(answer_one(stream, answer, sender.clone()));
            }
        });
        Receiver {
            port,
            connections,
            requests,
        }
    }

    async fn answer_one(
        mut stream: TcpStream,
        answer: Answer,
        requests: tokio::sync::mpsc::UnboundedSender<String>,
    ) {
        let request = read_request(&mut stream).await;
        let _ = requests.send(request);
        match answer {
            Answer::Canned(response) => {
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
            Answer::Silent => tokio::time::sleep(Duration::from_secs(30)).await,
            Answer::EndlessBody => {
                let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
                let mut sent = stream.write_all(head.as_bytes()).await;
                while sent.is_ok() {
                    sent = stream.write_all(chunk.as_bytes()).await;
                }
            }
        }
    }

    /// The request head and its Content-Length body, as text.
    async fn read_request(stream: &mut TcpStream) -> String {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    return text;
                }
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&seen).into_owned(),
                Ok(read) => seen.extend_from_slice(&buffer[..read]),
            }
        }
    }

    fn client(allow_private: bool) -> OutboundClient {
        OutboundClient::new(TIMEOUT, allow_private)
    }

    async fn post_to(client: &OutboundClient, raw: &str) -> Attempt {
        let url = parse_url(raw, true).unwrap();
        let headers = [(
            HeaderName::from_static("webhook-id"),
            HeaderValue::from_static("delivery-1"),
        )];
        client
            .post(
                &url,
                &headers,
                Bytes::from_static(b"{\"type\":\"webhook.test\"}"),
            )
            .await
    }

    #[tokio::test]
    async fn a_2xx_is_delivered_with_the_headers_and_body_sent() {
        let mut receiver = receiver(Answer::Canned(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ))
        .await;
        for host in ["127.0.0.1", "localhost"] {
            let attempt = post_to(
                &client(true),
                &format!("http://{host}:{}/hook", receiver.port),
            )
            .await;
            assert_eq!(
                (attempt.outcome, attempt.status),
                (AttemptOutcome::Delivered, Some(200))
            );
            let request = receiver.requests.recv().await.unwrap();
            assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
            assert!(request.contains("webhook-id: delivery-1\r\n"), "{request}");
            assert!(
                request.ends_with("\r\n\r\n{\"type\":\"webhook.test\"}"),
                "{request}"
            );
        }
    }

    #[tokio::test]
    async fn other_statuses_fail_and_redirects_are_not_followed() {
        let error = receiver(Answer::Canned(
            "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
        ))
        .await;
        let attempt = post_to(&client(true), &format!("http://127.0.0.1:{}/", error.port)).await;
        assert_eq!(
            (attempt.outcome, attempt.status),
            (AttemptOutcome::Status, Some(500))
        );

        let target = receiver(Answer::Canned(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ))
        .await;
        let redirect = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{}/\r\nContent-Length: 0\r\n\r\n",
            target.port
        );
        let redirecting = receiver(Answer::Canned(redirect.leak())).await;
        let attempt = post_to(
            &client(true),
            &format!("http://127.0.0.1:{}/", redirecting.port),
        )
        .await;
        assert_eq!(
            (attempt.outcome, attempt.status),
            (AttemptOutcome::Status, Some(302))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(target.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_times_out() {
        let silent = receiver(Answer::Silent).await;
        let started = Instant::now();
        let attempt = post_to(&client(true), &format!("http://127.0.0.1:{}/", silent.port)).await;
        assert_eq!(
            (attempt.outcome, attempt.status),
            (AttemptOutcome::Timeout, None)
        );
        let took = started.elapsed();
        assert!(took >= TIMEOUT && took < TIMEOUT * 3, "{took:?}");
    }

    #[tokio::test]
    async fn a_2xx_is_delivered_whatever_its_body_does() {
        let endless = receiver(Answer::EndlessBody).await;
        let stalled = receiver(Answer::Canned(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstarted",
        ))
        .await;
        for port in [endless.port, stalled.port] {
            let started = Instant::now();
            let attempt = post_to(&client(true), &format!("http://127.0.0.1:{port}/")).await;
            assert_eq!(
                (attempt.outcome, attempt.status),
                (AttemptOutcome::Delivered, Some(200))
            );
            assert!(started.elapsed() < TIMEOUT * 3, "{:?}", started.elapsed());
        }
    }

    #[tokio::test]
    async fn no_listener_is_a_connection_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let attempt = post_to(&client(true), &format!("http://127.0.0.1:{port}/")).await;
        assert_eq!(
            (attempt.outcome, attempt.status),
            (AttemptOutcome::Connection, None)
        );
        // TLS to a plain HTTP server fails in the handshake: `https://` goes through rustls.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = plain.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = plain.accept().await.unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let attempt = post_to(&client(true), &format!("https://127.0.0.1:{port}/")).await;
        assert_eq!(
            (attempt.outcome, attempt.status),
            (AttemptOutcome::Connection, None)
        );
        assert!(
            attempt.detail.contains("tls")
                || attempt.detail.contains("TLS")
                || attempt.detail.contains("corrupt"),
            "{}",
            attempt.detail
        );
    }

    #[tokio::test]
    async fn private_targets_are_refused_without_connecting() {
        let receiver = receiver(Answer::Canned(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ))
        .await;
        let v6 = TcpListener::bind("[::1]:0").await.ok();
        let v6_port = v6
            .as_ref()
            .map_or(receiver.port, |l| l.local_addr().unwrap().port());
        for raw in [
            format!("http://127.0.0.1:{}/", receiver.port),
            format!("http://[::1]:{v6_port}/"),
            format!("http://[::ffff:127.0.0.1]:{}/", receiver.port),
            format!("http://localhost:{}/", receiver.port),
        ] {
            let attempt = post_to(&client(false), &raw).await;
            assert_eq!(
                (attempt.outcome, attempt.status),
                (AttemptOutcome::Refused, None),
                "{raw}"
            );
            assert!(
                attempt.detail.contains("private or reserved"),
                "{}",
                attempt.detail
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(receiver.connections.load(Ordering::SeqCst), 0);
        if let Some(v6) = v6 {
            let accepted = tokio::time::timeout(Duration::from_millis(50), v6.accept()).await;
            assert!(accepted.is_err(), "[::1] saw a connection");
        }
    }
}
